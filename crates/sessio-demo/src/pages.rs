//! The HTML page and its forms: everything works without JavaScript, as POST and redirect.

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sessio::{Flash, FlashLevel, LoginInfo, Session, SessionError, SessionHandle};

use crate::AppState;
use crate::api::rfc3339;
use crate::csrf;

/// No scripts at all, styles inline, forms only to this site, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A page error: the status and a short page, never a stack of details.
pub struct PageError(StatusCode, String);

impl From<SessionError> for PageError {
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
        Self(status, error.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>Error</title><p>{}</p><p><a href=/>Back</a></p>",
            escape(&self.1)
        );
        (self.0, secure_headers(), Html(body)).into_response()
    }
}

fn secure_headers() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ]
}

const STYLE: &str = r#"
body{font:16px/1.5 system-ui,sans-serif;max-width:54rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem}
.muted{color:#6e6e73} table{border-collapse:collapse;width:100%} td,th{text-align:left;padding:.4rem .5rem;border-bottom:1px solid #e5e5ea;vertical-align:top}
th{font-weight:600;font-size:.85rem;color:#6e6e73} code{font-size:.85rem}
.flash{padding:.6rem .9rem;border-radius:.4rem;margin:.6rem 0}
.info{background:#e8f1fd}.success{background:#e3f6e8}.warning{background:#fdf4dc}.error{background:#fde7e7}
form.inline{display:inline} input{font:inherit;padding:.3rem .5rem} button{font:inherit;padding:.3rem .8rem;cursor:pointer}
.current{font-weight:600;color:#1a7f37} .actions{display:flex;gap:.6rem;flex-wrap:wrap;margin-top:1rem}
"#;

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\"><title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    );
    (secure_headers(), Html(html)).into_response()
}

fn flashes_html(flashes: &[Flash]) -> String {
    flashes
        .iter()
        .map(|flash| {
            let level = match flash.level {
                FlashLevel::Info => "info",
                FlashLevel::Success => "success",
                FlashLevel::Warning => "warning",
                FlashLevel::Error => "error",
            };
            format!(
                "<p class=\"flash {level}\" role=status>{}</p>",
                escape(&flash.message)
            )
        })
        .collect()
}

fn hidden_token(token: &str) -> String {
    format!("<input type=hidden name=csrf value=\"{}\">", escape(token))
}

async fn home(session: Session) -> Result<Response, PageError> {
    let flashes = flashes_html(&session.take_flashes().await?);
    let Some(user) = session.user_id().await? else {
        return Ok(page(
            "sessio demo",
            &format!(
                "<h1>sessio demo</h1><p class=muted>Sessions that end when you say so.</p>{flashes}
                <form method=post action=/login>
                  <p><label>User <input name=username autocomplete=username required></label>
                  <label>Password <input name=password type=password autocomplete=current-password required></label>
                  <button>Log in</button></p>
                </form>
                <p class=muted>Try <code>alice</code> / <code>wonderland</code> in two browsers, then sign one out from the other.</p>"
            ),
        ));
    };
    let token = csrf::token(&session).await?.unwrap_or_default();
    let hidden = hidden_token(&token);
    let mut entries = session.entries().await?;
    entries.retain(|key, _| !key.starts_with('_'));
    let data: String = entries
        .iter()
        .map(|(key, value)| {
            format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td><form class=inline method=post action=\"/data/{}/delete\">{hidden}<button>remove</button></form></td></tr>",
                escape(key),
                escape(&value.to_string()),
                escape(&percent_encode(key)),
            )
        })
        .collect();
    let devices = match session.user_sessions().await {
        Ok(devices) => Some(
            devices
                .iter()
                .map(|device| {
                    let marker = if device.current {
                        "<span class=current>this device</span>".to_owned()
                    } else {
                        format!(
                            "<form class=inline method=post action=\"/sessions/{}/revoke\">{hidden}<button>sign out</button></form>",
                            device.handle
                        )
                    };
                    format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{marker}</td></tr>",
                        readable(device.created_at),
                        readable(device.last_seen_at),
                        escape(device.user_agent.as_deref().unwrap_or("unknown")),
                        device.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    )
                })
                .collect::<String>(),
        ),
        // Cookie-only sessions have no device list.
        Err(SessionError::NeedsServerStore(_)) => None,
        Err(error) => return Err(error.into()),
    };
    let devices = match devices {
        Some(rows) => format!(
            "<table><tr><th>Created</th><th>Last seen</th><th>User agent</th><th>IP</th><th></th></tr>{rows}</table>"
        ),
        None => "<p class=muted>This demo runs cookie-only sessions: they live in cookies only, so there is no list of devices. Signing out the others still works, through the revocation store.</p>".to_owned(),
    };
    Ok(page(
        "sessio demo",
        &format!(
            "<h1>Hello, {user}</h1><p class=muted>You are logged in. Everything below lives in your session.</p>{flashes}
            <h2>Your session data</h2>
            <table><tr><th>Key</th><th>Value (JSON)</th><th></th></tr>{data}</table>
            <form method=post action=/data>{hidden}<p>
              <input name=key placeholder=key required> <input name=value placeholder='value (JSON or text)'>
              <button>Add</button></p></form>
            <h2>Your devices</h2>
            {devices}
            <div class=actions>
              <form method=post action=/sessions/revoke-others>{hidden}<button>Sign out all other devices</button></form>
              <form method=post action=/logout-everywhere>{hidden}<button>Sign out everywhere</button></form>
              <form method=post action=/logout>{hidden}<button>Log out</button></form>
            </div>",
            user = escape(&user)
        ),
    ))
}

/// `2026-12-04 21:19:17 UTC`: the RFC 3339 time, to the second, for people.
fn readable(time: sessio::Timestamp) -> String {
    let text = rfc3339(time);
    match text.get(..19) {
        Some(seconds) => format!("{} UTC", seconds.replacen('T', " ", 1)),
        None => text,
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    info: LoginInfo,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    if !csrf::same_origin(&headers) {
        return Err(PageError(
            StatusCode::FORBIDDEN,
            "cross-site login refused".into(),
        ));
    }
    if state.users.verify(&form.username, &form.password) {
        session.login(&form.username, info).await?;
        csrf::issue(&session).await?;
        session
            .flash(FlashLevel::Success, format!("Welcome, {}.", form.username))
            .await?;
    } else {
        session
            .flash(FlashLevel::Error, "Wrong user name or password.")
            .await?;
    }
    Ok(Redirect::to("/").into_response())
}

#[derive(Deserialize)]
struct TokenForm {
    csrf: String,
}

/// Checks the form's token against the session's; a stale or forged form is refused.
async fn checked(session: &Session, token: &str) -> Result<(), PageError> {
    if session.user_id().await?.is_none() {
        return Err(PageError(
            StatusCode::UNAUTHORIZED,
            "You are not logged in (any more).".into(),
        ));
    }
    if csrf::verify(session, token).await? {
        Ok(())
    } else {
        Err(PageError(
            StatusCode::FORBIDDEN,
            "This form is stale or was not sent by this site.".into(),
        ))
    }
}

async fn logout(session: Session, Form(form): Form<TokenForm>) -> Result<Response, PageError> {
    checked(&session, &form.csrf).await?;
    session.logout().await?;
    // A new, anonymous session carries the goodbye; the old one is gone.
    session.flash(FlashLevel::Info, "Logged out.").await?;
    Ok(Redirect::to("/").into_response())
}

#[derive(Deserialize)]
struct DataForm {
    csrf: String,
    key: String,
    value: String,
}

async fn add_data(session: Session, Form(form): Form<DataForm>) -> Result<Response, PageError> {
    checked(&session, &form.csrf).await?;
    let key = form.key.trim();
    if key.is_empty() || key.starts_with('_') {
        session
            .flash(
                FlashLevel::Warning,
                "Keys must be non-empty and not start with _.",
            )
            .await?;
        return Ok(Redirect::to("/").into_response());
    }
    let value = serde_json::from_str(&form.value)
        .unwrap_or_else(|_| serde_json::Value::String(form.value.clone()));
    session.insert_value(key, &value).await?;
    Ok(Redirect::to("/").into_response())
}

async fn remove_data(
    session: Session,
    Path(key): Path<String>,
    Form(form): Form<TokenForm>,
) -> Result<Response, PageError> {
    checked(&session, &form.csrf).await?;
    if !key.starts_with('_') {
        session.remove_value(&key).await?;
    }
    Ok(Redirect::to("/").into_response())
}

async fn revoke(
    session: Session,
    Path(handle): Path<String>,
    Form(form): Form<TokenForm>,
) -> Result<Response, PageError> {
    checked(&session, &form.csrf).await?;
    let ended = match SessionHandle::parse(&handle) {
        Some(handle) => session.destroy_session(&handle).await?,
        None => false,
    };
    let message = if ended {
        "Signed out that device."
    } else {
        "That device was already signed out."
    };
    if session.user_id().await?.is_some() {
        session.flash(FlashLevel::Success, message).await?;
    }
    Ok(Redirect::to("/").into_response())
}

async fn revoke_others(
    session: Session,
    Form(form): Form<TokenForm>,
) -> Result<Response, PageError> {
    checked(&session, &form.csrf).await?;
    let ended = session.destroy_other_sessions().await?;
    session
        .flash(
            FlashLevel::Success,
            match ended.count() {
                Some(count) => format!("Signed out {count} other device(s)."),
                None => "Signed out every other device.".to_owned(),
            },
        )
        .await?;
    Ok(Redirect::to("/").into_response())
}

async fn logout_everywhere(
    session: Session,
    Form(form): Form<TokenForm>,
) -> Result<Response, PageError> {
    checked(&session, &form.csrf).await?;
    let ended = session.destroy_all_user_sessions().await?;
    session
        .flash(
            FlashLevel::Info,
            match ended.count() {
                Some(count) => format!("Signed out everywhere ({count} session(s))."),
                None => "Signed out everywhere.".to_owned(),
            },
        )
        .await?;
    Ok(Redirect::to("/").into_response())
}

/// The page and its form targets.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/data", post(add_data))
        .route("/data/{key}/delete", post(remove_data))
        .route("/sessions/{handle}/revoke", post(revoke))
        .route("/sessions/revoke-others", post(revoke_others))
        .route("/logout-everywhere", post(logout_everywhere))
}
