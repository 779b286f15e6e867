//! Every route of the demo, over HTTP against a real listening server, for every store the
//! test command starts: memory, SQLite, Redis and PostgreSQL.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sessio::Sessions;
use sessio_testkit::Agent;
use sessio_testkit::http::TestServer;
use sessio_testkit::servers::unique_name;

fn configure<S: sessio::SessionStore>(store: S) -> Sessions {
    Sessions::builder(store)
        .idle_timeout(Duration::from_secs(1800))
        .absolute_lifetime(Duration::from_secs(12 * 3600))
        .build()
        .expect("config")
}

async fn memory() -> Option<Sessions> {
    Some(configure(sessio::MemoryStore::new()))
}

async fn sqlite() -> Option<Sessions> {
    let dir = std::env::temp_dir().join(format!("sessio-demo-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{}.db", unique_name("demo")));
    let store = sessio_sqlite::SqliteStore::open(path)
        .await
        .expect("sqlite");
    Some(configure(store))
}

async fn redis() -> Option<Sessions> {
    let Ok(url) = std::env::var("SESSIO_TEST_REDIS_URL") else {
        return sessio_testkit::server_missing("Redis", "SESSIO_TEST_REDIS_URL is not set");
    };
    let store = sessio_redis::RedisStore::builder(&url)
        .prefix(unique_name("demo"))
        .connect()
        .await
        .expect("redis");
    Some(configure(store))
}

async fn postgres() -> Option<Sessions> {
    let Ok(url) = std::env::var("SESSIO_TEST_POSTGRES_URL") else {
        return sessio_testkit::server_missing("PostgreSQL", "SESSIO_TEST_POSTGRES_URL is not set");
    };
    let store = sessio_postgres::PostgresStore::builder(&url)
        .schema(unique_name("demo"))
        .pool_size(4)
        .connect()
        .await
        .expect("postgres");
    Some(configure(store))
}

struct Demo {
    server: TestServer,
    sessions: Sessions,
}

impl Demo {
    async fn start(sessions: Sessions) -> Self {
        let users = "alice:wonderland,bob:builder".parse().expect("users");
        let server = TestServer::start(sessio_demo::app(&sessions, users)).await;
        Self { server, sessions }
    }

    fn agent(&self) -> Agent {
        Agent::new(self.server.client(), self.sessions.cookie_name())
    }

    fn address(&self) -> SocketAddr {
        self.server.addr
    }

    async fn logged_in(&self, user: &str) -> Agent {
        let mut agent = self.agent();
        let password = if user == "alice" {
            "wonderland"
        } else {
            "builder"
        };
        let response = agent
            .send(
                Method::POST,
                "/api/login",
                Some(json!({"username": user, "password": password})),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        agent
    }
}

fn is_rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| text.len() >= 20 && text.as_bytes()[10] == b'T' && text.ends_with('Z'))
}

/// Reads the CSRF token out of the logged-in page.
fn page_token(html: &str) -> String {
    let marker = "name=csrf value=\"";
    let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
    let end = html[start..].find('"').expect("end of token") + start;
    html[start..end].to_owned()
}

async fn healthz_touches_no_session(demo: Demo) {
    let mut agent = demo.logged_in("alice").await;
    // Cookie-only sessions cannot be counted: then only the headers show it.
    let before = demo.sessions.count().await.ok();
    let response = agent.send(Method::GET, "/healthz", None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.set_cookies().is_empty());
    assert_eq!(response.header("vary"), None);
    let anonymous = demo
        .server
        .client()
        .send(Method::GET, "/healthz", None, None)
        .await;
    assert!(anonymous.set_cookies().is_empty());
    assert_eq!(demo.sessions.count().await.ok(), before);
}

