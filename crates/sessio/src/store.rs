//! The store contract: what every session store must do, and how atomically.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;

use crate::id::{IdDigest, SessionHandle};
use crate::patch::{CycleChange, Patch};
use crate::record::{Flash, Record, SessionInfo};
use crate::time::Timestamp;

/// Any error a store backend produces.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed. Handlers see it inside
/// [`SessionError::Store`](crate::SessionError::Store); the layer answers `503` when a save
/// fails with it (G12).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or did not answer in time. Nothing was changed that
    /// the caller was told about; retrying later is safe.
    #[error(
        "the session store is unreachable ({0}); check that it is running, requests succeed again once it is back"
    )]
    Unavailable(#[source] BoxError),
    /// The store answered with an error.
    #[error("the session store failed ({0})")]
    Backend(#[source] BoxError),
    /// A record could not be decoded: written by an unknown format version, or damaged.
    #[error("a session record could not be decoded ({0}); the session is treated as unusable")]
    Corrupt(String),
    /// The store holds as many sessions as it may (G8).
    #[error(
        "the session store is full ({capacity} live sessions); raise its capacity or shorten the idle timeout"
    )]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// The store does not offer this operation.
    #[error("this session store does not support {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// Wraps a connection-level failure.
    pub fn unavailable(error: impl Into<BoxError>) -> Self {
        Self::Unavailable(error.into())
    }

    /// Wraps any other backend failure.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }
}

/// What a conditional write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write happened.
    Done,
    /// No live record under the digest: it was destroyed, expired or never existed. Nothing
    /// was written (G2).
    Gone,
    /// The record was moved to a new id by a cycle while the caller held the old one (G3).
    /// Nothing was written.
    Moved,
    /// A record (or a moved marker) already exists under the digest a create or cycle
    /// wanted to use. Nothing was written; draw a new id and try again.
    Exists,
}

