//! The benchmark routes, shared by the server binary (`sessio-bench-server`) and the
//! in-process criterion benchmarks (`benches/hot_paths.rs`), so both measure the same handlers.
//!
//! - `GET /read`: reads the integer `n` from the session;
//! - `GET /write`: increments `n`;
//! - `GET /new`: a visitor without a cookie sets `n = 0`, creating a session.
//!
//! The session routers come without their layer: add `sessions.layer()` or a
//! `tower_sessions::SessionManagerLayer`.
#![forbid(unsafe_code)]

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// The routes without sessions: the ceiling.
pub fn bare_routes() -> Router {
    Router::new()
        .route("/read", get(|| async { "0" }))
        .route("/write", get(|| async { "1" }))
        .route("/new", get(|| async { "0" }))
}

/// The routes with sessio's `Session` extractor; needs `sessions.layer()`.
pub fn sessio_routes() -> Router {
    Router::new()
        .route("/read", get(with_sessio::read))
        .route("/write", get(with_sessio::write))
        .route("/new", get(with_sessio::new))
}

/// The routes with tower-sessions' `Session` extractor; needs its `SessionManagerLayer`.
pub fn tower_routes() -> Router {
    Router::new()
        .route("/read", get(with_tower::read))
        .route("/write", get(with_tower::write))
        .route("/new", get(with_tower::new))
}

mod with_sessio {
    use sessio::{Session, SessionError};

    pub async fn read(session: Session) -> Result<String, SessionError> {
        Ok(session.get::<i64>("n").await?.unwrap_or(-1).to_string())
    }

    pub async fn write(session: Session) -> Result<String, SessionError> {
        let n = session.get::<i64>("n").await?.unwrap_or(0) + 1;
        session.insert("n", &n).await?;
        Ok(n.to_string())
    }

    pub async fn new(session: Session) -> Result<&'static str, SessionError> {
        session.insert("n", &0).await?;
        Ok("0")
    }
}

mod with_tower {
    use super::StatusCode;
    use tower_sessions::Session;

    fn failed(error: impl std::fmt::Display) -> (StatusCode, String) {
        (StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }

    pub async fn read(session: Session) -> Result<String, (StatusCode, String)> {
        let n: Option<i64> = session.get("n").await.map_err(failed)?;
        Ok(n.unwrap_or(-1).to_string())
    }

    pub async fn write(session: Session) -> Result<String, (StatusCode, String)> {
        let n: i64 = session.get("n").await.map_err(failed)?.unwrap_or(0) + 1;
        session.insert("n", n).await.map_err(failed)?;
        Ok(n.to_string())
    }

    pub async fn new(session: Session) -> Result<&'static str, (StatusCode, String)> {
        session.insert("n", 0).await.map_err(failed)?;
        Ok("0")
    }
}
