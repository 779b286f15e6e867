//! Cookie-only sessions (G10): sealing, strict opening, key rotation, expiry from the payload,
//! the 4096-byte limit, and revocation through a store.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;
use sessio::{
    ConfigError, CookieKey, FlashLevel, KeyRing, LoginInfo, MemoryStore, SessionError, Sessions,
};
use sessio_testkit::http::{TestServer, app};
use sessio_testkit::{Agent, Browser, ManualClock};

fn key(id: &str, byte: u8) -> CookieKey {
    CookieKey::new(id, &[byte; 32]).expect("valid key")
}

fn ring(keys: &[(&str, u8)]) -> KeyRing {
    KeyRing::new(keys.iter().map(|(id, byte)| key(id, *byte)).collect()).expect("valid ring")
}

fn plain(keys: &[(&str, u8)]) -> Sessions {
    Sessions::cookie_builder(ring(keys))
        .build()
        .expect("config")
}

fn revocable(keys: &[(&str, u8)], revocations: &MemoryStore) -> Sessions {
    Sessions::cookie_builder(ring(keys))
        .revocation_store(revocations.clone())
        .build()
        .expect("config")
}

async fn logged_in(sessions: &Sessions, user: &str) -> Browser {
    let mut browser = Browser::new(sessions);
    browser
        .request(|session| async move {
            session.insert("theme", &"dark").await.expect("insert");
            session
                .login(user, LoginInfo::default())
                .await
                .expect("login");
        })
        .await;
    browser
}

async fn user_of(sessions: &Sessions, cookie: Option<String>) -> Option<String> {
    let browser = Browser::with_cookie(sessions, cookie);
    browser.begin().user_id().await.expect("user")
}

#[tokio::test]
async fn a_session_lives_entirely_in_its_cookie() {
    let sessions = plain(&[("k1", 1)]);
    let mut browser = logged_in(&sessions, "alice").await;
    let cookie = browser.cookie().expect("cookie").to_owned();
    assert!(cookie.starts_with("1.k1."), "{cookie}");
    assert!(
        !cookie.contains("alice") && !cookie.contains("dark"),
        "the payload is encrypted"
    );
    let (theme, user) = browser
        .request(|session| async move {
            session.flash(FlashLevel::Info, "hi").await.expect("flash");
            (
                session.get::<String>("theme").await.expect("get"),
                session.user_id().await.expect("user"),
            )
        })
        .await;
    assert_eq!(theme.as_deref(), Some("dark"));
    assert_eq!(user.as_deref(), Some("alice"));
    let shown = browser
        .request(|session| async move { session.take_flashes().await.expect("take") })
        .await;
    assert_eq!(shown.len(), 1);
    let again = browser
        .request(|session| async move { session.take_flashes().await.expect("take") })
        .await;
    assert!(again.is_empty(), "a flash is shown once");
    let error = browser
        .request(|session| async move { session.user_sessions().await.unwrap_err() })
        .await;
    assert!(
        matches!(error, SessionError::NeedsServerStore(_)),
        "{error}"
    );
    assert!(matches!(
        sessions.count().await,
        Err(SessionError::NeedsServerStore(_))
    ));
}

