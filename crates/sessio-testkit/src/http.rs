//! HTTP-level cases: a real axum server on loopback, real requests, the layer in between.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::json;
use sessio::{
    Clock, FlashLevel, LoginInfo, Session, SessionError, SessionHandle, SessionStore, Sessions,
    SystemClock,
};

use crate::client::{Agent, TestClient};
use crate::faulty::FaultyStore;

#[derive(Deserialize)]
struct Delay {
    delay_ms: Option<u64>,
}

async fn read_key(
    session: Session,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, SessionError> {
    Ok(match session.get_value(&key).await? {
        Some(value) => Json(value).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

async fn write_key(
    session: Session,
    Path(key): Path<String>,
    Query(delay): Query<Delay>,
    Json(value): Json<serde_json::Value>,
) -> Result<StatusCode, SessionError> {
    // Load first, so that a delay models a slow request holding a loaded session.
    let _ = session.get_value(&key).await?;
    if let Some(delay) = delay.delay_ms {
        tokio::time::sleep(Duration::from_millis(delay.min(5_000))).await;
    }
    session.insert_value(&key, &value).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn login(
    session: Session,
    info: LoginInfo,
    Path(user): Path<String>,
) -> Result<StatusCode, SessionError> {
    session.login(&user, info).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout(session: Session) -> Result<StatusCode, SessionError> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn flash(session: Session, Path(message): Path<String>) -> Result<StatusCode, SessionError> {
    session.flash(FlashLevel::Info, message).await?;
    Ok(StatusCode::SEE_OTHER)
}

async fn flashes(session: Session) -> Result<Json<Vec<String>>, SessionError> {
    let flashes = session.take_flashes().await?;
    Ok(Json(
        flashes.into_iter().map(|flash| flash.message).collect(),
    ))
}

async fn devices(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    Ok(Json(json!(session.user_sessions().await?)))
}

async fn revoke(session: Session, Path(handle): Path<String>) -> Result<StatusCode, SessionError> {
    let Some(handle) = SessionHandle::parse(&handle) else {
        return Ok(StatusCode::NOT_FOUND);
    };
    Ok(if session.destroy_session(&handle).await? {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    })
}

async fn revoke_others(session: Session) -> Result<Json<serde_json::Value>, SessionError> {
    Ok(Json(
        json!({"revoked": session.destroy_other_sessions().await?.count()}),
    ))
}

async fn fail_after_insert(session: Session) -> Result<StatusCode, SessionError> {
    session.insert("half-done", &true).await?;
    Ok(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The app the HTTP cases run against: one route per session operation.
pub fn app(sessions: &Sessions) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/data/{key}", get(read_key).put(write_key))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .route("/flash/{message}", post(flash))
        .route("/flashes", get(flashes))
        .route("/devices", get(devices))
        .route("/devices/{handle}", delete(revoke))
        .route("/revoke-others", post(revoke_others))
        .route("/fail", put(fail_after_insert))
        .layer(sessions.layer())
}

/// A server on a free loopback port, stopped when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves `router` on 127.0.0.1 with connection info (for [`LoginInfo`]).
    pub async fn start(router: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, service).await.expect("serve");
        });
        Self { addr, task }
    }

    /// A client for this server.
    pub fn client(&self) -> TestClient {
        TestClient::new(self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn new_agent(server: &TestServer, sessions: &Sessions) -> Agent {
    Agent::new(server.client(), sessions.cookie_name())
}

async fn setup<S: SessionStore + Clone>(store: S) -> (Sessions, TestServer) {
    let sessions = Sessions::builder(store).build().expect("config");
    let server = TestServer::start(app(&sessions)).await;
    (sessions, server)
}

fn attributes(set_cookie: &str) -> Vec<String> {
    let mut attributes: Vec<String> = set_cookie
        .split(';')
        .skip(1)
        .map(|part| part.trim().to_owned())
        .filter(|part| {
            let lower = part.to_ascii_lowercase();
            !lower.starts_with("max-age") && !lower.starts_with("expires")
        })
        .collect();
    attributes.sort();
    attributes
}

/// The session cookie has the secure attributes, and the response cannot be cached by a
/// shared cache (G7).
pub async fn http_cookie_has_secure_attributes<S: SessionStore + Clone>(store: S) {
    let (sessions, server) = setup(store).await;
    let mut agent = new_agent(&server, &sessions);
    let response = agent.send(Method::PUT, "/data/n", Some(json!(1))).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    let cookies = response.set_cookies();
    assert_eq!(cookies.len(), 1);
    let cookie = &cookies[0];
    assert!(cookie.starts_with("__Host-sessio="));
    let attributes = attributes(cookie);
    assert_eq!(
        attributes,
        vec!["HttpOnly", "Path=/", "SameSite=Lax", "Secure"]
    );
    assert!(
        cookie.contains("Max-Age="),
        "a persistent cookie carries its lifetime"
    );
    assert_eq!(
        response.header("cache-control").as_deref(),
        Some("no-store")
    );
    assert_eq!(response.header("vary").as_deref(), Some("Cookie"));
}

/// Logout deletes the record before responding and removes the cookie with the attributes
/// that set it; replaying the old cookie gets an empty anonymous session (G1).
pub async fn http_logout_removes_the_cookie_and_the_record<S: SessionStore + Clone>(store: S) {
    let (sessions, server) = setup(store.clone()).await;
    let mut agent = new_agent(&server, &sessions);
    let login = agent.send(Method::POST, "/login/alice", None).await;
    assert_eq!(login.status, StatusCode::NO_CONTENT);
    let set = login.set_cookies().remove(0);
    agent
        .send(Method::PUT, "/data/secret", Some(json!("s3cret")))
        .await;
    let stolen = agent.cookie_header();

    let logout = agent.send(Method::POST, "/logout", None).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let removal = logout.set_cookies();
    assert_eq!(removal.len(), 1);
    assert_eq!(
        attributes(&removal[0]),
        attributes(&set),
        "removal matches the set cookie"
    );
    assert!(removal[0].contains("Max-Age=0"));
    assert_eq!(logout.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(agent.cookie(), None);
    assert_eq!(
        store.count(SystemClock.now()).await.expect("count"),
        0,
        "record deleted"
    );

    let replay = server
        .client()
        .send(Method::GET, "/data/secret", stolen.as_deref(), None)
        .await;
    assert_eq!(
        replay.status,
        StatusCode::NOT_FOUND,
        "the old cookie is worthless"
    );
    assert!(replay.set_cookies().is_empty());
}

/// After login, the pre-login cookie is worthless and the new one works (G3).
pub async fn http_replay_after_login_is_anonymous<S: SessionStore + Clone>(store: S) {
    let (sessions, server) = setup(store).await;
    let mut agent = new_agent(&server, &sessions);
    agent.send(Method::PUT, "/data/n", Some(json!(1))).await;
    let planted = agent.cookie_header();
    let login = agent.send(Method::POST, "/login/alice", None).await;
    assert_eq!(login.status, StatusCode::NO_CONTENT);
    assert_ne!(agent.cookie_header(), planted);
    let mine = agent.send(Method::GET, "/data/n", None).await;
    assert_eq!(mine.json(), json!(1));
    let replay = server
        .client()
        .send(Method::GET, "/data/n", planted.as_deref(), None)
        .await;
    assert_eq!(replay.status, StatusCode::NOT_FOUND);
    let devices = server
        .client()
        .send(Method::GET, "/devices", planted.as_deref(), None)
        .await;
    assert_eq!(devices.status, StatusCode::UNAUTHORIZED);
}

/// Forged, malformed and oversized cookies are anonymous sessions: never a 500, never an
/// adopted id, nothing stored (G6, G11).
pub async fn http_bad_cookies_are_anonymous<S: SessionStore + Clone>(store: S) {
    let (sessions, server) = setup(store.clone()).await;
    let name = sessions.cookie_name().to_owned();
    let forged = sessio::SessionId::generate()
        .expect("random")
        .expose_cookie_value();
    let handle = SessionHandle::generate().expect("random").to_string();
    let long = "A".repeat(4_000);
    let cases = [
        format!("{name}={forged}"),
        format!("{name}={handle}"),
        format!("{name}="),
        name.clone(),
        format!("{name}={long}"),
        format!("{name}=%00%ff; {name}=\"quoted\""),
        format!("{name}={}", &forged[..42]),
        format!("{name}={}=", &forged[..42]),
        format!("{name}={}+", &forged[..42]),
        format!("{name}={}é", &forged[..41]),
        ";;;===;".to_owned(),
    ];
    for cookie in &cases {
        let client = server.client();
        let read = client
            .send(Method::GET, "/data/n", Some(cookie), None)
            .await;
        assert_eq!(read.status, StatusCode::NOT_FOUND, "cookie {cookie:?}");
        assert!(
            read.set_cookies().is_empty(),
            "cookie {cookie:?}: nothing to set"
        );
        let write = client
            .send(Method::PUT, "/data/n", Some(cookie), Some(json!(1)))
            .await;
        assert_eq!(write.status, StatusCode::NO_CONTENT, "cookie {cookie:?}");
        let set = write.set_cookies();
        assert_eq!(set.len(), 1);
        assert!(
            !set[0].contains(&forged),
            "cookie {cookie:?}: a forged id is never adopted"
        );
    }
    assert_eq!(
        store.count(SystemClock.now()).await.expect("count"),
        cases.len() as u64,
        "one new session per write, none for reads"
    );
    assert!(sessions.metrics().invalid_cookie > 0);
}

/// A request that never touches the session does no store I/O, sets no cookie and adds no
/// header; an anonymous read creates nothing (G9).
pub async fn http_untouched_requests_cost_nothing<S: SessionStore + Clone>(store: S) {
    let faulty = FaultyStore::new(store.clone());
    let sessions = Sessions::builder(faulty.clone()).build().expect("config");
    let server = TestServer::start(app(&sessions)).await;
    let mut agent = new_agent(&server, &sessions);
    agent.send(Method::PUT, "/data/n", Some(json!(1))).await;
    let calls = faulty.calls();
    let health = agent.send(Method::GET, "/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert!(health.set_cookies().is_empty());
    assert_eq!(health.header("vary"), None);
    assert_eq!(
        faulty.calls(),
        calls,
        "no store call for an untouched session"
    );

    let read = agent.send(Method::GET, "/data/n", None).await;
    assert_eq!(
        faulty.calls(),
        calls + 1,
        "one round trip to load, none to save"
    );
    assert!(
        read.set_cookies().is_empty(),
        "an unchanged session is not rewritten"
    );
    assert_eq!(read.header("vary").as_deref(), Some("Cookie"));

    let anonymous = server
        .client()
        .send(Method::GET, "/data/n", None, None)
        .await;
    assert_eq!(anonymous.status, StatusCode::NOT_FOUND);
    assert!(anonymous.set_cookies().is_empty());
    assert_eq!(store.count(SystemClock.now()).await.expect("count"), 1);
}

/// A flash set before a redirect is shown on the next request, once (G13).
pub async fn http_flash_is_shown_once<S: SessionStore + Clone>(store: S) {
    let (sessions, server) = setup(store).await;
    let mut agent = new_agent(&server, &sessions);
    let set = agent.send(Method::POST, "/flash/welcome", None).await;
    assert_eq!(set.status, StatusCode::SEE_OTHER);
    agent.send(Method::PUT, "/data/other", Some(json!(1))).await;
    let shown = agent.send(Method::GET, "/flashes", None).await;
    assert_eq!(shown.json(), json!(["welcome"]));
    let again = agent.send(Method::GET, "/flashes", None).await;
    assert_eq!(again.json(), json!([]));
}

/// While the store is down, writes get 503 and no cookie; when it is back, requests succeed
/// again without a restart (G12).
pub async fn http_store_outage_gives_503_then_recovers<S: SessionStore + Clone>(store: S) {
    let faulty = FaultyStore::new(store);
    let sessions = Sessions::builder(faulty.clone()).build().expect("config");
    let server = TestServer::start(app(&sessions)).await;
    let mut agent = new_agent(&server, &sessions);
    agent.send(Method::PUT, "/data/n", Some(json!(1))).await;
    let mut anonymous = new_agent(&server, &sessions);

    faulty.fail_all(true);
    let write = agent.send(Method::PUT, "/data/n", Some(json!(2))).await;
    assert_eq!(write.status, StatusCode::SERVICE_UNAVAILABLE);
    let create = anonymous.send(Method::PUT, "/data/n", Some(json!(1))).await;
    assert_eq!(create.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        create.set_cookies().is_empty(),
        "no cookie for a session that was not stored"
    );
    let logout = agent.send(Method::POST, "/logout", None).await;
    assert_eq!(
        logout.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a failed destroy is not a success"
    );
    assert!(agent.cookie().is_some());

    faulty.fail_all(false);
    let read = agent.send(Method::GET, "/data/n", None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(
        read.json(),
        json!(1),
        "the failed write did not half-happen"
    );
    let create = anonymous.send(Method::PUT, "/data/n", Some(json!(1))).await;
    assert_eq!(create.status, StatusCode::NO_CONTENT);
}

/// A slow request that loaded the session before a logout gets 409 and a removal cookie, and
/// does not bring the session back (G2).
pub async fn http_slow_request_cannot_resurrect_a_logout<S: SessionStore + Clone>(store: S) {
    let (sessions, server) = setup(store.clone()).await;
    let mut agent = new_agent(&server, &sessions);
    agent.send(Method::POST, "/login/alice", None).await;
    let cookie = agent.cookie_header();
    let client = server.client();
    let slow = tokio::spawn({
        let cookie = cookie.clone();
        async move {
            client
                .send(
                    Method::PUT,
                    "/data/late?delay_ms=300",
                    cookie.as_deref(),
                    Some(json!(1)),
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logout = agent.send(Method::POST, "/logout", None).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let slow = slow.await.expect("slow request");
    assert_eq!(slow.status, StatusCode::CONFLICT);
    let removal = slow.set_cookies();
    assert_eq!(removal.len(), 1);
    assert!(removal[0].contains("Max-Age=0"));
    assert_eq!(store.count(SystemClock.now()).await.expect("count"), 0);
    let replay = server
        .client()
        .send(Method::GET, "/data/late", cookie.as_deref(), None)
        .await;
    assert_eq!(replay.status, StatusCode::NOT_FOUND);
}

/// A handler that answers 5xx saves none of its pending changes.
pub async fn http_server_error_discards_pending_changes<S: SessionStore + Clone>(store: S) {
    let (sessions, server) = setup(store.clone()).await;
    let mut agent = new_agent(&server, &sessions);
    agent.send(Method::PUT, "/data/n", Some(json!(1))).await;
    let failed = agent.send(Method::PUT, "/fail", None).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    let read = agent.send(Method::GET, "/data/half-done", None).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);
    let anonymous = server.client().send(Method::PUT, "/fail", None, None).await;
    assert!(
        anonymous.set_cookies().is_empty(),
        "no session is created by a failed request"
    );
}

/// Devices over HTTP: list, end one, end the others (G4).
pub async fn http_devices_can_be_listed_and_ended<S: SessionStore + Clone>(store: S) {
    let (sessions, server) = setup(store).await;
    let mut laptop = new_agent(&server, &sessions);
    let mut phone = new_agent(&server, &sessions);
    let mut tablet = new_agent(&server, &sessions);
    for agent in [&mut laptop, &mut phone, &mut tablet] {
        assert_eq!(
            agent.send(Method::POST, "/login/alice", None).await.status,
            StatusCode::NO_CONTENT
        );
    }
    let listed = laptop.send(Method::GET, "/devices", None).await.json();
    let listed = listed.as_array().expect("list");
    assert_eq!(listed.len(), 3);
    let current: Vec<_> = listed
        .iter()
        .filter(|d| d["current"] == json!(true))
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["ip"], json!("127.0.0.1"));
    assert_eq!(current[0]["user_agent"], json!("sessio-testkit"));
    let phone_handle = phone.send(Method::GET, "/devices", None).await.json();
    let phone_handle = phone_handle
        .as_array()
        .and_then(|list| list.iter().find(|d| d["current"] == json!(true)))
        .and_then(|d| d["handle"].as_str())
        .expect("phone handle")
        .to_owned();
    let ended = laptop
        .send(Method::DELETE, &format!("/devices/{phone_handle}"), None)
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT);
    assert_eq!(
        phone.send(Method::GET, "/devices", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let unknown = laptop
        .send(Method::DELETE, &format!("/devices/{phone_handle}"), None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let others = laptop.send(Method::POST, "/revoke-others", None).await;
    assert_eq!(others.json(), json!({"revoked": 1}));
    assert_eq!(
        tablet.send(Method::GET, "/devices", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let remaining = laptop.send(Method::GET, "/devices", None).await.json();
    assert_eq!(remaining.as_array().map(Vec::len), Some(1));
}
