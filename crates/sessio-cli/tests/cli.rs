//! Every command of `sessio` against SQLite, PostgreSQL and Redis: sessions made by real
//! HTTP requests through the layer are listed, counted and revoked by the binary, and the next
//! request with a revoked cookie is anonymous.

use std::process::Command;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use sessio::Sessions;
use sessio_testkit::Agent;
use sessio_testkit::http::{TestServer, app};
use sessio_testkit::servers::unique_name;

/// A store the app uses, and the URL the CLI reaches the same sessions by.
struct Target {
    sessions: Sessions,
    url: String,
}

async fn sqlite() -> Option<Target> {
    let dir = std::env::temp_dir().join(format!("sessio-cli-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{}.db", unique_name("cli")));
    let store = sessio_sqlite::SqliteStore::open(&path)
        .await
        .expect("sqlite");
    Some(Target {
        sessions: Sessions::builder(store).build().expect("config"),
        url: format!("sqlite://{}", path.display()),
    })
}

async fn postgres() -> Option<Target> {
    let Ok(url) = std::env::var("SESSIO_TEST_POSTGRES_URL") else {
        return sessio_testkit::server_missing("PostgreSQL", "SESSIO_TEST_POSTGRES_URL is not set");
    };
    let schema = unique_name("cli");
    let store = sessio_postgres::PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .expect("postgres");
    Some(Target {
        sessions: Sessions::builder(store).build().expect("config"),
        url: format!("{url}?schema={schema}"),
    })
}

async fn redis() -> Option<Target> {
    let Ok(url) = std::env::var("SESSIO_TEST_REDIS_URL") else {
        return sessio_testkit::server_missing("Redis", "SESSIO_TEST_REDIS_URL is not set");
    };
    let prefix = unique_name("cli");
    let store = sessio_redis::RedisStore::builder(&url)
        .prefix(&prefix)
        .connect()
        .await
        .expect("redis");
    Some(Target {
        sessions: Sessions::builder(store).build().expect("config"),
        url: format!("{url}?prefix={prefix}"),
    })
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.stdout))
    }
}

async fn sessio(url: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sessio"));
    command.arg("--store").arg(url).args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run sessio");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn logged_in(server: &TestServer, sessions: &Sessions, user: &str) -> Agent {
    let mut agent = Agent::new(server.client(), sessions.cookie_name());
    let login = agent
        .send(Method::POST, &format!("/login/{user}"), None)
        .await;
    assert_eq!(login.status, StatusCode::NO_CONTENT);
    agent
}

async fn is_logged_in(agent: &mut Agent) -> bool {
    agent.send(Method::GET, "/devices", None).await.status == StatusCode::OK
}

