//! CSRF tokens for the HTML forms, bound to the session.
//!
//! A token is drawn at login and kept in the session under [`CSRF_KEY`]; every form of a
//! logged-in page carries it and every form handler compares it in constant time. Logging out
//! ends the session and so the token. The login form has no session to bind a token to (and
//! creating one per visitor would store a record for every anonymous page view), so it is
//! checked by origin instead: browsers send `Origin` (or `Sec-Fetch-Site`) on cross-site
//! form posts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use sessio::{Session, SessionError};
use subtle::ConstantTimeEq;

/// The session key holding the CSRF token. Keys starting with `_` are the demo's own and are
/// hidden from the data views.
pub const CSRF_KEY: &str = "_csrf";

/// Draws a token and keeps it in the session.
pub async fn issue(session: &Session) -> Result<String, SessionError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| {
        SessionError::Store(sessio::StoreError::backend(
            "no randomness for a CSRF token",
        ))
    })?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    session.insert(CSRF_KEY, &token).await?;
    Ok(token)
}

/// The session's token, if it has one.
pub async fn token(session: &Session) -> Result<Option<String>, SessionError> {
    session.get(CSRF_KEY).await
}

/// Whether `presented` is the session's token.
pub async fn verify(session: &Session, presented: &str) -> Result<bool, SessionError> {
    Ok(match token(session).await? {
        Some(expected) => expected.as_bytes().ct_eq(presented.as_bytes()).into(),
        None => false,
    })
}

/// Whether a form post comes from this site: no cross-site `Sec-Fetch-Site`, and an `Origin`,
/// if any, naming the `Host` the request was sent to.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}
