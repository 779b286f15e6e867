//! What the PostgreSQL store must show beyond the conformance suite: an outage, the table's
//! contents, schema versions, and a large purge.

use std::time::Duration;

use sessio::{Clock, Patch, SessionStore, Sessions, SystemClock, WriteOutcome};
use sessio_postgres::PostgresStore;
use sessio_testkit::cases::{fresh_digest, record};
use sessio_testkit::servers::{PostgresServer, unique_name};
use tokio_postgres::NoTls;

fn shared_url() -> Option<String> {
    match std::env::var("SESSIO_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            sessio_testkit::server_missing("PostgreSQL", "SESSIO_TEST_POSTGRES_URL is not set")
        }
    }
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_gives_503_and_service_resumes_after_a_restart() {
    let mut server = match PostgresServer::start() {
        Ok(server) => server,
        Err(error) => {
            let _: Option<()> = sessio_testkit::server_missing("a private PostgreSQL", error);
            return;
        }
    };
    let store = PostgresStore::builder(&server.url())
        .pool_size(4)
        .without_background_purge()
        .connect()
        .await
        .expect("connect");
    sessio_testkit::outage::outage_through_the_layer(store, &mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_holds_no_cookie_value() {
    let Some(url) = shared_url() else { return };
    let schema = unique_name("dump");
    let store = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .expect("connect");
    let sessions = Sessions::builder(store).build().expect("config");
    let cookies = sessio_testkit::cases::cookies_of_two_logins(&sessions).await;
    let client = sql(&url).await;
    let rows = client
        .query(
            &format!("SELECT t::text FROM \"{schema}\".sessio_sessions t"),
            &[],
        )
        .await
        .expect("dump");
    assert!(rows.len() >= 4, "records and moved markers");
    for row in rows {
        let text: String = row.get(0);
        for cookie in &cookies {
            assert!(
                !text.contains(cookie.as_str()),
                "a cookie value is in the table: {text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_refuse_newer_schemas() {
    let Some(url) = shared_url() else { return };
    let schema = unique_name("schema");
    let first = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .expect("connect");
    let version = first.schema_version();
    let (a, b) = tokio::join!(
        PostgresStore::builder(&url).schema(&schema).connect(),
        PostgresStore::builder(&url).schema(&schema).connect()
    );
    assert_eq!(a.expect("concurrent connect").schema_version(), version);
    assert_eq!(b.expect("concurrent connect").schema_version(), version);
    let client = sql(&url).await;
    client
        .execute(
            &format!("UPDATE \"{schema}\".sessio_schema SET version = version + 1"),
            &[],
        )
        .await
        .expect("bump");
    let error = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .expect_err("a newer schema is refused");
    assert!(
        error.to_string().contains("upgrade sessio-postgres"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_purge_runs_in_batches_between_live_writes() {
    let Some(url) = shared_url() else { return };
    let schema = unique_name("purge");
    let store = PostgresStore::builder(&url)
        .schema(&schema)
        .without_background_purge()
        .connect()
        .await
        .expect("connect");
    let now = SystemClock.now();
    let client = sql(&url).await;
    client
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".sessio_sessions
                    (digest, moved, handle, user_id, created_at, last_seen_at, expires_at, body)
                 SELECT sha256(i::text::bytea), false, substr(sha256(i::text::bytea), 1, 16),
                        'user-' || (i % 1000), $1::bigint - 10000, $1::bigint - 10000, $1::bigint - 1,
                        '{{\"v\":1,\"data\":{{}}}}'::jsonb
                 FROM generate_series(1, 100000) AS i"
            ),
            &[&(now.as_millis() as i64)],
        )
        .await
        .expect("bulk insert");
    let live = fresh_digest();
    let live_record = record(now, Duration::from_secs(3600), Some("alice"));
    assert_eq!(
        store
            .create(&live, &live_record, None)
            .await
            .expect("create"),
        WriteOutcome::Done
    );

    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let purge = tokio::spawn(async move { sessions.purge_expired().await.expect("purge") });
    tokio::task::yield_now().await;
    let patch = Patch {
        changes: vec![(
            "n".into(),
            Some(serde_json::value::to_raw_value(&1).expect("raw")),
        )],
        ..Patch::default()
    };
    assert_eq!(
        store
            .apply(&live, &patch, SystemClock.now())
            .await
            .expect("apply"),
        WriteOutcome::Done
    );
    assert!(
        !purge.is_finished(),
        "the live write did not wait for the whole purge"
    );
    assert_eq!(purge.await.expect("purge task"), 100_000);
    assert_eq!(store.count(SystemClock.now()).await.expect("count"), 1);
    assert_eq!(store.user_index_len("user-1").await.expect("index"), 0);
}