async fn every_command_works(target: Target) {
    let Target { sessions, url } = target;
    let server = TestServer::start(app(&sessions)).await;
    let mut laptop = logged_in(&server, &sessions, "alice").await;
    let mut phone = logged_in(&server, &sessions, "alice").await;
    let mut bob = logged_in(&server, &sessions, "bob").await;

    let migrate = sessio(&url, &["migrate"]).await;
    assert_eq!(migrate.code, 0, "{}", migrate.stderr);
    assert!(migrate.stdout.contains("version"), "{}", migrate.stdout);

    let listed = sessio(&url, &["sessions", "list", "--user", "alice", "--json"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let listed = listed.json();
    let listed = listed.as_array().expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["user_agent"], json!("sessio-testkit"));
    assert_eq!(listed[0]["ip"], json!("127.0.0.1"));
    let cookies =
        [laptop.cookie(), phone.cookie()].map(|cookie| cookie.expect("cookie").to_owned());
    for row in listed {
        let text = row.to_string();
        assert!(
            cookies.iter().all(|cookie| !text.contains(cookie.as_str())),
            "no cookie value is printed"
        );
    }
    let table = sessio(&url, &["sessions", "list", "--user", "alice"]).await;
    assert_eq!(table.code, 0);
    assert!(table.stdout.starts_with("HANDLE"), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), 3);

    let phone_handle = phone.send(Method::GET, "/devices", None).await.json();
    let phone_handle = phone_handle
        .as_array()
        .and_then(|devices| devices.iter().find(|d| d["current"] == json!(true)))
        .and_then(|device| device["handle"].as_str())
        .expect("phone handle")
        .to_owned();
    let revoked = sessio(&url, &["sessions", "revoke", "--handle", &phone_handle]).await;
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert!(
        !is_logged_in(&mut phone).await,
        "the revoked cookie is anonymous"
    );
    assert!(is_logged_in(&mut laptop).await);
    let again = sessio(&url, &["sessions", "revoke", "--handle", &phone_handle]).await;
    assert_eq!(again.code, 1, "an unknown handle matches nothing");
    assert!(again.stderr.contains("no live session"), "{}", again.stderr);

    let stats = sessio(&url, &["stats", "--json"]).await;
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let stats = stats.json();
    assert_eq!(stats["live_sessions"], json!(2));
    assert_eq!(
        stats["top_users"][0],
        json!({"user": "alice", "sessions": 1})
    );
    let text = sessio(&url, &["stats"]).await;
    assert!(text.stdout.contains("live sessions: 2"), "{}", text.stdout);

    let purge = sessio(&url, &["purge"]).await;
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    assert!(purge.stdout.starts_with("purged "), "{}", purge.stdout);

    // A request in flight for the session cannot save it back after the CLI revoked it (G2).
    let cookie = laptop.cookie_header();
    let client = server.client();
    let slow = tokio::spawn(async move {
        client
            .send(
                Method::PUT,
                "/data/late?delay_ms=700",
                cookie.as_deref(),
                Some(json!(1)),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let everyone = sessio(&url, &["sessions", "revoke", "--user", "alice"]).await;
    assert_eq!(everyone.code, 0, "{}", everyone.stderr);
    assert!(
        everyone.stdout.contains("revoked 1 session"),
        "{}",
        everyone.stdout
    );
    assert_eq!(
        slow.await.expect("slow request").status,
        StatusCode::CONFLICT
    );
    assert!(!is_logged_in(&mut laptop).await);
    let none = sessio(&url, &["sessions", "list", "--user", "alice"]).await;
    assert_eq!(none.code, 1, "nothing to list");
    let nothing = sessio(&url, &["sessions", "revoke", "--user", "alice"]).await;
    assert_eq!(nothing.code, 1);

    let mut second = logged_in(&server, &sessions, "alice").await;
    let mut third = logged_in(&server, &sessions, "alice").await;
    let keep = third.send(Method::GET, "/devices", None).await.json();
    let keep = keep
        .as_array()
        .and_then(|devices| devices.iter().find(|d| d["current"] == json!(true)))
        .and_then(|device| device["handle"].as_str())
        .expect("handle")
        .to_owned();
    let except = sessio(
        &url,
        &["sessions", "revoke", "--user", "alice", "--except", &keep],
    )
    .await;
    assert_eq!(except.code, 0, "{}", except.stderr);
    assert!(!is_logged_in(&mut second).await);
    assert!(is_logged_in(&mut third).await);

    let refused = sessio(&url, &["sessions", "revoke", "--all"]).await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert!(is_logged_in(&mut bob).await);
    let all = sessio(&url, &["sessions", "revoke", "--all", "--yes"]).await;
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert!(!is_logged_in(&mut bob).await);
    assert!(!is_logged_in(&mut third).await);
    let bad_handle = sessio(&url, &["sessions", "revoke", "--handle", "not-a-handle"]).await;
    assert_eq!(bad_handle.code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_on_sqlite() {
    let Some(target) = sqlite().await else { return };
    every_command_works(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_on_postgres() {
    let Some(target) = postgres().await else {
        return;
    };
    every_command_works(target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_on_redis() {
    let Some(target) = redis().await else { return };
    every_command_works(target).await;
}

#[tokio::test]
async fn bad_urls_and_unreachable_servers_exit_2_with_one_line() {
    for (url, expected) in [
        ("mysql://x", "unknown store URL"),
        ("memory", "inside one app process"),
        (
            "postgres://postgres@127.0.0.1:1/nothing",
            "cannot open the store",
        ),
        ("redis://127.0.0.1:1/", "cannot open the store"),
        (
            "sqlite:///nonexistent/dir/sessions.db",
            "cannot open the store",
        ),
        ("postgres://h/db?color=blue", "unknown URL option"),
    ] {
        let output = sessio(url, &["stats"]).await;
        assert_eq!(output.code, 2, "{url}: {}", output.stderr);
        assert!(output.stderr.contains(expected), "{url}: {}", output.stderr);
        assert_eq!(
            output.stderr.trim_end().lines().count(),
            1,
            "one line: {}",
            output.stderr
        );
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_sessio"))
        .args(["stats"])
        .env_remove("SESSIO_STORE")
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
}
