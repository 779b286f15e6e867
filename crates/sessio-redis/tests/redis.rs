//! What the Redis store must show beyond the conformance suite: spread over a cluster, an
//! outage, the keyspace's contents, self-pruning indexes, directory raises, format versions.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use sessio::{
    Clock, LoginInfo, Patch, SessionStore, Sessions, StoreError, SystemClock, Touch, WriteOutcome,
};
use sessio_redis::RedisStore;
use sessio_testkit::Browser;
use sessio_testkit::cases::{digest_for, record};
use sessio_testkit::servers::{RedisServer, unique_name};

fn standalone_url() -> Option<String> {
    match std::env::var("SESSIO_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) => sessio_testkit::server_missing("Redis", "SESSIO_TEST_REDIS_URL is not set"),
    }
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn keys(connection: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut iter: redis::AsyncIter<String> = connection.scan_match(pattern).await.expect("scan");
    while let Some(key) = iter.next_item().await {
        found.push(key.expect("key"));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_1000_users_land_on_every_cluster_node() {
    let Ok(nodes) = std::env::var("SESSIO_TEST_REDIS_CLUSTER") else {
        let _: Option<()> =
            sessio_testkit::server_missing("Redis Cluster", "SESSIO_TEST_REDIS_CLUSTER is not set");
        return;
    };
    let nodes: Vec<&str> = nodes.split(',').collect();
    let prefix = unique_name("spread");
    let store = RedisStore::cluster_builder(&nodes)
        .prefix(&prefix)
        .connect()
        .await
        .expect("connect");
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    for user in 0..1000 {
        let mut browser = Browser::new(&sessions);
        let user = format!("user-{user}");
        browser
            .request(|session| async move {
                session
                    .login(&user, LoginInfo::default())
                    .await
                    .expect("login");
            })
            .await;
    }
    assert_eq!(sessions.count().await.expect("count"), 1000);
    let mut per_node = Vec::new();
    for node in &nodes {
        let mut connection = raw(node).await;
        per_node.push(
            keys(&mut connection, &format!("{prefix}:*:s:*"))
                .await
                .len(),
        );
    }
    assert_eq!(per_node.iter().sum::<usize>(), 1000, "{per_node:?}");
    assert!(
        per_node.iter().all(|count| *count > 100),
        "sessions must spread over all three nodes: {per_node:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_gives_503_and_service_resumes_after_a_restart() {
    let mut server = match RedisServer::start() {
        Ok(server) => server,
        Err(error) => {
            let _: Option<()> = sessio_testkit::server_missing("a private Redis", error);
            return;
        }
    };
    let store = RedisStore::builder(&server.url())
        .without_background_purge()
        .connect()
        .await
        .expect("connect");
    sessio_testkit::outage::outage_through_the_layer(store, &mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyspace_holds_no_cookie_value() {
    let Some(url) = standalone_url() else { return };
    let prefix = unique_name("dump");
    let store = RedisStore::builder(&url)
        .prefix(&prefix)
        .connect()
        .await
        .expect("connect");
    let sessions = Sessions::builder(store).build().expect("config");
    let cookies = sessio_testkit::cases::cookies_of_two_logins(&sessions).await;
    let mut connection = raw(&url).await;
    let mut dump = String::new();
    for key in keys(&mut connection, &format!("{prefix}:*")).await {
        dump.push_str(&key);
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("type");
        match kind.as_str() {
            "hash" => {
                let fields: HashMap<String, String> =
                    connection.hgetall(&key).await.expect("hgetall");
                dump.push_str(&format!("{fields:?}"));
            }
            "zset" => {
                let members: Vec<(String, f64)> = connection
                    .zrange_withscores(&key, 0, -1)
                    .await
                    .expect("zrange");
                dump.push_str(&format!("{members:?}"));
            }
            "string" => {
                let value: String = connection.get(&key).await.expect("get");
                dump.push_str(&value);
            }
            other => panic!("unexpected key type {other} for {key}"),
        }
    }
    assert!(dump.contains("alice"), "the dump has the sessions");
    for cookie in &cookies {
        assert!(
            !dump.contains(cookie.as_str()),
            "a cookie value is in the keyspace"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_indexes_drop_expired_members_whenever_they_are_read() {
    let Some(url) = standalone_url() else { return };
    let prefix = unique_name("prune");
    let store = RedisStore::builder(&url)
        .prefix(&prefix)
        .without_background_purge()
        .connect()
        .await
        .expect("connect");
    let now = SystemClock.now();
    // Five short sessions and one long one for alice, all in one route (one index key).
    let long = record(now, Duration::from_secs(3600), Some("alice"));
    let long_digest = digest_for(&store, &long.handle);
    assert_eq!(
        store
            .create(&long_digest, &long, None)
            .await
            .expect("create"),
        WriteOutcome::Done
    );
    let route = long_digest.route(store.route_bits());
    for _ in 0..5 {
        let mut short = record(now, Duration::from_millis(300), Some("alice"));
        short.handle =
            sessio::SessionHandle::generate_routed(route, store.route_bits()).expect("random");
        let digest = digest_for(&store, &short.handle);
        assert_eq!(
            store.create(&digest, &short, None).await.expect("create"),
            WriteOutcome::Done
        );
    }
    let index = format!("{prefix}:{{r{route:02x}}}:u:alice");
    let mut connection = raw(&url).await;
    let before: u64 = connection.zcard(&index).await.expect("zcard");
    assert_eq!(before, 6);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let listed = store
        .list_user("alice", SystemClock.now())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    let after: u64 = connection.zcard(&index).await.expect("zcard");
    assert_eq!(after, 1, "listing pruned the expired members");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_past_the_directory_deadline_raises_it() {
    let Some(url) = standalone_url() else { return };
    let store = RedisStore::builder(&url)
        .prefix(unique_name("raise"))
        .without_background_purge()
        .connect()
        .await
        .expect("connect");
    let now = SystemClock.now();
    let short = record(now, Duration::from_secs(60), Some("alice"));
    let digest = digest_for(&store, &short.handle);
    assert_eq!(
        store.create(&digest, &short, None).await.expect("create"),
        WriteOutcome::Done
    );
    // Extend the session 30 days: far past the week its directory entry covered.
    let month = now.saturating_add(Duration::from_secs(30 * 24 * 3600));
    let patch = Patch {
        touch: Some(Touch {
            last_seen_at: now,
            expires_at: month,
        }),
        ..Patch::default()
    };
    assert_eq!(
        store.apply(&digest, &patch, now).await.expect("apply"),
        WriteOutcome::Done
    );
    let almost = month.saturating_since(sessio::Timestamp::EPOCH) - Duration::from_secs(1);
    let later = sessio::Timestamp::EPOCH.saturating_add(almost);
    let listed = store.list_user("alice", later).await.expect("list");
    assert_eq!(
        listed.len(),
        1,
        "the directory still lists the session a month later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_an_unknown_format_are_refused() {
    let Some(url) = standalone_url() else { return };
    let store = RedisStore::builder(&url)
        .prefix(unique_name("format"))
        .connect()
        .await
        .expect("connect");
    let now = SystemClock.now();
    let fresh = record(now, Duration::from_secs(60), None);
    let digest = digest_for(&store, &fresh.handle);
    assert_eq!(
        store.create(&digest, &fresh, None).await.expect("create"),
        WriteOutcome::Done
    );
    let mut connection = raw(&url).await;
    let _: () = connection
        .hset(store.record_key(&digest), "v", "2")
        .await
        .expect("hset");
    let error = store.load(&digest, now).await.expect_err("unknown format");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    assert!(
        error.to_string().contains("upgrade sessio-redis"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_key_layout_is_refused() {
    let Some(url) = standalone_url() else { return };
    let prefix = unique_name("layout");
    RedisStore::builder(&url)
        .prefix(&prefix)
        .connect()
        .await
        .expect("first use records the layout");
    RedisStore::builder(&url)
        .prefix(&prefix)
        .connect()
        .await
        .expect("idempotent");
    let mut connection = raw(&url).await;
    let _: () = connection
        .set(format!("{prefix}:layout"), 99)
        .await
        .expect("set");
    let error = RedisStore::builder(&url)
        .prefix(&prefix)
        .connect()
        .await
        .expect_err("a newer layout is refused");
    assert!(
        error.to_string().contains("upgrade sessio-redis"),
        "{error}"
    );
}
