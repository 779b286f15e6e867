//! The JSON API: a stable contract, documented in the crate README.

use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sessio::{FlashLevel, LoginInfo, Session, SessionError, SessionHandle, SessionInfo, Timestamp};

use crate::AppState;
use crate::csrf;

/// Longest `?delay_ms` a write may ask for.
const MAX_DELAY: Duration = Duration::from_millis(5_000);

/// An error answer: a status and `{"error": "..."}`.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        let status = match &error {
            SessionError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            SessionError::Ended => StatusCode::CONFLICT,
            SessionError::NotLoggedIn => StatusCode::UNAUTHORIZED,
            SessionError::TooLarge { .. } | SessionError::CookieTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            SessionError::NeedsServerStore(_) => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
            tracing::warn!(%error, "session operation failed");
        }
        Self::new(status, error.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Times as RFC 3339, in UTC.
pub fn rfc3339(time: Timestamp) -> String {
    let nanos = i128::from(time.as_millis()) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|time| {
            time.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// One device, as the API shows it.
pub fn device_json(info: &SessionInfo) -> Value {
    json!({
        "handle": info.handle.to_string(),
        "current": info.current,
        "created_at": rfc3339(info.created_at),
        "last_seen_at": rfc3339(info.last_seen_at),
        "expires_at": rfc3339(info.expires_at),
        "user_agent": info.user_agent,
        "ip": info.ip.map(|ip| ip.to_string()),
    })
}

/// Refuses a cross-site `POST`: it must carry `Content-Type: application/json` (which a
/// cross-site form cannot send without a CORS preflight) or the session's CSRF token in
/// `X-CSRF-Token`.
pub async fn require_json_or_token(session: Session, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || is_json(request.headers()) {
        return next.run(request).await;
    }
    let token = request
        .headers()
        .get("x-csrf-token")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    match token {
        Some(token) => match csrf::verify(&session, &token).await {
            Ok(true) => next.run(request).await,
            Ok(false) => forbidden(),
            Err(error) => ApiError::from(error).into_response(),
        },
        None => forbidden(),
    }
}

fn forbidden() -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "send Content-Type: application/json or the session's X-CSRF-Token",
    )
    .into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    info: LoginInfo,
    Json(credentials): Json<Credentials>,
) -> ApiResult<Json<Value>> {
    if !state
        .users
        .verify(&credentials.username, &credentials.password)
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong user name or password",
        ));
    }
    session.login(&credentials.username, info).await?;
    csrf::issue(&session).await?;
    Ok(Json(json!({ "user": credentials.username })))
}

async fn logout(session: Session) -> ApiResult<StatusCode> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(session: Session) -> ApiResult<Json<Value>> {
    let user = session.user_id().await?;
    let handle = session.handle().await?;
    match (user, handle) {
        (Some(user), Some(handle)) => {
            Ok(Json(json!({ "user": user, "session": handle.to_string() })))
        }
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "not logged in")),
    }
}

async fn sessions(session: Session) -> ApiResult<Json<Value>> {
    let devices = session.user_sessions().await?;
    Ok(Json(Value::Array(
        devices.iter().map(device_json).collect(),
    )))
}

async fn end_session(session: Session, Path(handle): Path<String>) -> ApiResult<StatusCode> {
    if session.user_id().await?.is_none() {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "not logged in"));
    }
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such session among yours");
    let handle = SessionHandle::parse(&handle).ok_or_else(not_found)?;
    if session.destroy_session(&handle).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

async fn revoke_others(session: Session) -> ApiResult<Json<Value>> {
    let revoked = session.destroy_other_sessions().await?;
    Ok(Json(json!({ "revoked": revoked.count() })))
}

async fn logout_everywhere(session: Session) -> ApiResult<Json<Value>> {
    let revoked = session.destroy_all_user_sessions().await?;
    Ok(Json(json!({ "revoked": revoked.count() })))
}

fn check_key(key: &str) -> ApiResult<()> {
    if key.starts_with('_') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "keys starting with `_` are reserved for the demo itself",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct Delay {
    delay_ms: Option<u64>,
}

async fn put_data(
    session: Session,
    Path(key): Path<String>,
    Query(delay): Query<Delay>,
    Json(value): Json<Value>,
) -> ApiResult<StatusCode> {
    check_key(&key)?;
    // Load before the delay, so a slow request holds a loaded session, as a real one would.
    let _ = session.get_value(&key).await?;
    if let Some(millis) = delay.delay_ms {
        tokio::time::sleep(Duration::from_millis(millis).min(MAX_DELAY)).await;
    }
    session.insert_value(&key, &value).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_all_data(session: Session) -> ApiResult<Json<Value>> {
    let mut entries = session.entries().await?;
    entries.retain(|key, _| !key.starts_with('_'));
    Ok(Json(Value::Object(entries)))
}

async fn get_data(session: Session, Path(key): Path<String>) -> ApiResult<Json<Value>> {
    check_key(&key)?;
    session
        .get_value(&key)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such key"))
}

async fn delete_data(session: Session, Path(key): Path<String>) -> ApiResult<StatusCode> {
    check_key(&key)?;
    session.remove_value(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Message {
    message: String,
}

async fn post_flash(session: Session, Json(message): Json<Message>) -> ApiResult<StatusCode> {
    session.flash(FlashLevel::Info, message.message).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_flash(session: Session) -> ApiResult<Json<Value>> {
    let flashes = session.take_flashes().await?;
    Ok(Json(Value::Array(
        flashes
            .into_iter()
            .map(|flash| Value::String(flash.message))
            .collect(),
    )))
}

/// The `/api` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/sessions", get(sessions))
        .route("/api/sessions/{handle}", delete(end_session))
        .route("/api/sessions/revoke-others", post(revoke_others))
        .route("/api/logout-everywhere", post(logout_everywhere))
        .route("/api/data", get(get_all_data))
        .route(
            "/api/data/{key}",
            get(get_data).put(put_data).delete(delete_data),
        )
        .route("/api/flash", get(get_flash).post(post_flash))
        .layer(axum::middleware::from_fn(require_json_or_token))
}
