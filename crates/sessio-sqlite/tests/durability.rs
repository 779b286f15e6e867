//! What only a file-backed store must show: restarts, kill -9, batched purges, the file's
//! contents, schema versions.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sessio::{
    Clock, IdDigest, LoginInfo, Patch, SessionStore, Sessions, SystemClock, Timestamp, WriteOutcome,
};
use sessio_sqlite::SqliteStore;
use sessio_testkit::Browser;
use sessio_testkit::cases::{fresh_digest, record};

const CHILD_ENV: &str = "SESSIO_SQLITE_KILL_CHILD_DB";

fn fresh_path(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("sessio-sqlite-durability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!(
        "{name}-{}.db",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn now() -> Timestamp {
    SystemClock.now()
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let path = fresh_path("restart");
    let store = SqliteStore::open(&path).await.expect("open");
    let sessions = Sessions::builder(store).build().expect("config");
    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move {
            session
                .login("alice", LoginInfo::default())
                .await
                .expect("login");
            session.insert("cart", &[1, 2, 3]).await.expect("insert");
        })
        .await;
    let cookie = browser.cookie().map(str::to_owned);
    drop(browser);
    drop(sessions);

    let reopened = SqliteStore::open(&path).await.expect("reopen");
    let sessions = Sessions::builder(reopened).build().expect("config");
    let browser = Browser::with_cookie(&sessions, cookie);
    let session = browser.begin();
    assert_eq!(session.user_id().await.expect("user"), Some("alice".into()));
    assert_eq!(
        session.get::<Vec<u8>>("cart").await.expect("get"),
        Some(vec![1, 2, 3])
    );
}

/// The child half of [`acknowledged_writes_survive_kill_9`]: writes as fast as it can and
/// prints each write once the store acknowledged it.
async fn write_until_killed(path: PathBuf) {
    let store = SqliteStore::open(&path).await.expect("child open");
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let digest = fresh_digest();
                let now = now();
                let fresh = record(now, Duration::from_secs(3600), None);
                let created = store.create(&digest, &fresh, None).await;
                assert_eq!(created.expect("create"), WriteOutcome::Done);
                for n in 0u64.. {
                    let patch = Patch {
                        changes: vec![(
                            "n".into(),
                            Some(serde_json::value::to_raw_value(&n).expect("raw")),
                        )],
                        ..Patch::default()
                    };
                    let outcome = store.apply(&digest, &patch, now).await.expect("apply");
                    assert_eq!(outcome, WriteOutcome::Done);
                    println!("ack {writer} {} {n}", digest.to_hex());
                }
            })
        })
        .collect();
    for writer in writers {
        let _ = writer.await;
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        write_until_killed(PathBuf::from(path)).await;
        return;
    }
    let path = fresh_path("kill");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "acknowledged_writes_survive_kill_9",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acknowledged: std::collections::HashMap<String, u64> = Default::default();
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = 0;
    while let Some(Ok(line)) = lines.next() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["ack", _writer, digest, n] = parts.as_slice() {
            acknowledged.insert((*digest).to_owned(), n.parse().expect("number"));
            acks += 1;
            if acks == 3_000 {
                // SIGKILL, mid-write: no destructor, no flush, no checkpoint.
                child.kill().expect("kill the writer");
                break;
            }
        }
    }
    let _ = child.wait();
    assert_eq!(
        acks, 3_000,
        "the writer acknowledged writes before it was killed"
    );

    let reopened = SqliteStore::open(&path).await.expect("reopen after kill");
    for (digest, n) in &acknowledged {
        let digest = IdDigest::from_hex(digest).expect("digest");
        let record = reopened
            .load(&digest, now())
            .await
            .expect("load")
            .expect("record survived");
        let data: serde_json::Value = serde_json::from_str(record.data.as_json()).expect("json");
        let stored = data["n"].as_u64().expect("n");
        assert!(
            stored >= *n,
            "acknowledged n={n} but the file holds n={stored}"
        );
    }
}

