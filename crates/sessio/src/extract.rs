//! axum integration: the [`Session`] and [`LoginInfo`] extractors, and [`SessionError`] as a
//! response.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::USER_AGENT;
use http::request::Parts;

use crate::error::SessionError;
use crate::session::{LoginInfo, Session};

/// The route has no [`SessionLayer`](crate::SessionLayer): a wiring mistake, answered with
/// `500` and said plainly in the log.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "the Session extractor needs the sessio SessionLayer on this route: add `.layer(sessions.layer())` to the router"
)]
pub struct MissingSessionLayer;

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!(target: "sessio", "{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LoginInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            user_agent: parts
                .headers
                .get(USER_AGENT)
                .and_then(|agent| agent.to_str().ok())
                .map(str::to_owned),
            ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip()),
        })
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Ended => StatusCode::CONFLICT,
            Self::NotLoggedIn => StatusCode::UNAUTHORIZED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(target: "sessio", error = %self, "session operation failed");
        }
        (status, self.to_string()).into_response()
    }
}