#[tokio::test]
async fn every_altered_cookie_is_refused() {
    let sessions = plain(&[("k1", 1)]);
    let browser = logged_in(&sessions, "alice").await;
    let good = browser.cookie().expect("cookie").to_owned();
    assert_eq!(
        user_of(&sessions, Some(good.clone())).await.as_deref(),
        Some("alice")
    );
    let (_, body) = good.split_at(5);
    let binary = URL_SAFE_NO_PAD.decode(body).expect("base64url");
    let flip = |index: usize| {
        let mut bytes = binary.clone();
        bytes[index] ^= 0x01;
        format!("1.k1.{}", URL_SAFE_NO_PAD.encode(bytes))
    };
    let reordered = {
        let mut bytes = binary.clone();
        bytes.rotate_left(12);
        format!("1.k1.{}", URL_SAFE_NO_PAD.encode(bytes))
    };
    let mut altered = vec![
        flip(0),                                      // nonce
        flip(20),                                     // ciphertext
        flip(binary.len() - 1),                       // tag
        good[..good.len() - 1].to_owned(),            // truncated by one character
        good[..good.len() / 2].to_owned(),            // truncated by half
        format!("1.k1.{}", &body[..16]),              // shorter than nonce and tag
        format!("k1.1.{body}"),                       // parts re-ordered
        reordered,                                    // nonce moved behind the ciphertext
        format!("2.k1.{body}"),                       // another format version
        format!("1.k2.{body}"),                       // another key id
        format!("1.K1.{body}"),                       // key ids are exact
        format!("1.k1.{}", STANDARD.encode(&binary)), // standard alphabet, padded
        format!("{good}="),                           // padding
        format!("{good}.x"),                          // an extra part
        format!("1.k1.{}", body.to_uppercase()),      // re-cased
        String::new(),
        "1..".to_owned(),
    ];
    // Re-encoded with non-zero trailing bits, when the length leaves room for them.
    if binary.len() % 3 != 0 {
        let mut last = body.as_bytes().to_vec();
        let end = last.len() - 1;
        last[end] = if last[end] == b'B' { b'C' } else { b'B' };
        altered.push(format!("1.k1.{}", String::from_utf8(last).expect("ascii")));
    }
    for (i, value) in altered.into_iter().enumerate() {
        assert_eq!(
            user_of(&sessions, Some(value.clone())).await,
            None,
            "variant {i}: {value}"
        );
    }
    assert!(sessions.metrics().invalid_cookie >= 17);

    // Sealed for another cookie name, or another purpose, with the same key: refused.
    let other_name = Sessions::cookie_builder(ring(&[("k1", 1)]))
        .cookie_name("__Host-other")
        .build()
        .expect("config");
    assert_eq!(user_of(&other_name, Some(good.clone())).await, None);
    let other_purpose = Sessions::cookie_builder(ring(&[("k1", 1)]))
        .cookie_purpose("another-app")
        .build()
        .expect("config");
    assert_eq!(user_of(&other_purpose, Some(good)).await, None);
}