#[tokio::test]
async fn a_large_purge_runs_in_batches_between_live_writes() {
    let path = fresh_path("purge");
    let store = SqliteStore::builder(&path)
        .without_background_purge()
        .open()
        .await
        .expect("open");
    let start = now();
    // 100,000 expired rows, written straight into the file in one transaction.
    {
        let mut connection = rusqlite::Connection::open(&path).expect("direct connection");
        let transaction = connection.transaction().expect("transaction");
        {
            let mut insert = transaction
                .prepare(
                    "INSERT INTO sessio_sessions (digest, moved, handle, user_id, created_at, last_seen_at, expires_at, body)
                     VALUES (?1, 0, ?2, ?3, ?4, ?4, ?5, '{\"v\":1,\"data\":{}}')",
                )
                .expect("prepare");
            for i in 0..100_000u64 {
                let digest = fresh_digest();
                let user = format!("user-{}", i % 1000);
                insert
                    .execute(rusqlite::params![
                        digest.as_bytes().as_slice(),
                        sessio::SessionHandle::generate()
                            .expect("random")
                            .as_bytes()
                            .as_slice(),
                        user,
                        (start.as_millis() - 10_000) as i64,
                        (start.as_millis() - 1) as i64
                    ])
                    .expect("insert");
            }
        }
        transaction.commit().expect("commit");
    }
    let live = fresh_digest();
    let live_record = record(start, Duration::from_secs(3600), Some("alice"));
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
    // A live write queued while the purge runs completes before the purge does.
    let patch = Patch {
        changes: vec![(
            "n".into(),
            Some(serde_json::value::to_raw_value(&1).expect("raw")),
        )],
        ..Patch::default()
    };
    assert_eq!(
        store.apply(&live, &patch, now()).await.expect("apply"),
        WriteOutcome::Done
    );
    assert!(
        !purge.is_finished(),
        "the live write did not wait for the whole purge"
    );
    assert_eq!(purge.await.expect("purge task"), 100_000);
    assert_eq!(store.count(now()).await.expect("count"), 1);
    assert_eq!(store.user_index_len("user-1").await.expect("index"), 0);
    assert!(store.load(&live, now()).await.expect("load").is_some());
}

#[tokio::test]
async fn the_file_holds_no_cookie_value() {
    let path = fresh_path("dump");
    let store = SqliteStore::open(&path).await.expect("open");
    let sessions = Sessions::builder(store).build().expect("config");
    let cookies = sessio_testkit::cases::cookies_of_two_logins(&sessions).await;
    let mut dump = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(bytes) = std::fs::read(&file) {
            dump.extend(bytes);
        }
    }
    let connection = rusqlite::Connection::open(&path).expect("direct connection");
    let mut rows = connection
        .prepare("SELECT quote(digest), quote(handle), quote(user_id), body FROM sessio_sessions")
        .expect("prepare");
    let text: Vec<String> = rows
        .query_map([], |row| {
            Ok(format!(
                "{} {} {} {}",
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(text.len() >= 2);
    let dump_text = String::from_utf8_lossy(&dump);
    for cookie in &cookies {
        assert!(
            !dump_text.contains(cookie.as_str()),
            "a cookie value is in the database file"
        );
        assert!(
            text.iter().all(|row| !row.contains(cookie.as_str())),
            "a cookie value is in a row"
        );
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_refuse_newer_schemas() {
    let path = fresh_path("schema");
    let store = SqliteStore::open(&path).await.expect("open");
    let version = store.schema_version();
    drop(store);
    let again = SqliteStore::open(&path)
        .await
        .expect("reopen runs no migration twice");
    assert_eq!(again.schema_version(), version);
    drop(again);
    let connection = rusqlite::Connection::open(&path).expect("direct connection");
    connection
        .execute("UPDATE sessio_schema SET version = version + 1", [])
        .expect("bump version");
    drop(connection);
    let error = SqliteStore::open(&path)
        .await
        .expect_err("a newer schema is refused");
    assert!(
        error.to_string().contains("upgrade sessio-sqlite"),
        "{error}"
    );
}
