//! SQLite session store for [sessio](https://docs.rs/sessio): the embedded persistent default.
//!
//! One database file in WAL mode. Sessions survive restarts, and a `kill -9` of the process
//! loses no acknowledged save: a save is acknowledged only after its transaction committed
//! to the WAL.
//!
//! # Why this design
//!
//! - **rusqlite** (with SQLite bundled, so every machine runs the same, current SQLite): the
//!   thinnest safe binding, with no async runtime or ORM of its own.
//! - **Off the executor**: SQLite calls block, so they never run on tokio workers. One writer
//!   thread owns the only write connection; a few reader threads own read connections. WAL
//!   lets readers run while the writer writes.
//! - **Group commit**: the writer takes every write waiting in its queue (up to 128) and
//!   commits them in one transaction, each inside its own savepoint, so one failing operation
//!   rolls back alone. Under load this turns many fsyncs into one and keeps the WAL small,
//!   since the writer never starves the checkpointer.
//! - **Every contract operation is atomic** because it runs inside one transaction on the one
//!   writer connection: a patch checks that the record is live and writes it in the same
//!   transaction, so a destroy committed before can never be undone (G2).
//!
//! # Example
//!
//! ```no_run
//! use sessio::Sessions;
//! use sessio_sqlite::SqliteStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open("sessions.db").await?;
//! let sessions = Sessions::builder(store).build()?;
//! let layer = sessions.layer(); // add it to your router: `.layer(layer)`
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod schema;
mod store;
mod worker;

pub use crate::store::{SqliteStore, SqliteStoreBuilder};
