//! PostgreSQL session store for [sessio](https://docs.rs/sessio), for apps that run on many
//! machines.
//!
//! # Why this design
//!
//! - **tokio-postgres with a deadpool pool**: the native async client (no ORM, no macros, no
//!   compile-time database), and the smallest well-kept pool for it. Statements are prepared
//!   once per connection and cached.
//! - **One statement or one short transaction per operation.** A patch is one `UPDATE … WHERE
//!   digest = $1 AND NOT moved AND expires_at > $now` that merges the changed keys into the
//!   `jsonb` data in place (`(data - removed) || set`), so the liveness check and the write are
//!   one atomic step and concurrent patches to different keys both land (G2, G5). A cycle is
//!   one transaction holding the old row's lock.
//! - **Indexed columns** for the user index and the expiry, so device lists cost work
//!   proportional to the user's sessions and purges are range deletes (G4, G8).
//! - **A versioned schema** created on first use, in a schema of your choice, and a record
//!   body with a format version (see [`sessio::codec`]).
//!
//! # Example
//!
//! ```no_run
//! use sessio::Sessions;
//! use sessio_postgres::PostgresStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresStore::connect("postgres://app@localhost/app").await?;
//! let sessions = Sessions::builder(store).build()?;
//! let layer = sessions.layer(); // add it to your router: `.layer(layer)`
//! # Ok(()) }
//! ```
//!
//! Expired rows are deleted by a background task every minute (in batches, so live requests
//! are never held up); [`Sessions::purge_expired`](sessio::Sessions::purge_expired) does the
//! same on demand.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod queries;
mod store;

pub use crate::store::{PostgresStore, PostgresStoreBuilder};
