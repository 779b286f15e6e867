//! Redis and Valkey session store for [sessio](https://docs.rs/sessio), standalone or Redis
//! Cluster.
//!
//! # Why this design
//!
//! - **redis-rs** (the `redis` crate, kept by the Redis organisation): async, one multiplexed
//!   connection that pipelines concurrent requests (no pool to size), a reconnecting
//!   connection manager for standalone servers, cluster support, and scripts called by hash
//!   with automatic loading. Built with only the features used here. fred is as fast but a
//!   much larger build.
//! - **One Lua script per operation**, so each is one round trip and one atomic step: a
//!   patch checks that the record is live and writes it in the same script (G2), one hash
//!   field per data key so concurrent patches to different keys both land (G5).
//! - **Native TTL** for expiry: every record key expires at its deadline; sessio still
//!   compares the deadline at every load (G8).
//! - **Cluster-ready key layout.** A session lives under the hash tag of its *route* (the
//!   first byte of its digest: 256 routes spread over every node), with its user's index
//!   entries for that route. sessio keeps a session in its route for life (see
//!   [`SessionStore::route_bits`](sessio::SessionStore::route_bits)), so every operation on
//!   a session, a cycle included, touches one slot. A user's *directory* (its own slot)
//!   lists the routes holding the user's sessions, so device lists and "log out everywhere"
//!   cost one round trip plus one per route the user has sessions in (G4).
//! - **Indexes prune themselves**: every script that touches a user index first drops its
//!   expired members, and a background task prunes the rest, so indexes never grow with
//!   dead entries (G4).
//!
//! Logging in writes the user's directory before the session (two round trips); everything
//! else is one, except a touch that extends a session more than seven days past what its
//! directory entry covers (three, at most once a week per session).
//!
//! # Example
//!
//! ```no_run
//! use sessio::Sessions;
//! use sessio_redis::RedisStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
//! // or: RedisStore::connect("redis+cluster://10.0.0.1:7000,10.0.0.2:7000").await?;
//! let sessions = Sessions::builder(store).build()?;
//! let layer = sessions.layer(); // add it to your router: `.layer(layer)`
//! # Ok(()) }
//! ```
//!
//! Needs Redis 6.2 or later, or any Valkey (for `COPY` and `ZADD GT`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod scripts;
mod store;

pub use crate::store::{RedisStore, RedisStoreBuilder};