/// A session store: where records live between requests.
///
/// Every operation receives the [`IdDigest`] of an id, never the id itself (G6), and every
/// operation is **atomic in the store**: another process running the same operations at the
/// same time on the same store must never observe or produce a state the operation's
/// description rules out. Check-then-write from the client is not atomic; use a conditional
/// statement, a transaction, or a server-side script. The [`sessio-testkit`] conformance
/// suite checks each requirement below, including the concurrent interleavings.
///
/// Time is an argument (`now`) rather than read by the store, so that every node of a
/// cluster judges expiry by the clock of the request, and tests can move time.
///
/// # Why a generic trait with `async fn`
/// Implementations write plain `async fn`s. The layer erases the store type once, behind a
/// boxed future per store call (at most two per request), so that [`Session`](crate::Session)
/// and [`Sessions`](crate::Sessions) are plain, non-generic types in handlers and
/// application state. A store round trip costs far more than that one allocation.
///
/// [`sessio-testkit`]: https://docs.rs/sessio-testkit
pub trait SessionStore: Send + Sync + 'static {
    /// How many leading bits of a digest choose the partition its record lives in, for
    /// stores that partition by digest (Redis Cluster); at most 16. `0` (the default): the
    /// store does not partition.
    ///
    /// sessio then keeps a session in its partition for life: a cycle draws new ids until the
    /// new digest has the old one's route, so that moving the record stays one atomic
    /// operation in one partition, and handles start with their session's route, so that a
    /// handle alone finds its partition. With 8 bits, a cycle draws 256 ids on average (a few
    /// tens of microseconds), and a cycled id keeps 248 unpredictable bits.
    fn route_bits(&self) -> u8 {
        0
    }

    /// Returns the record under `digest`, or `None` if there is none, or it expired
    /// (`expires_at <= now`), or only a moved marker is left.
    fn load(
        &self,
        digest: &IdDigest,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Creates `record` under `digest`, and adds it to its user's index when it has one.
    ///
    /// Atomic: refuses with [`WriteOutcome::Exists`] if anything (a record, expired or not
    /// yet purged, or a moved marker) is under `digest`; record and user index change
    /// together or not at all. With `max_sessions_per_user`, the user's oldest sessions
    /// beyond that number are destroyed as part of the call.
    fn create(
        &self,
        digest: &IdDigest,
        record: &Record,
        max_sessions_per_user: Option<NonZeroU32>,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Applies `patch` to the record under `digest`, only if that record exists and has not
    /// expired at `now` (G2, G5). A *touch* (extending the idle deadline) is an `apply` whose
    /// patch carries only [`Patch::touch`]; stores may take a cheaper path for it.
    ///
    /// Atomic: the existence check and the write are one step, so a destroy that completes
    /// before this call can never be undone by it; two patches to different keys of the same
    /// record both persist. Returns [`WriteOutcome::Gone`] or [`WriteOutcome::Moved`]
    /// without writing anything when there is no live record.
    fn apply(
        &self,
        digest: &IdDigest,
        patch: &Patch,
        now: Timestamp,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Moves the live record under `old` to `new`, applying `change`, and leaves a moved
    /// marker under `old` until `change.moved_marker_until` (G3).
    ///
    /// Atomic: afterwards exactly one of the two digests holds the record. If `old` has no
    /// live record, returns `Gone` or `Moved` and writes nothing; if `new` is taken, returns
    /// `Exists` and writes nothing. The user index follows the record in the same step,
    /// including a change of user by `change.bind`.
    fn cycle(
        &self,
        old: &IdDigest,
        new: &IdDigest,
        change: &CycleChange,
        now: Timestamp,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Deletes the record under `digest` and its user index entry; returns whether a live
    /// record was deleted. Atomic: record and index entry go together (G1).
    fn destroy(
        &self,
        digest: &IdDigest,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes and returns every flash message of the live record under `digest`, or `None`
    /// if there is none. Atomic: two concurrent calls never both return the same message
    /// (G13).
    fn take_flashes(
        &self,
        digest: &IdDigest,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<Vec<Flash>>, StoreError>> + Send;

    /// Lists the live sessions of `user_id`, oldest first. Costs work proportional to that
    /// user's sessions, never to the store; never returns an expired or destroyed session
    /// (G4).
    fn list_user(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, StoreError>> + Send;

    /// Destroys the session of `user_id` with `handle`, record and index entry together;
    /// returns whether it was live.
    fn destroy_user_session(
        &self,
        user_id: &str,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Destroys every session of `user_id` except the one with handle `except`; returns
    /// how many live sessions were destroyed. Each session's record and index entry go
    /// together; sessions created after the call began may survive.
    fn destroy_user_sessions(
        &self,
        user_id: &str,
        except: Option<&SessionHandle>,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes up to `limit` records (and moved markers) that expired at or before `now`,
    /// with their index entries; returns how many records it deleted. Callers loop until it
    /// returns less than `limit`, so that a large purge never holds the store for long (G8).
    fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Counts live (unexpired) sessions.
    fn count(&self, now: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Counts the entries of `user_id`'s index as stored, including any whose record expired
    /// and was not purged yet. A diagnostic: the conformance suite uses it to show that purges
    /// and destroys leave no dead entries behind (G4).
    fn user_index_len(&self, user_id: &str)
    -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Admin: the user of the live session with `handle`, for ending it by handle alone.
    /// May cost work proportional to the store (it is for operators, not requests).
    fn find_handle(
        &self,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send {
        let _ = (handle, now);
        async { Err(StoreError::Unsupported("finding a session by handle alone")) }
    }

    /// Admin: destroys every session in the store; returns how many were live. Each
    /// destroy is atomic as [`SessionStore::destroy`] is (G2), so a request in flight cannot
    /// save its session back.
    fn destroy_all(&self, now: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = now;
        async { Err(StoreError::Unsupported("destroying every session")) }
    }

    /// Admin: how many records (or index entries, for stores that expire records natively)
    /// have expired and await a purge.
    fn count_expired(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = now;
        async { Err(StoreError::Unsupported("counting expired records")) }
    }

    /// Admin: the users with the most live sessions, most first, at most `limit`.
    fn top_users(
        &self,
        limit: usize,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send {
        let _ = (limit, now);
        async { Err(StoreError::Unsupported("counting sessions per user")) }
    }
}

/// The `limit` users with the most sessions, most first, ties in user id order: what
/// [`SessionStore::top_users`] answers, for stores that count per user themselves.
///
/// ```
/// let top = sessio::rank_top_users([("bob".into(), 2), ("alice".into(), 2), ("carol".into(), 5)], 2);
/// assert_eq!(top, [("carol".to_owned(), 5), ("alice".to_owned(), 2)]);
/// ```
pub fn rank_top_users(
    counts: impl IntoIterator<Item = (String, u64)>,
    limit: usize,
) -> Vec<(String, u64)> {
    let mut top: Vec<(String, u64)> = counts.into_iter().collect();
    top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(limit);
    top
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`SessionStore`] with its type erased, so sessions need not be generic over it.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn route_bits(&self) -> u8;
    fn load<'a>(
        &'a self,
        digest: &'a IdDigest,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>>;
    fn create<'a>(
        &'a self,
        digest: &'a IdDigest,
        record: &'a Record,
        max_sessions_per_user: Option<NonZeroU32>,
    ) -> BoxFuture<'a, Result<WriteOutcome, StoreError>>;
    fn apply<'a>(
        &'a self,
        digest: &'a IdDigest,
        patch: &'a Patch,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<WriteOutcome, StoreError>>;
    fn cycle<'a>(
        &'a self,
        old: &'a IdDigest,
        new: &'a IdDigest,
        change: &'a CycleChange,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<WriteOutcome, StoreError>>;
    fn destroy<'a>(
        &'a self,
        digest: &'a IdDigest,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn take_flashes<'a>(
        &'a self,
        digest: &'a IdDigest,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Vec<Flash>>, StoreError>>;
    fn list_user<'a>(
        &'a self,
        user_id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>>;
    fn destroy_user_session<'a>(
        &'a self,
        user_id: &'a str,
        handle: &'a SessionHandle,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn destroy_user_sessions<'a>(
        &'a self,
        user_id: &'a str,
        except: Option<&'a SessionHandle>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    fn purge_expired(&self, now: Timestamp, limit: usize)
    -> BoxFuture<'_, Result<u64, StoreError>>;
    fn count(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>>;
}

impl<S: SessionStore> DynStore for S {
    fn route_bits(&self) -> u8 {
        SessionStore::route_bits(self).min(16)
    }
    fn load<'a>(
        &'a self,
        digest: &'a IdDigest,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(SessionStore::load(self, digest, now))
    }
    fn create<'a>(
        &'a self,
        digest: &'a IdDigest,
        record: &'a Record,
        max_sessions_per_user: Option<NonZeroU32>,
    ) -> BoxFuture<'a, Result<WriteOutcome, StoreError>> {
        Box::pin(SessionStore::create(
            self,
            digest,
            record,
            max_sessions_per_user,
        ))
    }
    fn apply<'a>(
        &'a self,
        digest: &'a IdDigest,
        patch: &'a Patch,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<WriteOutcome, StoreError>> {
        Box::pin(SessionStore::apply(self, digest, patch, now))
    }
    fn cycle<'a>(
        &'a self,
        old: &'a IdDigest,
        new: &'a IdDigest,
        change: &'a CycleChange,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<WriteOutcome, StoreError>> {
        Box::pin(SessionStore::cycle(self, old, new, change, now))
    }
    fn destroy<'a>(
        &'a self,
        digest: &'a IdDigest,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::destroy(self, digest, now))
    }
    fn take_flashes<'a>(
        &'a self,
        digest: &'a IdDigest,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Vec<Flash>>, StoreError>> {
        Box::pin(SessionStore::take_flashes(self, digest, now))
    }
    fn list_user<'a>(
        &'a self,
        user_id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>> {
        Box::pin(SessionStore::list_user(self, user_id, now))
    }
    fn destroy_user_session<'a>(
        &'a self,
        user_id: &'a str,
        handle: &'a SessionHandle,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::destroy_user_session(
            self, user_id, handle, now,
        ))
    }
    fn destroy_user_sessions<'a>(
        &'a self,
        user_id: &'a str,
        except: Option<&'a SessionHandle>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(SessionStore::destroy_user_sessions(
            self, user_id, except, now,
        ))
    }
    fn purge_expired(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(SessionStore::purge_expired(self, now, limit))
    }
    fn count(&self, now: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(SessionStore::count(self, now))
    }
}