#[tokio::test]
async fn older_listed_keys_open_and_are_reissued_retired_keys_do_not() {
    let old = plain(&[("k1", 1)]);
    let browser = logged_in(&old, "alice").await;
    let sealed_by_k1 = browser.cookie().map(str::to_owned);

    let rotated = plain(&[("k2", 2), ("k1", 1)]);
    let mut rotating = Browser::with_cookie(&rotated, sealed_by_k1.clone());
    let session = rotating.begin();
    assert_eq!(
        session.user_id().await.expect("user").as_deref(),
        Some("alice")
    );
    let commit = rotating.finish(&session, StatusCode::OK).await;
    assert!(
        commit.set_cookie.is_some(),
        "a cookie under an older key is re-issued"
    );
    let reissued = rotating.cookie().expect("cookie").to_owned();
    assert!(reissued.starts_with("1.k2."), "{reissued}");
    assert_eq!(
        user_of(&rotated, Some(reissued.clone())).await.as_deref(),
        Some("alice")
    );

    let retired = plain(&[("k2", 2)]);
    assert_eq!(
        user_of(&retired, sealed_by_k1).await,
        None,
        "a retired key opens nothing"
    );
    assert_eq!(
        user_of(&retired, Some(reissued)).await.as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn expiry_is_enforced_from_the_payload() {
    let clock = ManualClock::new();
    let sessions = Sessions::cookie_builder(ring(&[("k1", 1)]))
        .clock(clock.clone())
        .idle_timeout(Duration::from_secs(60))
        .absolute_lifetime(Duration::from_secs(600))
        .build()
        .expect("config");
    let browser = logged_in(&sessions, "alice").await;
    let cookie = browser.cookie().map(str::to_owned);
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        user_of(&sessions, cookie.clone()).await.as_deref(),
        Some("alice")
    );
    clock.advance(Duration::from_secs(2));
    // The browser kept the cookie past its Max-Age; the sealed deadline still ends it.
    assert_eq!(user_of(&sessions, cookie).await, None);
}

#[tokio::test]
async fn a_cookie_over_4096_bytes_is_a_typed_error_before_anything_is_sent() {
    let sessions = plain(&[("k1", 1)]);
    let mut browser = Browser::new(&sessions);
    let session = browser.begin();
    session
        .insert("small", &"x".repeat(1000))
        .await
        .expect("fits");
    let error = session.insert("big", &"y".repeat(3500)).await.unwrap_err();
    assert!(
        matches!(error, SessionError::CookieTooLarge { limit: 4096, size } if size > 4096),
        "{error}"
    );
    let error = session
        .flash(FlashLevel::Info, "z".repeat(3500))
        .await
        .unwrap_err();
    assert!(
        matches!(error, SessionError::CookieTooLarge { .. }),
        "{error}"
    );
    let commit = browser.finish(&session, StatusCode::OK).await;
    let cookie = commit.set_cookie.expect("the session that fits is sent");
    assert!(cookie.len() <= 4096 + 64, "{}", cookie.len());
    let value = browser.cookie().expect("cookie");
    assert!(sessions.cookie_name().len() + 1 + value.len() <= 4096);
}

#[tokio::test]
async fn without_revocation_a_copied_cookie_stays_valid_until_it_expires() {
    let sessions = plain(&[("k1", 1)]);
    let mut browser = logged_in(&sessions, "alice").await;
    let copy = browser.cookie().map(str::to_owned);
    let session = browser.begin();
    session.logout().await.expect("logout");
    let commit = browser.finish(&session, StatusCode::OK).await;
    assert!(
        commit
            .set_cookie
            .expect("removal")
            .to_str()
            .expect("text")
            .contains("Max-Age=0")
    );
    assert_eq!(browser.cookie(), None, "the browser's cookie is cleared");
    // This is the documented limit of cookie-only sessions without a revocation store.
    assert_eq!(user_of(&sessions, copy).await.as_deref(), Some("alice"));
    let error = logged_in(&sessions, "alice")
        .await
        .begin()
        .destroy_all_user_sessions()
        .await
        .unwrap_err();
    assert!(
        matches!(error, SessionError::NeedsServerStore(_)),
        "{error}"
    );
}

#[tokio::test]
async fn with_revocation_a_replayed_copy_after_logout_is_anonymous() {
    let revocations = MemoryStore::new();
    let sessions = revocable(&[("k1", 1)], &revocations);
    let mut browser = logged_in(&sessions, "alice").await;
    let copy = browser.cookie().map(str::to_owned);
    let session = browser.begin();
    session.logout().await.expect("logout");
    let _ = browser.finish(&session, StatusCode::OK).await;
    assert_eq!(
        user_of(&sessions, copy).await,
        None,
        "capture, log out, replay: anonymous"
    );

    // Anonymous sessions too.
    let mut visitor = Browser::new(&sessions);
    visitor
        .request(|session| async move { session.insert("n", &1).await.expect("insert") })
        .await;
    let copy = visitor.cookie().map(str::to_owned);
    visitor
        .request(|session| async move { session.destroy().await.expect("destroy") })
        .await;
    let replay = Browser::with_cookie(&sessions, copy).begin();
    assert_eq!(replay.get::<u32>("n").await.expect("get"), None);
}

#[tokio::test]
async fn with_revocation_cycling_the_id_retires_the_old_cookie() {
    let revocations = MemoryStore::new();
    let sessions = revocable(&[("k1", 1)], &revocations);
    let mut browser = logged_in(&sessions, "alice").await;
    let before = browser.cookie().map(str::to_owned);
    browser
        .request(|session| async move { session.cycle_id().await.expect("cycle") })
        .await;
    assert_ne!(browser.cookie().map(str::to_owned), before);
    assert_eq!(user_of(&sessions, before).await, None);
    assert_eq!(
        user_of(&sessions, browser.cookie().map(str::to_owned))
            .await
            .as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn logout_everywhere_ends_every_copy() {
    let revocations = MemoryStore::new();
    let sessions = revocable(&[("k1", 1)], &revocations);
    let laptop = logged_in(&sessions, "alice").await;
    let phone = logged_in(&sessions, "alice").await;
    let mut tablet = logged_in(&sessions, "alice").await;
    let bob = logged_in(&sessions, "bob").await;
    let stolen = phone.cookie().map(str::to_owned);

    let kept = tablet
        .request(|session| async move { session.destroy_other_sessions().await.expect("others") })
        .await;
    assert_eq!(kept.count(), None, "cookie-only sessions cannot be counted");
    assert_eq!(
        user_of(&sessions, laptop.cookie().map(str::to_owned)).await,
        None
    );
    assert_eq!(user_of(&sessions, stolen.clone()).await, None);
    assert_eq!(
        user_of(&sessions, tablet.cookie().map(str::to_owned))
            .await
            .as_deref(),
        Some("alice"),
        "the device that asked keeps its session"
    );

    let ended = tablet
        .request(|session| async move { session.destroy_all_user_sessions().await.expect("all") })
        .await;
    assert_eq!(ended.count(), None);
    assert_eq!(tablet.cookie(), None);
    let newer = logged_in(&sessions, "alice").await;
    sessions
        .destroy_user_sessions("alice")
        .await
        .expect("from outside a request");
    assert_eq!(
        user_of(&sessions, newer.cookie().map(str::to_owned)).await,
        None
    );
    assert_eq!(
        user_of(&sessions, bob.cookie().map(str::to_owned))
            .await
            .as_deref(),
        Some("bob"),
        "other users keep theirs"
    );
}

#[tokio::test]
async fn a_slow_request_cannot_reissue_a_revoked_session() {
    let revocations = MemoryStore::new();
    let sessions = revocable(&[("k1", 1)], &revocations);
    let mut browser = logged_in(&sessions, "alice").await;
    let mut slow_browser = Browser::with_cookie(&sessions, browser.cookie().map(str::to_owned));
    let slow = slow_browser.begin();
    assert_eq!(
        slow.user_id().await.expect("user").as_deref(),
        Some("alice")
    );
    slow.insert("late", &true).await.expect("insert");
    browser
        .request(|session| async move { session.logout().await.expect("logout") })
        .await;
    let commit = slow_browser.finish(&slow, StatusCode::OK).await;
    assert!(
        matches!(commit.error, Some(SessionError::Ended)),
        "{:?}",
        commit.error
    );
    assert_eq!(commit.replace_status, Some(StatusCode::CONFLICT));
    assert_eq!(
        slow_browser.cookie(),
        None,
        "its response removes the cookie"
    );
}

#[tokio::test]
async fn weak_keys_and_inconsistent_settings_are_refused_at_start_up() {
    assert!(matches!(
        CookieKey::new("k", &[1u8; 16]),
        Err(ConfigError::WeakCookieKey(_))
    ));
    assert!(matches!(
        CookieKey::new("k", &[1u8; 31]),
        Err(ConfigError::WeakCookieKey(_))
    ));
    assert!(matches!(
        CookieKey::new("k", &[0u8; 32]),
        Err(ConfigError::WeakCookieKey(_))
    ));
    assert!(matches!(
        CookieKey::new("", &[1u8; 32]),
        Err(ConfigError::InvalidKeyId(_))
    ));
    assert!(matches!(
        CookieKey::new("a.b", &[1u8; 32]),
        Err(ConfigError::InvalidKeyId(_))
    ));
    assert!(matches!(
        KeyRing::new(vec![key("k", 1), key("k", 2)]),
        Err(ConfigError::InvalidKeyId(_))
    ));
    assert!(matches!(
        KeyRing::new(vec![]),
        Err(ConfigError::WeakCookieKey(_))
    ));
    let encoded = STANDARD.encode([9u8; 32]);
    assert!(CookieKey::from_base64("env", &encoded).is_ok());
    assert!(CookieKey::from_base64("env", "not base64!").is_err());
    let error = Sessions::cookie_builder(ring(&[("k1", 1)]))
        .revocation_store(MemoryStore::new())
        .without_absolute_lifetime()
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::RevocationNeedsAbsoluteLifetime);
    let error = Sessions::builder(MemoryStore::new())
        .revocation_store(MemoryStore::new())
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::RevocationNeedsCookieSessions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_the_cookie_has_secure_attributes_and_a_matching_removal() {
    let revocations = MemoryStore::new();
    let sessions = revocable(&[("k1", 1)], &revocations);
    let server = TestServer::start(app(&sessions)).await;
    let mut agent = Agent::new(server.client(), sessions.cookie_name());
    let login = agent.send(Method::POST, "/login/alice", None).await;
    assert_eq!(login.status, StatusCode::NO_CONTENT);
    let set = login.set_cookies().remove(0);
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    assert_eq!(login.header("cache-control").as_deref(), Some("no-store"));
    agent.send(Method::PUT, "/data/n", Some(json!(5))).await;
    let copy = agent.cookie_header();
    assert_eq!(
        agent.send(Method::GET, "/data/n", None).await.json(),
        json!(5)
    );
    let logout = agent.send(Method::POST, "/logout", None).await;
    let removal = logout.set_cookies().remove(0);
    assert!(removal.contains("Max-Age=0"));
    let attributes = |cookie: &str| {
        let mut parts: Vec<String> = cookie
            .split(';')
            .skip(1)
            .map(|part| part.trim().to_owned())
            .filter(|part| !part.starts_with("Max-Age") && !part.starts_with("Expires"))
            .collect();
        parts.sort();
        parts
    };
    assert_eq!(attributes(&set), attributes(&removal));
    let replay = server
        .client()
        .send(Method::GET, "/data/n", copy.as_deref(), None)
        .await;
    assert_eq!(replay.status, StatusCode::NOT_FOUND);
    let untouched = server
        .client()
        .send(Method::GET, "/healthz", None, None)
        .await;
    assert!(untouched.set_cookies().is_empty());
}