async fn login_me_and_logout(demo: Demo) {
    let mut agent = demo.agent();
    let wrong = agent
        .send(
            Method::POST,
            "/api/login",
            Some(json!({"username": "alice", "password": "nope"})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.json()["error"].is_string());
    assert_eq!(
        agent.send(Method::GET, "/api/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    agent
        .send(Method::PUT, "/api/data/cart", Some(json!([1])))
        .await;
    let before_login = agent.cookie().map(str::to_owned);
    let login = agent
        .send(
            Method::POST,
            "/api/login",
            Some(json!({"username": "alice", "password": "wonderland"})),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.json(), json!({"user": "alice"}));
    assert_ne!(
        agent.cookie().map(str::to_owned),
        before_login,
        "login cycles the id"
    );
    let me = agent.send(Method::GET, "/api/me", None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["user"], json!("alice"));
    assert_eq!(me.json()["session"].as_str().map(str::len), Some(22));
    let mut planted = demo.agent();
    planted.set_cookie(before_login);
    assert_eq!(
        planted.send(Method::GET, "/api/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let copy = agent.cookie().map(str::to_owned);
    let refused = agent.send_raw(Method::POST, "/api/logout", &[], "").await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "a POST that a cross-site form could send"
    );
    let logout = agent
        .send_raw(
            Method::POST,
            "/api/logout",
            &[("content-type", "application/json")],
            "",
        )
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert!(logout.set_cookies()[0].contains("Max-Age=0"));
    assert_eq!(agent.cookie(), None);
    let mut replay = demo.agent();
    replay.set_cookie(copy);
    assert_eq!(
        replay.send(Method::GET, "/api/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn devices_are_listed_and_signed_out(demo: Demo) {
    let mut laptop = demo.logged_in("alice").await;
    let mut phone = demo.logged_in("alice").await;
    let mut tablet = demo.logged_in("alice").await;
    let mut bob = demo.logged_in("bob").await;
    let listed = laptop.send(Method::GET, "/api/sessions", None).await;
    assert_eq!(listed.status, StatusCode::OK);
    let listed = listed.json();
    let devices = listed.as_array().expect("a list");
    assert_eq!(devices.len(), 3);
    for device in devices {
        for time in ["created_at", "last_seen_at", "expires_at"] {
            assert!(is_rfc3339(&device[time]), "{time}: {}", device[time]);
        }
        assert_eq!(device["ip"], json!("127.0.0.1"));
        assert_eq!(device["user_agent"], json!("sessio-testkit"));
    }
    assert_eq!(
        devices
            .iter()
            .filter(|d| d["current"] == json!(true))
            .count(),
        1
    );
    let phone_handle = phone.send(Method::GET, "/api/me", None).await.json()["session"]
        .as_str()
        .expect("handle")
        .to_owned();
    let bob_handle = bob.send(Method::GET, "/api/me", None).await.json()["session"]
        .as_str()
        .expect("handle")
        .to_owned();
    let foreign = laptop
        .send(Method::DELETE, &format!("/api/sessions/{bob_handle}"), None)
        .await;
    assert_eq!(
        foreign.status,
        StatusCode::NOT_FOUND,
        "not one of the caller's sessions"
    );
    let garbage = laptop
        .send(Method::DELETE, "/api/sessions/not-a-handle", None)
        .await;
    assert_eq!(garbage.status, StatusCode::NOT_FOUND);
    let ended = laptop
        .send(
            Method::DELETE,
            &format!("/api/sessions/{phone_handle}"),
            None,
        )
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT);
    assert_eq!(
        phone.send(Method::GET, "/api/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let again = laptop
        .send(
            Method::DELETE,
            &format!("/api/sessions/{phone_handle}"),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let anonymous = demo
        .agent()
        .send(
            Method::DELETE,
            &format!("/api/sessions/{phone_handle}"),
            None,
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        demo.agent()
            .send(Method::GET, "/api/sessions", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let others = laptop
        .send_raw(
            Method::POST,
            "/api/sessions/revoke-others",
            &[("content-type", "application/json")],
            "",
        )
        .await;
    assert_eq!(others.json(), json!({"revoked": 1}));
    assert_eq!(
        tablet.send(Method::GET, "/api/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut second = demo.logged_in("alice").await;
    let everywhere = laptop
        .send_raw(
            Method::POST,
            "/api/logout-everywhere",
            &[("content-type", "application/json")],
            "",
        )
        .await;
    assert_eq!(
        everywhere.json(),
        json!({"revoked": 2}),
        "the current session included"
    );
    assert_eq!(laptop.cookie(), None);
    assert_eq!(
        second.send(Method::GET, "/api/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        bob.send(Method::GET, "/api/me", None).await.status,
        StatusCode::OK
    );
}

async fn data_routes_work_anonymously(demo: Demo) {
    let mut agent = demo.agent();
    let put = agent
        .send(
            Method::PUT,
            "/api/data/color",
            Some(json!({"name": "teal"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    assert_eq!(
        put.set_cookies().len(),
        1,
        "the first write creates the session"
    );
    agent.send(Method::PUT, "/api/data/n", Some(json!(3))).await;
    assert_eq!(
        agent.send(Method::GET, "/api/data", None).await.json(),
        json!({"color": {"name": "teal"}, "n": 3})
    );
    assert_eq!(
        agent.send(Method::GET, "/api/data/n", None).await.json(),
        json!(3)
    );
    assert_eq!(
        agent
            .send(Method::GET, "/api/data/missing", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        agent.send(Method::DELETE, "/api/data/n", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        agent.send(Method::GET, "/api/data/n", None).await.status,
        StatusCode::NOT_FOUND
    );
    let reserved = agent
        .send(Method::PUT, "/api/data/_csrf", Some(json!("x")))
        .await;
    assert_eq!(reserved.status, StatusCode::BAD_REQUEST);
    let fresh = demo.agent().send(Method::GET, "/api/data", None).await;
    assert_eq!(fresh.json(), json!({}));
    assert!(fresh.set_cookies().is_empty(), "reading creates nothing");
}

async fn a_slow_write_cannot_resurrect_a_logout(demo: Demo) {
    let mut agent = demo.logged_in("alice").await;
    let cookie = agent.cookie_header();
    let cookie_after = cookie.clone();
    let client = demo.server.client();
    let slow = tokio::spawn(async move {
        client
            .send(
                Method::PUT,
                "/api/data/late?delay_ms=600",
                cookie.as_deref(),
                Some(json!(true)),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let logout = agent
        .send_raw(
            Method::POST,
            "/api/logout",
            &[("content-type", "application/json")],
            "",
        )
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let slow = slow.await.expect("slow request");
    assert_eq!(slow.status, StatusCode::CONFLICT);
    assert!(slow.set_cookies()[0].contains("Max-Age=0"));
    match demo.sessions.user_sessions("alice").await {
        Ok(users) => assert!(
            users.is_empty(),
            "the slow request did not bring the session back"
        ),
        Err(sessio::SessionError::NeedsServerStore(_)) => {}
        Err(error) => panic!("{error}"),
    }
    let replay = demo
        .server
        .client()
        .send(Method::GET, "/api/me", cookie_after.as_deref(), None)
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
}

async fn flash_messages_show_once(demo: Demo) {
    let mut agent = demo.agent();
    let set = agent
        .send(
            Method::POST,
            "/api/flash",
            Some(json!({"message": "hello"})),
        )
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT);
    agent
        .send(Method::PUT, "/api/data/other", Some(json!(1)))
        .await;
    assert_eq!(
        agent.send(Method::GET, "/api/flash", None).await.json(),
        json!(["hello"])
    );
    assert_eq!(
        agent.send(Method::GET, "/api/flash", None).await.json(),
        json!([])
    );
}

async fn forms_work_with_tokens_and_refuse_without(demo: Demo) {
    let host = demo.address().to_string();
    let origin = format!("http://{host}");
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let mut browser = demo.agent();
    let page = browser.send(Method::GET, "/", None).await;
    assert!(page.text().contains("action=/login"));
    assert!(page.header("content-security-policy").is_some());
    assert!(
        page.set_cookies().is_empty(),
        "the login page creates no session"
    );

    let cross_site = browser
        .send_raw(
            Method::POST,
            "/login",
            &[form[0], ("origin", "https://evil.example")],
            "username=alice&password=wonderland",
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let login = browser
        .send_raw(
            Method::POST,
            "/login",
            &[form[0], ("origin", &origin)],
            "username=alice&password=wonderland",
        )
        .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    let page = browser.send(Method::GET, "/", None).await.text();
    assert!(
        page.contains("Welcome, alice."),
        "the flash is shown after the redirect"
    );
    assert!(page.contains("this device") || page.contains("no list of devices"));
    let again = browser.send(Method::GET, "/", None).await.text();
    assert!(!again.contains("Welcome, alice."), "and only once");
    let token = page_token(&again);

    let forged = browser
        .send_raw(Method::POST, "/data", &form, "csrf=forged&key=k&value=1")
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let added = browser
        .send_raw(
            Method::POST,
            "/data",
            &form,
            format!("csrf={token}&key=greeting&value=%22hi%22"),
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER);
    assert_eq!(
        browser
            .send(Method::GET, "/api/data/greeting", None)
            .await
            .json(),
        json!("hi")
    );
    let removed = browser
        .send_raw(
            Method::POST,
            "/data/greeting/delete",
            &form,
            format!("csrf={token}"),
        )
        .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    assert_eq!(
        browser
            .send(Method::GET, "/api/data/greeting", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let logout = browser
        .send_raw(Method::POST, "/logout", &form, format!("csrf={token}"))
        .await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    let page = browser.send(Method::GET, "/", None).await.text();
    assert!(page.contains("Logged out.") && page.contains("action=/login"));
    let stale = browser
        .send_raw(Method::POST, "/logout", &form, format!("csrf={token}"))
        .await;
    assert_eq!(
        stale.status,
        StatusCode::UNAUTHORIZED,
        "the old token died with the session"
    );
}

/// The page of a session kept in a server store lists devices and signs one out.
async fn forms_sign_out_another_device(demo: Demo) {
    let origin = format!("http://{}", demo.address());
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let mut browser = demo.agent();
    let login = browser
        .send_raw(
            Method::POST,
            "/login",
            &[form[0], ("origin", &origin)],
            "username=alice&password=wonderland",
        )
        .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    let token = page_token(&browser.send(Method::GET, "/", None).await.text());
    let mut other = demo.logged_in("alice").await;
    let other_handle = other.send(Method::GET, "/api/me", None).await.json()["session"]
        .as_str()
        .expect("handle")
        .to_owned();
    let page = browser.send(Method::GET, "/", None).await.text();
    assert!(page.contains(&format!("/sessions/{other_handle}/revoke")));
    let revoked = browser
        .send_raw(
            Method::POST,
            &format!("/sessions/{other_handle}/revoke"),
            &form,
            format!("csrf={token}"),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(
        other.send(Method::GET, "/api/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Cookie-only sessions (`--store cookie`): no device list, but logout everywhere works
/// through the revocation store, and a copied cookie dies with its session.
async fn cookie_sessions_have_no_device_list_but_end_everywhere(demo: Demo) {
    let mut laptop = demo.logged_in("alice").await;
    let mut phone = demo.logged_in("alice").await;
    let copy = phone.cookie_header();
    let listed = laptop.send(Method::GET, "/api/sessions", None).await;
    assert_eq!(listed.status, StatusCode::NOT_IMPLEMENTED);
    assert!(
        listed.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("server store"))
    );
    let page = laptop.send(Method::GET, "/", None).await.text();
    assert!(page.contains("no list of devices"));
    let json = [("content-type", "application/json")];
    let others = laptop
        .send_raw(Method::POST, "/api/sessions/revoke-others", &json, "")
        .await;
    assert_eq!(
        others.json(),
        json!({"revoked": null}),
        "cookie-only sessions cannot be counted"
    );
    assert_eq!(
        phone.send(Method::GET, "/api/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let replay = demo
        .server
        .client()
        .send(Method::GET, "/api/me", copy.as_deref(), None)
        .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        laptop.send(Method::GET, "/api/me", None).await.status,
        StatusCode::OK
    );
    let everywhere = laptop
        .send_raw(Method::POST, "/api/logout-everywhere", &json, "")
        .await;
    assert_eq!(everywhere.json(), json!({"revoked": null}));
    assert_eq!(laptop.cookie(), None);
}

async fn cookie() -> Option<Sessions> {
    use clap::Parser;
    let args = sessio_demo::config::Args::try_parse_from(["sessio-demo", "--store", "cookie"])
        .expect("flags");
    Some(args.sessions().await.expect("cookie sessions"))
}

macro_rules! store_cases {
    ($store:ident, [$($case:ident),* $(,)?]) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(sessions) = super::$store().await else { return };
                    super::$case(super::Demo::start(sessions).await).await;
                }
            )*
        }
    };
}

macro_rules! stores {
    ($($store:ident),* ; $cases:tt) => { $( store_cases!($store, $cases); )* };
}

stores!(memory, sqlite, redis, postgres; [
    healthz_touches_no_session,
    login_me_and_logout,
    devices_are_listed_and_signed_out,
    data_routes_work_anonymously,
    a_slow_write_cannot_resurrect_a_logout,
    flash_messages_show_once,
    forms_work_with_tokens_and_refuse_without,
    forms_sign_out_another_device,
]);

stores!(cookie; [
    healthz_touches_no_session,
    login_me_and_logout,
    data_routes_work_anonymously,
    a_slow_write_cannot_resurrect_a_logout,
    flash_messages_show_once,
    forms_work_with_tokens_and_refuse_without,
    cookie_sessions_have_no_device_list_but_end_everywhere,
]);

#[tokio::test]
async fn bad_store_urls_and_cookie_keys_are_refused_with_a_clear_message() {
    use clap::Parser;
    assert!(
        sessio_demo::config::Args::try_parse_from(["sessio-demo", "--store", "mysql://x"]).is_err()
    );
    let args = sessio_demo::config::Args::try_parse_from([
        "sessio-demo",
        "--store",
        "cookie",
        "--cookie-key",
        "c2hvcnQ=",
    ])
    .expect("flags");
    let error = args.sessions().await.expect_err("a short key");
    assert!(error.to_string().contains("256 bits"), "{error}");
}

#[tokio::test]
async fn insecure_cookies_drop_secure_and_the_host_prefix() {
    use clap::Parser;
    let args = sessio_demo::config::Args::try_parse_from([
        "sessio-demo",
        "--store",
        "memory",
        "--insecure-cookie",
        "--idle-timeout",
        "2s",
    ])
    .expect("flags");
    let sessions = args.sessions().await.expect("sessions");
    assert_eq!(sessions.cookie_name(), "sessio");
    let demo = Demo::start(sessions).await;
    let mut agent = demo.agent();
    let response = agent.send(Method::PUT, "/api/data/n", Some(json!(1))).await;
    let cookie = &response.set_cookies()[0];
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(
        cookie.contains("Max-Age=1") || cookie.contains("Max-Age=2"),
        "{cookie}"
    );
}
