//! Behaviour of the session handle and the layer that does not depend on the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use sessio::{ConfigError, EventKind, LoginInfo, MemoryStore, SameSite, SessionError, Sessions};
use sessio_testkit::Browser;

fn sessions() -> Sessions {
    Sessions::builder(MemoryStore::new())
        .build()
        .expect("default configuration is valid")
}

#[test]
fn insecure_cookie_configurations_fail_at_build_time() {
    let build = |builder: sessio::SessionsBuilder| builder.build().map(|_| ()).unwrap_err();
    let store = MemoryStore::new;
    assert!(matches!(
        build(Sessions::builder(store()).cookie_domain("example.com")),
        ConfigError::HostPrefix(_)
    ));
    assert!(matches!(
        build(Sessions::builder(store()).cookie_path("/app")),
        ConfigError::HostPrefix(_)
    ));
    assert!(matches!(
        build(Sessions::builder(store()).secure(false)),
        ConfigError::HostPrefix(_)
    ));
    assert!(matches!(
        build(
            Sessions::builder(store())
                .cookie_name("sid")
                .secure(false)
                .same_site(SameSite::None)
        ),
        ConfigError::SameSiteNoneWithoutSecure
    ));
    assert!(matches!(
        build(
            Sessions::builder(store())
                .without_idle_timeout()
                .without_absolute_lifetime()
        ),
        ConfigError::NoExpiry
    ));
    assert!(matches!(
        build(Sessions::builder(store()).pepper(vec![1u8; 16])),
        ConfigError::PepperTooShort
    ));
    assert!(matches!(
        build(
            Sessions::builder(store())
                .idle_timeout(Duration::from_secs(60))
                .touch_interval(Duration::from_secs(60))
        ),
        ConfigError::TouchIntervalTooLong
    ));
    assert!(
        Sessions::builder(store())
            .cookie_name("sid")
            .secure(false)
            .cookie_domain("example.com")
            .cookie_path("/app")
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn oversized_data_is_refused_with_a_typed_error() {
    let sessions = Sessions::builder(MemoryStore::new())
        .max_data_size(1024)
        .build()
        .expect("config");
    let mut browser = Browser::new(&sessions);
    let error = browser
        .request(|session| async move {
            session
                .insert("small", &"x".repeat(100))
                .await
                .expect("fits");
            session.insert("big", &"x".repeat(2000)).await.unwrap_err()
        })
        .await;
    assert!(
        matches!(error, SessionError::TooLarge { limit: 1024, .. }),
        "{error}"
    );
    let kept = browser
        .request(|session| async move { session.entries().await.expect("entries") })
        .await;
    assert_eq!(kept.len(), 1, "the refused value was not stored");
}

#[tokio::test]
async fn peppered_digests_keep_sessions_working() {
    let sessions = Sessions::builder(MemoryStore::new())
        .pepper(vec![42u8; 32])
        .build()
        .expect("config");
    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move { session.insert("n", &1).await.expect("insert") })
        .await;
    let n = browser
        .request(|session| async move { session.get::<u32>("n").await.expect("get") })
        .await;
    assert_eq!(n, Some(1));
}

#[tokio::test]
async fn device_operations_need_a_login() {
    let sessions = sessions();
    let mut browser = Browser::new(&sessions);
    let error = browser
        .request(|session| async move { session.user_sessions().await.unwrap_err() })
        .await;
    assert!(matches!(error, SessionError::NotLoggedIn));
}

/// Captures everything tracing prints, to check that no secret reaches the log (G14).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn events_are_counted_and_never_expose_ids() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let sessions = Sessions::builder(MemoryStore::new())
        .event_listener(move |event: &sessio::Event<'_>| {
            recorder.lock().expect("events").push(event.kind);
        })
        .event_listener(|event: &sessio::Event<'_>| {
            if event.kind == EventKind::Destroyed {
                panic!("a broken listener");
            }
        })
        .build()
        .expect("config");

    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move {
            session.insert("n", &1).await.expect("insert");
        })
        .await;
    let first_id = browser.cookie().expect("cookie").to_owned();
    browser
        .request(|session| async move {
            session
                .login("alice", LoginInfo::default())
                .await
                .expect("login");
        })
        .await;
    let second_id = browser.cookie().expect("cookie").to_owned();
    let digest = browser.digest().expect("digest").to_hex();
    let session = browser.begin();
    session
        .destroy()
        .await
        .expect("a panicking listener cannot stop a destroy");
    let commit = browser.finish(&session, StatusCode::OK).await;
    assert!(commit.set_cookie.is_some());
    let replay = Browser::with_cookie(&sessions, Some(second_id.clone()));
    let replayed = replay.begin();
    assert_eq!(
        replayed.get::<u32>("n").await.expect("get"),
        None,
        "destroyed"
    );
    let forged = Browser::with_cookie(&sessions, Some("not-an-id".into()));
    let _ = forged.begin().get::<u32>("n").await.expect("get");

    let metrics = sessions.metrics();
    assert_eq!(metrics.created, 1);
    assert_eq!(metrics.cycled, 1);
    assert_eq!(metrics.destroyed, 1);
    assert_eq!(metrics.invalid_cookie, 1);
    assert_eq!(metrics.loaded, 1);
    let kinds = seen.lock().expect("events").clone();
    assert!(kinds.contains(&EventKind::Created));
    assert!(kinds.contains(&EventKind::Cycled));
    assert!(kinds.contains(&EventKind::Destroyed));

    let log = String::from_utf8(log.0.lock().expect("log").clone()).expect("utf-8 log");
    assert!(log.contains("destroyed"), "events are traced: {log}");
    assert!(log.contains("panicked"), "the listener panic is logged");
    for secret in [&first_id, &second_id, &digest] {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
}

#[tokio::test]
async fn browser_session_cookies_carry_no_lifetime() {
    let sessions = Sessions::builder(MemoryStore::new())
        .browser_session_cookie(true)
        .build()
        .expect("config");
    let mut browser = Browser::new(&sessions);
    let session = browser.begin();
    session.insert("n", &1).await.expect("insert");
    let commit = browser.finish(&session, StatusCode::OK).await;
    let cookie = commit.set_cookie.expect("new session cookie");
    let cookie = cookie.to_str().expect("text");
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "{cookie}"
    );
}

#[tokio::test]
async fn idle_touches_are_throttled() {
    let clock = sessio_testkit::ManualClock::new();
    let store = sessio_testkit::FaultyStore::new(MemoryStore::new());
    let sessions = Sessions::builder(store.clone())
        .clock(clock.clone())
        .idle_timeout(Duration::from_secs(600))
        .touch_interval(Duration::from_secs(60))
        .build()
        .expect("config");
    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move { session.insert("n", &1).await.expect("insert") })
        .await;
    for _ in 0..5 {
        clock.advance(Duration::from_secs(10));
        let before = store.calls();
        let session = browser.begin();
        assert_eq!(session.get::<u32>("n").await.expect("get"), Some(1));
        let commit = browser.finish(&session, StatusCode::OK).await;
        assert_eq!(
            store.calls() - before,
            1,
            "a read inside the touch interval only loads"
        );
        assert!(commit.set_cookie.is_none());
    }
    clock.advance(Duration::from_secs(20));
    let before = store.calls();
    let session = browser.begin();
    assert_eq!(session.get::<u32>("n").await.expect("get"), Some(1));
    let commit = browser.finish(&session, StatusCode::OK).await;
    assert_eq!(
        store.calls() - before,
        2,
        "past the interval, one touch is written"
    );
    assert!(
        commit.set_cookie.is_some(),
        "the cookie's Max-Age follows the new deadline"
    );
}
