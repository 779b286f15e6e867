//! The sessio demo: every guarantee of sessio, visible in a browser and through a JSON API.
//!
//! `cargo run --release -p sessio-demo` serves <http://127.0.0.1:3000> on a SQLite file. The
//! page logs you in, shows your session data and your devices, and signs devices out; the
//! JSON API (see the crate README) does the same for scripts and tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod csrf;
pub mod pages;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use sessio::Sessions;

use crate::users::Users;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Who may log in.
    pub users: Arc<Users>,
}

/// The whole app: page, forms, JSON API and health check, behind the session layer.
/// `/healthz` sits outside it: it touches no session and sets no cookie.
pub fn app(sessions: &Sessions, users: Users) -> Router {
    let state = AppState {
        users: Arc::new(users),
    };
    let with_sessions = pages::routes()
        .merge(api::routes())
        .layer(sessions.layer())
        .with_state(state);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(with_sessions)
}
