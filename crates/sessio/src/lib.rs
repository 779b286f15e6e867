//! Session management for tower and axum that ends sessions correctly.
//!
//! Most session libraries get the *ending* wrong: a destroy that leaves the cookie, a slow
//! request that writes a logged-out session back to life, an id that survives login, no way
//! to log a user out of their other devices. sessio makes each of those correct by
//! construction; the guarantees (G1 to G14) are listed in the repository's `CONTRACT.md`,
//! and every store passes one conformance suite that checks them.
//!
//! # Quick start
//!
//! ```no_run
//! use axum::{Router, routing::{get, post}, response::Redirect};
//! use sessio::{LoginInfo, MemoryStore, Session, SessionError, Sessions};
//!
//! async fn visits(session: Session) -> Result<String, SessionError> {
//!     let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", &visits).await?;
//!     Ok(format!("{visits} visits"))
//! }
//!
//! async fn login(session: Session, info: LoginInfo) -> Result<Redirect, SessionError> {
//!     session.login("alice", info).await?; // check the password first, of course
//!     Ok(Redirect::to("/"))
//! }
//!
//! async fn logout(session: Session) -> Result<Redirect, SessionError> {
//!     session.logout().await?; // record gone and cookie removed before the redirect
//!     Ok(Redirect::to("/"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let sessions = Sessions::builder(MemoryStore::new()).build()?;
//! let app = Router::new()
//!     .route("/", get(visits))
//!     .route("/login", post(login))
//!     .route("/logout", post(logout))
//!     .layer(sessions.layer());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # The life of a session
//!
//! 1. **A visitor arrives.** The [`SessionLayer`] reads the cookie and checks the id's
//!    syntax; a malformed, forged or unknown id is an anonymous session (G11). Nothing is
//!    loaded until a handler asks, and an anonymous visitor creates no record until data is
//!    inserted (G9).
//! 2. **Data changes.** [`Session::insert`], [`Session::remove`] and [`Session::clear`]
//!    change a local view; when the response is ready the layer saves them as one patch,
//!    applied by the store only if the session still exists (G2), key by key so that
//!    concurrent requests do not undo each other (G5).
//! 3. **The user logs in.** [`Session::login`] binds the user, records the device, and moves
//!    the session to a new id in one atomic store operation: an id an attacker planted
//!    before the login is dead after it (G3).
//! 4. **Time passes.** An idle timeout and an absolute lifetime, checked on the server at
//!    every load (G8). Idle extensions are written at most once per touch interval (G9).
//! 5. **The session ends.** [`Session::destroy`] (or [`Session::logout`]) deletes the record
//!    before it returns and makes the response remove the cookie with the exact attributes
//!    that set it (G1). A request that loaded the session before cannot save it back; its
//!    response gets `409` and a removal cookie instead (G2). The user's other devices can be
//!    listed and ended from a request ([`Session::user_sessions`],
//!    [`Session::destroy_other_sessions`], [`Session::destroy_all_user_sessions`]) or from
//!    anywhere else with [`Sessions`] (G4).
//!
//! # Stores
//!
//! A store implements [`SessionStore`]; each operation's atomicity requirement is in its
//! documentation. [`MemoryStore`] ships here and is fit for production on one process. Every
//! store runs the `sessio-testkit` conformance suite.
//!
//! # Cookie-only sessions
//!
//! [`Sessions::cookie_builder`] keeps the whole session in its cookie, sealed with AES-256-GCM
//! under a [`KeyRing`], with no store at all (G10). Ending such a session clears the browser's
//! cookie; to also reject copies of it, give it a revocation store
//! ([`SessionsBuilder::revocation_store`]), at the cost of one small store read per request.
//! They have no device list and keep no concurrent changes apart; see
//! [`Sessions::cookie_builder`] for what they cannot do.
//!
//! # Ids and secrets
//!
//! Ids are 256 bits from the operating system's CSPRNG. Stores only see their SHA-256 digest
//! (optionally HMAC-SHA-256 with a pepper), so a dump of the store holds no usable cookie
//! (G6). Ids never appear in logs, `Debug` output, errors or events (G14).
//!
//! # Feature flags
//!
//! - `axum` (default): the [`Session`] and [`LoginInfo`] extractors and `IntoResponse` for
//!   [`SessionError`]. Without it, take the [`Session`] from the request extensions.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
mod cookie;
mod error;
mod events;
#[cfg(feature = "axum")]
mod extract;
mod id;
mod memory;
mod patch;
mod record;
mod revocation;
mod sealed;
mod service;
mod session;
mod sessions;
mod store;
mod time;

pub use crate::cookie::SameSite;
pub use crate::error::{ConfigError, SessionError};
pub use crate::events::{Event, EventKind, EventListener, Metrics};
#[cfg(feature = "axum")]
pub use crate::extract::MissingSessionLayer;
pub use crate::id::{IdDigest, InvalidHandle, RandomError, SessionHandle, SessionId};
pub use crate::memory::{MemoryStore, MemoryStoreBuilder};
pub use crate::patch::{CycleChange, Patch, Touch};
pub use crate::record::{
    Data, DataMap, ExpiryOverrides, Flash, FlashLevel, Record, SessionInfo, UserBinding,
};
#[doc(hidden)]
pub use crate::sealed::fuzzing;
pub use crate::sealed::{CookieKey, KeyRing, MAX_COOKIE_BYTES};
pub use crate::service::{ResponseFuture, SessionLayer, SessionService};
pub use crate::session::{Commit, LoginInfo, Session};
pub use crate::sessions::{EndedSessions, Sessions, SessionsBuilder};
pub use crate::store::{BoxError, SessionStore, StoreError, WriteOutcome, rank_top_users};
pub use crate::time::{Clock, SystemClock, Timestamp};
