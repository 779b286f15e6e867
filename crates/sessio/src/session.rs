//! [`Session`]: what a handler sees of its request's session.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::{Mutex, MutexGuard};
use tracing::Instrument;

use crate::cookie::Incoming;
use crate::error::SessionError;
use crate::events::{Event, EventKind};
use crate::id::{IdDigest, SessionHandle, SessionId};
use crate::patch::{CycleChange, Patch, Touch};
use crate::record::{
    Data, DataMap, ExpiryOverrides, Flash, FlashLevel, Record, SessionInfo, UserBinding,
};
use crate::sessions::{EndedSessions, Shared};
use crate::store::{StoreError, WriteOutcome};
use crate::time::Timestamp;

mod sealed;

/// Longest `User-Agent` kept for the device list; longer ones are cut, so a client cannot
/// grow its record without bound.
const MAX_USER_AGENT: usize = 512;
/// How often a create or cycle draws a new id when the store says it is taken. With 256-bit
/// ids this never happens; the bound only keeps a broken store from looping forever.
const ID_ATTEMPTS: usize = 3;

/// Where the login request came from, recorded for the device list (G4).
///
/// With the `axum` feature, `LoginInfo` is an extractor that fills both fields from the
/// request: the `User-Agent` header and the peer address from
/// `axum::extract::ConnectInfo<SocketAddr>` when the server was started with it. Behind a
/// proxy, set `ip` from the header your proxy sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginInfo {
    /// The `User-Agent` header of the login request.
    pub user_agent: Option<String>,
    /// The client address of the login request.
    pub ip: Option<IpAddr>,
}

impl LoginInfo {
    fn bind(self, user_id: &str) -> UserBinding {
        let user_agent = self.user_agent.map(|mut agent| {
            if agent.len() > MAX_USER_AGENT {
                let mut cut = MAX_USER_AGENT;
                while !agent.is_char_boundary(cut) {
                    cut -= 1;
                }
                agent.truncate(cut);
            }
            agent
        });
        UserBinding {
            user_id: user_id.to_owned(),
            user_agent,
            ip: self.ip,
        }
    }
}

/// What the response must do with the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CookieChange {
    Keep,
    /// Send the current id (new, cycled, or with a refreshed `Max-Age`).
    Set,
    /// Make the browser drop the cookie.
    Remove,
}

/// A session this request knows to exist.
struct Live {
    key: LiveKey,
    record: Record,
}

/// What finds the session again: its id (server stores), or nothing but the record itself
/// (cookie-only sessions).
enum LiveKey {
    Server { id: SessionId, digest: IdDigest },
    Sealed { issued_at: Timestamp },
}

impl Live {
    /// The id and digest of a server-stored session.
    fn server(&self) -> Result<(&SessionId, &IdDigest), SessionError> {
        match &self.key {
            LiveKey::Server { id, digest } => Ok((id, digest)),
            LiveKey::Sealed { .. } => Err(SessionError::NeedsServerStore(
                "a cookie-only session has no server record",
            )),
        }
    }
}

enum Stored {
    /// Nothing asked for the session yet.
    Unloaded,
    /// No record: an anonymous visitor, or a session ended during this request.
    Absent,
    Present(Box<Live>),
}

/// Changes not yet saved.
#[derive(Default)]
struct Pending {
    clear: bool,
    changes: BTreeMap<String, Option<Box<RawValue>>>,
    flashes: Vec<Flash>,
    expiry: Option<ExpiryOverrides>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.clear && self.changes.is_empty() && self.flashes.is_empty() && self.expiry.is_none()
    }

    fn take_patch(&mut self) -> Patch {
        let pending = std::mem::take(self);
        Patch {
            clear: pending.clear,
            changes: pending.changes.into_iter().collect(),
            flashes: pending.flashes,
            expiry: pending.expiry,
            touch: None,
        }
    }
}

struct State {
    stored: Stored,
    pending: Pending,
    cookie: CookieChange,
    /// Cookie-only sessions: the cookie must be sealed again even without pending changes
    /// (taken flashes, an older key, a new identity).
    reseal: bool,
}

struct Inner {
    shared: Arc<Shared>,
    incoming: Incoming,
    accessed: AtomicBool,
    state: Mutex<State>,
}

/// The session of the current request.
///
/// Get it in an axum handler by naming it as an argument (feature `axum`), or from the
/// request extensions in any tower service behind [`SessionLayer`](crate::SessionLayer).
/// Clones share the same session.
///
/// The session is loaded from the store the first time a method needs it, and changes are
/// saved as one patch when the response is ready. Operations that change the session's
/// identity (`destroy`, `cycle_id`, `regenerate`, `login`, and the device operations) reach
/// the store before they return, so a handler that awaits them can rely on them (G1, G3).
///
/// ```
/// use axum::{Router, routing::post, response::Redirect};
/// use sessio::{LoginInfo, Session, SessionError};
///
/// async fn login(session: Session, info: LoginInfo) -> Result<Redirect, SessionError> {
///     // ...check the password first...
///     session.login("alice", info).await?; // new id, bound to alice
///     Ok(Redirect::to("/"))
/// }
///
/// async fn logout(session: Session) -> Result<Redirect, SessionError> {
///     session.logout().await?; // record deleted and cookie removed before the redirect
///     Ok(Redirect::to("/"))
/// }
///
/// let app: Router = Router::new()
///     .route("/login", post(login))
///     .route("/logout", post(logout));
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// What [`Session::commit`] decided for the response.
#[derive(Debug, Default)]
#[must_use = "a commit's cookie and status must be applied to the response"]
pub struct Commit {
    /// A `Set-Cookie` header to add.
    pub set_cookie: Option<HeaderValue>,
    /// Replace the response with this status: the save failed (`503`) or was refused because
    /// the session ended during the request (`409`).
    pub replace_status: Option<StatusCode>,
    /// Why the save failed, if it did.
    pub error: Option<SessionError>,
    /// Whether the session was used at all; a response that depends on the session gets
    /// `Vary: Cookie`.
    pub accessed: bool,
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, incoming: Incoming) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                incoming,
                accessed: AtomicBool::new(false),
                state: Mutex::new(State {
                    stored: Stored::Unloaded,
                    pending: Pending::default(),
                    cookie: CookieChange::Keep,
                    reseal: false,
                }),
            }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Locks the state for one operation; operations on one session run one at a time.
    async fn state(&self) -> MutexGuard<'_, State> {
        self.inner.accessed.store(true, Ordering::Relaxed);
        self.inner.state.lock().await
    }

    pub(crate) fn was_accessed(&self) -> bool {
        self.inner.accessed.load(Ordering::Relaxed)
    }

    fn store_failed(&self, error: StoreError) -> SessionError {
        self.shared().events.kind(EventKind::StoreFailed);
        error.into()
    }

    fn emit(&self, kind: EventKind, record: Option<&Record>) {
        self.shared().events.emit(Event {
            kind,
            user_id: record.and_then(Record::user_id),
            handle: record.map(|record| record.handle),
            count: 1,
        });
    }

    /// Loads the record on first use (G9: never before).
    async fn load(&self, state: &mut State) -> Result<(), SessionError> {
        if !matches!(state.stored, Stored::Unloaded) {
            return Ok(());
        }
        let id = match &self.inner.incoming {
            Incoming::Id(id) => id,
            Incoming::Sealed(value) => return self.open_sealed(state, value).await,
            Incoming::Invalid => {
                self.shared().events.kind(EventKind::InvalidCookie);
                state.stored = Stored::Absent;
                return Ok(());
            }
            Incoming::Missing => {
                state.stored = Stored::Absent;
                return Ok(());
            }
        };
        let shared = self.shared();
        let digest = shared.hasher.digest(id);
        let now = shared.now();
        let store = shared.store()?;
        let record = store
            .load(&digest, now)
            .instrument(tracing::debug_span!("sessio.load"))
            .await
            .map_err(|error| self.store_failed(error))?;
        state.stored = match record {
            // The store checked `expires_at`; check again against the settings in force now,
            // which may be stricter than when the record was written (G8).
            Some(record)
                if shared.deadline(record.created_at, record.last_seen_at, &record.expiry)
                    <= now =>
            {
                self.emit(EventKind::Expired, Some(&record));
                // Best effort: the record is dead either way, and purge removes it later.
                let _ = store.destroy(&digest, now).await;
                Stored::Absent
            }
            Some(record) => {
                self.emit(EventKind::Loaded, Some(&record));
                Stored::Present(Box::new(Live {
                    key: LiveKey::Server {
                        id: id.clone(),
                        digest,
                    },
                    record,
                }))
            }
            None => Stored::Absent,
        };
        Ok(())
    }

    fn corrupt(&self, error: serde_json::Error) -> SessionError {
        self.store_failed(StoreError::Corrupt(error.to_string()))
    }

    /// Reads `key` as a `T`; `None` if the key is not set.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        let raw = lookup(&state, key).map_err(|error| self.corrupt(error))?;
        raw.map(|raw| serde_json::from_str(raw.get()))
            .transpose()
            .map_err(|source| SessionError::Deserialize {
                key: key.to_owned(),
                source,
            })
    }

    /// Reads `key` as raw JSON; `None` if the key is not set.
    pub async fn get_value(&self, key: &str) -> Result<Option<serde_json::Value>, SessionError> {
        self.get(key).await
    }

    /// Every key and its value, as JSON.
    pub async fn entries(
        &self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        let data = materialize(&state).map_err(|error| self.corrupt(error))?;
        data.iter()
            .map(|(key, raw)| {
                serde_json::from_str(raw.get())
                    .map(|value| (key.clone(), value))
                    .map_err(|source| SessionError::Deserialize {
                        key: key.clone(),
                        source,
                    })
            })
            .collect()
    }

    /// Sets `key` to `value`. Saved at the end of the request as a change of this key only,
    /// so concurrent requests that set other keys keep theirs (G5). An anonymous visitor's
    /// first insert is what creates the session (G9).
    pub async fn insert<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let raw =
            serde_json::value::to_raw_value(value).map_err(|source| SessionError::Serialize {
                key: key.to_owned(),
                source,
            })?;
        let mut state = self.state().await;
        self.load(&mut state).await?;
        let limit = self.shared().max_data_size;
        let current = data_bytes(&state).map_err(|error| self.corrupt(error))?;
        let replaced = lookup(&state, key)
            .map_err(|error| self.corrupt(error))?
            .map_or(0, |old| entry_size(key, old));
        let size = current.saturating_sub(replaced) + entry_size(key, &raw);
        if size > limit {
            return Err(SessionError::TooLarge { size, limit });
        }
        if self.shared().sealed().is_some() {
            let mut trial = materialize(&state).map_err(|error| self.corrupt(error))?;
            trial.insert(key.to_owned(), raw.clone());
            self.check_cookie_size(&state, &trial)?;
        }
        state.pending.changes.insert(key.to_owned(), Some(raw));
        Ok(())
    }

    /// Sets `key` to a raw JSON value.
    pub async fn insert_value(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), SessionError> {
        self.insert(key, value).await
    }

    /// Removes `key` and returns its value as a `T`, if it was set.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        let Some(old) = lookup(&state, key).map_err(|error| self.corrupt(error))? else {
            return Ok(None);
        };
        let value = serde_json::from_str(old.get()).map_err(|source| SessionError::Deserialize {
            key: key.to_owned(),
            source,
        });
        state.pending.changes.insert(key.to_owned(), None);
        value.map(Some)
    }

    /// Removes `key` and returns its raw JSON value, if it was set.
    pub async fn remove_value(&self, key: &str) -> Result<Option<serde_json::Value>, SessionError> {
        self.remove(key).await
    }

    /// Removes every key. The session, its id, its user and its flash messages stay: to end
    /// the session, use [`Session::destroy`].
    pub async fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        state.pending.changes.clear();
        state.pending.clear = true;
        Ok(())
    }

    /// Queues a message for the next request that calls [`Session::take_flashes`] (G13).
    pub async fn flash(
        &self,
        level: FlashLevel,
        message: impl Into<String>,
    ) -> Result<(), SessionError> {
        let message = message.into();
        let mut state = self.state().await;
        let limit = self.shared().max_data_size;
        self.load(&mut state).await?;
        let data_bytes = data_bytes(&state).map_err(|error| self.corrupt(error))?;
        let flash_bytes: usize = stored_flashes(&state)
            .iter()
            .chain(&state.pending.flashes)
            .map(|flash| flash.message.len() + 16)
            .sum();
        let size = data_bytes + flash_bytes + message.len() + 16;
        if size > limit {
            return Err(SessionError::TooLarge { size, limit });
        }
        state.pending.flashes.push(Flash { level, message });
        if self.shared().sealed().is_some() {
            let data = materialize(&state).map_err(|error| self.corrupt(error))?;
            if let Err(error) = self.check_cookie_size(&state, &data) {
                state.pending.flashes.pop();
                return Err(error);
            }
        }
        Ok(())
    }

    /// Returns the flash messages waiting for this session and removes them, atomically in
    /// the store: a message is returned exactly once, even to concurrent requests, and a
    /// request that does not call this leaves them alone (G13).
    pub async fn take_flashes(&self) -> Result<Vec<Flash>, SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        let mut flashes = Vec::new();
        if let Stored::Present(live) = &mut state.stored
            && !live.record.flashes.is_empty()
        {
            if let LiveKey::Server { digest, .. } = &live.key {
                let shared = &self.inner.shared;
                let taken = shared
                    .store()?
                    .take_flashes(digest, shared.now())
                    .await
                    .map_err(|error| self.store_failed(error))?;
                live.record.flashes.clear();
                flashes = taken.unwrap_or_default();
            } else {
                // Cookie-only: taken from this request's copy; the next cookie omits them.
                flashes = std::mem::take(&mut live.record.flashes);
                state.reseal = true;
            }
        }
        flashes.append(&mut state.pending.flashes);
        Ok(flashes)
    }

    /// Ends the session: deletes the record and its user index entry from the store before
    /// it returns, and makes the response remove the cookie (G1). A request still running
    /// with the same session cannot save it back (G2). Afterwards this handle is an empty
    /// anonymous session; inserting into it starts a new session with a new id.
    pub async fn destroy(&self) -> Result<(), SessionError> {
        let mut state = self.state().await;
        self.destroy_locked(&mut state).await
    }

    /// Logs out: the same as [`Session::destroy`].
    pub async fn logout(&self) -> Result<(), SessionError> {
        self.destroy().await
    }

    async fn destroy_locked(&self, state: &mut State) -> Result<(), SessionError> {
        let shared = &self.inner.shared;
        if shared.sealed().is_some() {
            self.load(state).await?;
            self.revoke_sealed(state).await?;
        }
        let (digest, record) = match (&state.stored, &self.inner.incoming) {
            (Stored::Present(live), _) => match &live.key {
                LiveKey::Server { digest, .. } => (Some(*digest), Some(&live.record)),
                LiveKey::Sealed { .. } => (None, Some(&live.record)),
            },
            // Not loaded yet: destroy by digest, without a load round trip.
            (Stored::Unloaded, Incoming::Id(id)) => (Some(shared.hasher.digest(id)), None),
            _ => (None, None),
        };
        if record.is_some() && digest.is_none() {
            self.emit(EventKind::Destroyed, record);
        }
        if let Some(digest) = digest {
            let now = shared.now();
            let store = shared.store()?;
            let destroyed = store
                .destroy(&digest, now)
                .instrument(tracing::debug_span!("sessio.destroy"))
                .await;
            if let Err(error) = destroyed {
                // The reply may have been lost after the delete happened: look before
                // reporting a failure.
                if !matches!(store.load(&digest, now).await, Ok(None)) {
                    return Err(self.store_failed(error));
                }
            }
            self.emit(EventKind::Destroyed, record);
        }
        let had_cookie =
            !matches!(self.inner.incoming, Incoming::Missing) || state.cookie == CookieChange::Set;
        state.stored = Stored::Absent;
        state.pending = Pending::default();
        state.cookie = if had_cookie {
            CookieChange::Remove
        } else {
            CookieChange::Keep
        };
        Ok(())
    }

    /// Moves the session to a new id, keeping its data (G3). The old id is dead when this
    /// returns; the response carries the new cookie. Use it whenever the session gains
    /// privileges; [`Session::login`] does it for you.
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        let mut state = self.state().await;
        self.move_to_new_id(&mut state, None, false).await
    }

    /// Moves the session to a new id and drops its data (G3). The user binding and flash
    /// messages stay; to drop the user as well, use [`Session::logout`].
    pub async fn regenerate(&self) -> Result<(), SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        state.pending.changes.clear();
        state.pending.clear = true;
        self.move_to_new_id(&mut state, None, true).await
    }

    /// Binds the session to `user_id` and moves it to a new id, so that an id planted before
    /// the login is worthless after it (G3). Records the user agent and address for the device
    /// list (G4), and restarts the absolute lifetime. Data set before the login is kept.
    pub async fn login(&self, user_id: &str, info: LoginInfo) -> Result<(), SessionError> {
        let mut state = self.state().await;
        self.move_to_new_id(&mut state, Some(info.bind(user_id)), true)
            .await
    }

    async fn move_to_new_id(
        &self,
        state: &mut State,
        bind: Option<UserBinding>,
        restart_lifetime: bool,
    ) -> Result<(), SessionError> {
        self.load(state).await?;
        let shared = &self.inner.shared;
        let now = shared.now();
        if shared.sealed().is_some() && matches!(state.stored, Stored::Present(_)) {
            return self.move_sealed(state, bind, restart_lifetime, now).await;
        }
        let Stored::Present(live) = &mut state.stored else {
            // Nothing stored yet: a login creates the record now; otherwise the save at the
            // end of the request will create it under a fresh id anyway.
            return match bind {
                Some(bind) => self.create_now(state, Some(bind), now).await,
                None => Ok(()),
            };
        };
        let created_at = if restart_lifetime {
            now
        } else {
            live.record.created_at
        };
        let expiry = state.pending.expiry.unwrap_or(live.record.expiry);
        let mut patch = state.pending.take_patch();
        patch.touch = Some(Touch {
            last_seen_at: now,
            expires_at: shared.deadline(created_at, now, &expiry),
        });
        let change = CycleChange {
            patch,
            bind,
            created_at: restart_lifetime.then_some(now),
            moved_marker_until: shared.moved_marker_until(now, live.record.expires_at),
            max_sessions_per_user: shared.max_sessions_per_user,
        };
        let old = *live.server()?.1;
        let store = shared.store()?;
        for _ in 0..ID_ATTEMPTS {
            let (id, digest) = self.id_in_route(&old)?;
            let cycled = store
                .cycle(&old, &digest, &change, now)
                .instrument(tracing::debug_span!("sessio.cycle"))
                .await;
            let outcome = match cycled {
                Ok(outcome) => outcome,
                Err(error) => match store.load(&digest, now).await {
                    // The reply was lost after the move happened: the new id is the one.
                    Ok(Some(_)) => WriteOutcome::Done,
                    _ => {
                        // The old id still holds the record; restore what this request had
                        // pending so that the end-of-request save still carries it.
                        restore_pending(&mut state.pending, change.patch);
                        return Err(self.store_failed(error));
                    }
                },
            };
            match outcome {
                WriteOutcome::Done => {
                    let record = &mut live.record;
                    change.patch.apply_to(record).map_err(|error| {
                        self.store_failed(StoreError::Corrupt(error.to_string()))
                    })?;
                    record.created_at = created_at;
                    if let Some(bind) = change.bind {
                        record.user = Some(bind);
                    }
                    live.key = LiveKey::Server { id, digest };
                    state.cookie = CookieChange::Set;
                    self.emit(EventKind::Cycled, Some(&live.record));
                    return Ok(());
                }
                WriteOutcome::Exists => continue,
                WriteOutcome::Gone | WriteOutcome::Moved => {
                    self.emit(EventKind::SaveRefused, Some(&live.record));
                    let gone = outcome == WriteOutcome::Gone;
                    state.stored = Stored::Absent;
                    // The session ended under us. A login still succeeds, with a fresh
                    // session that carries this request's changes and nothing of the old one.
                    return match change.bind {
                        Some(bind) => {
                            restore_pending(&mut state.pending, change.patch);
                            self.create_now(state, Some(bind), now).await
                        }
                        None => {
                            if gone {
                                state.cookie = CookieChange::Remove;
                            }
                            Err(SessionError::Ended)
                        }
                    };
                }
            }
        }
        restore_pending(&mut state.pending, change.patch);
        Err(self.store_failed(StoreError::backend(
            "the store reported every freshly drawn session id as taken",
        )))
    }

    /// A fresh id whose digest is in the same store partition as `old` (see
    /// [`SessionStore::route_bits`](crate::SessionStore::route_bits)).
    fn id_in_route(&self, old: &IdDigest) -> Result<(SessionId, IdDigest), SessionError> {
        let shared = &self.inner.shared;
        let bits = shared.route_bits();
        let route = old.route(bits);
        // With 16 bits at most, 2^16 draws on average; a bound of 64 times that makes
        // running out a probability of e^-64.
        let attempts = 64usize << bits;
        for _ in 0..attempts {
            let id = SessionId::generate()?;
            let digest = shared.hasher.digest(&id);
            if digest.route(bits) == route {
                return Ok((id, digest));
            }
        }
        Err(self.store_failed(StoreError::backend(
            "no id in the session's store partition could be drawn",
        )))
    }

    /// Stores a new record holding the pending changes, under a fresh id.
    async fn create_now(
        &self,
        state: &mut State,
        user: Option<UserBinding>,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let shared = &self.inner.shared;
        let data = Data::from_entries(&materialize(state).map_err(|error| self.corrupt(error))?);
        let expiry = state.pending.expiry.unwrap_or_default();
        let route_bits = shared.route_bits();
        let mut record = Record {
            handle: SessionHandle::generate()?,
            created_at: now,
            last_seen_at: now,
            expires_at: shared.deadline(now, now, &expiry),
            expiry,
            user,
            data,
            flashes: std::mem::take(&mut state.pending.flashes),
        };
        if shared.sealed().is_some() {
            self.emit(EventKind::Created, Some(&record));
            state.pending = Pending::default();
            state.stored = Stored::Present(Box::new(Live {
                key: LiveKey::Sealed { issued_at: now },
                record,
            }));
            state.cookie = CookieChange::Set;
            state.reseal = true;
            return Ok(());
        }
        let store = shared.store()?;
        for _ in 0..ID_ATTEMPTS {
            let id = SessionId::generate()?;
            let digest = shared.hasher.digest(&id);
            if route_bits > 0 {
                record.handle =
                    SessionHandle::generate_routed(digest.route(route_bits), route_bits)?;
            }
            let created = store
                .create(&digest, &record, shared.max_sessions_per_user)
                .instrument(tracing::debug_span!("sessio.create"))
                .await;
            let created = match created {
                Ok(outcome) => outcome,
                Err(error) => match store.load(&digest, now).await {
                    Ok(Some(_)) => WriteOutcome::Done,
                    _ => {
                        state.pending.flashes = record.flashes;
                        return Err(self.store_failed(error));
                    }
                },
            };
            if created == WriteOutcome::Done {
                self.emit(EventKind::Created, Some(&record));
                state.pending = Pending::default();
                state.stored = Stored::Present(Box::new(Live {
                    key: LiveKey::Server { id, digest },
                    record,
                }));
                state.cookie = CookieChange::Set;
                return Ok(());
            }
        }
        state.pending.flashes = record.flashes;
        Err(self.store_failed(StoreError::backend(
            "the store reported every freshly drawn session id as taken",
        )))
    }

    /// The user this session is logged in as.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        Ok(current(&state).and_then(|live| live.record.user_id().map(str::to_owned)))
    }

    /// This session's public handle, as shown in device lists; `None` until stored.
    pub async fn handle(&self) -> Result<Option<SessionHandle>, SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        Ok(current(&state).map(|live| live.record.handle))
    }

    /// When the session expires unless used again; `None` until stored.
    pub async fn expires_at(&self) -> Result<Option<SystemTime>, SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        Ok(current(&state).map(|live| live.record.expires_at.to_system_time()))
    }

    /// Sets this session's idle timeout, overriding the layer's (G8).
    pub async fn set_idle_timeout(&self, timeout: Duration) -> Result<(), SessionError> {
        self.set_expiry(|expiry| expiry.idle_timeout = Some(timeout))
            .await
    }

    /// Sets this session's absolute lifetime, overriding the layer's (G8). The lifetime
    /// counts from creation or login, as always.
    pub async fn set_absolute_lifetime(&self, lifetime: Duration) -> Result<(), SessionError> {
        self.set_expiry(|expiry| expiry.absolute_lifetime = Some(lifetime))
            .await
    }

    async fn set_expiry(
        &self,
        change: impl FnOnce(&mut ExpiryOverrides),
    ) -> Result<(), SessionError> {
        let mut state = self.state().await;
        self.load(&mut state).await?;
        let mut expiry = state
            .pending
            .expiry
            .or_else(|| current(&state).map(|live| live.record.expiry))
            .unwrap_or_default();
        change(&mut expiry);
        state.pending.expiry = Some(expiry);
        Ok(())
    }

    /// The sessions of this session's user: one per device, with this one marked `current`
    /// (G4).
    ///
    /// Needs a server store: cookie-only sessions are not kept anywhere they could be listed
    /// from, and this returns [`SessionError::NeedsServerStore`] for them.
    pub async fn user_sessions(&self) -> Result<Vec<SessionInfo>, SessionError> {
        let mut state = self.state().await;
        let (user_id, handle) = self.logged_in(&mut state).await?;
        let shared = &self.inner.shared;
        let mut sessions = shared
            .store()?
            .list_user(&user_id, shared.now())
            .await
            .map_err(|error| self.store_failed(error))?;
        for session in &mut sessions {
            session.current = session.handle == handle;
        }
        Ok(sessions)
    }

    /// Ends one of this user's sessions by its handle ("sign out that device"); returns
    /// whether it was one of the user's live sessions. The current session's own handle
    /// ends this session as [`Session::destroy`] does. Other handles need a server store.
    pub async fn destroy_session(&self, handle: &SessionHandle) -> Result<bool, SessionError> {
        let mut state = self.state().await;
        let (user_id, current_handle) = self.logged_in(&mut state).await?;
        if *handle == current_handle {
            self.destroy_locked(&mut state).await?;
            return Ok(true);
        }
        let shared = &self.inner.shared;
        let destroyed = shared
            .store()?
            .destroy_user_session(&user_id, handle, shared.now())
            .await
            .map_err(|error| self.store_failed(error))?;
        if destroyed {
            shared.events.emit(Event {
                kind: EventKind::Revoked,
                user_id: Some(&user_id),
                handle: Some(*handle),
                count: 1,
            });
        }
        Ok(destroyed)
    }

    /// Ends every other session of this user ("sign out all other devices"). Cookie-only
    /// sessions need a revocation store for this, and cannot count what they ended.
    pub async fn destroy_other_sessions(&self) -> Result<EndedSessions, SessionError> {
        let mut state = self.state().await;
        let (user_id, handle) = self.logged_in(&mut state).await?;
        if self.shared().sealed().is_some() {
            self.revoke_user_sealed(&mut state, &user_id, true).await?;
            return Ok(EndedSessions::Uncounted);
        }
        self.destroy_user_sessions(&user_id, Some(&handle))
            .await
            .map(EndedSessions::Counted)
    }

    /// Ends every session of this user, this one included ("sign out everywhere"). The
    /// response removes this session's cookie. Cookie-only sessions need a revocation store
    /// for this, and cannot count what they ended.
    pub async fn destroy_all_user_sessions(&self) -> Result<EndedSessions, SessionError> {
        let mut state = self.state().await;
        let (user_id, _) = self.logged_in(&mut state).await?;
        let ended = if self.shared().sealed().is_some() {
            self.revoke_user_sealed(&mut state, &user_id, false).await?;
            EndedSessions::Uncounted
        } else {
            EndedSessions::Counted(self.destroy_user_sessions(&user_id, None).await?)
        };
        state.stored = Stored::Absent;
        state.pending = Pending::default();
        state.cookie = CookieChange::Remove;
        Ok(ended)
    }

    async fn destroy_user_sessions(
        &self,
        user_id: &str,
        except: Option<&SessionHandle>,
    ) -> Result<u64, SessionError> {
        let shared = &self.inner.shared;
        let destroyed = shared
            .store()?
            .destroy_user_sessions(user_id, except, shared.now())
            .await
            .map_err(|error| self.store_failed(error))?;
        if destroyed > 0 {
            shared.events.emit(Event {
                kind: EventKind::Revoked,
                user_id: Some(user_id),
                handle: None,
                count: destroyed,
            });
        }
        Ok(destroyed)
    }

    async fn logged_in(&self, state: &mut State) -> Result<(String, SessionHandle), SessionError> {
        self.load(state).await?;
        current(state)
            .and_then(|live| {
                live.record
                    .user_id()
                    .map(|user_id| (user_id.to_owned(), live.record.handle))
            })
            .ok_or(SessionError::NotLoggedIn)
    }

    /// Saves the request's changes and decides the cookie: what the layer does when the
    /// handler's response is ready. Other integrations call it once per request with the
    /// response status and apply the returned [`Commit`].
    ///
    /// - Pending changes are saved as one patch, only if the session is still live (G2, G5).
    ///   If it ended meanwhile, nothing is written, the response gets `409` (when the request
    ///   had changed data) and, if it was destroyed, a removal cookie.
    /// - A new session is created only if it holds data or flash messages (G9).
    /// - On a `5xx` response, pending changes are dropped, as a failed handler may have left
    ///   them half-done. Identity changes already awaited (`login`, `cycle_id`, `destroy`)
    ///   stand, and their cookie is still sent, so the browser never keeps a dead id.
    /// - If the store fails, the response becomes `503` (G12).
    pub async fn commit(&self, status: StatusCode) -> Commit {
        if !self.was_accessed() {
            return Commit::default();
        }
        let mut state = self.inner.state.lock().await;
        let mut commit = Commit {
            accessed: true,
            ..Commit::default()
        };
        if status.is_server_error() {
            state.pending = Pending::default();
        } else if let Err(error) = self.save(&mut state).await {
            commit.replace_status = Some(match error {
                SessionError::Ended => self.shared().ended_status,
                _ => self.shared().store_error_status,
            });
            commit.error = Some(error);
        }
        self.decide_cookie(&state, &mut commit);
        commit
    }

    /// [`Session::commit`] without waiting, when there is nothing to save: the common case of
    /// a request that only read its session. `None` when a save is needed or the session is
    /// busy; then call [`Session::commit`].
    pub(crate) fn commit_without_io(&self, status: StatusCode) -> Option<Commit> {
        let state = self.inner.state.try_lock().ok()?;
        if !status.is_server_error() && self.needs_save(&state) {
            return None;
        }
        let mut commit = Commit {
            accessed: true,
            ..Commit::default()
        };
        self.decide_cookie(&state, &mut commit);
        Some(commit)
    }

    /// Whether [`Session::save`] has anything to do.
    fn needs_save(&self, state: &State) -> bool {
        let shared = self.shared();
        match &state.stored {
            Stored::Unloaded => false,
            Stored::Absent => has_data(state) || !state.pending.flashes.is_empty(),
            Stored::Present(live) => {
                !state.pending.is_empty()
                    || state.reseal
                    || shared.now().saturating_since(live.record.last_seen_at)
                        >= shared.touch_interval
            }
        }
    }

    /// The `Set-Cookie` header the response needs, if any.
    fn decide_cookie(&self, state: &State, commit: &mut Commit) {
        let cookie = &self.shared().cookie;
        commit.set_cookie = match (state.cookie, &state.stored) {
            (CookieChange::Set, Stored::Present(live)) => {
                let max_age = live.record.expires_at.saturating_since(self.shared().now());
                match &live.key {
                    LiveKey::Server { id, .. } => cookie.set(id, max_age),
                    LiveKey::Sealed { issued_at } => match self.seal(&live.record, *issued_at) {
                        Ok(value) => cookie.set_value(value, max_age),
                        Err(error) => {
                            // Too large to send: an error response, never a silently
                            // dropped cookie (G10).
                            commit.replace_status = Some(StatusCode::INTERNAL_SERVER_ERROR);
                            commit.error = Some(error);
                            None
                        }
                    },
                }
            }
            (CookieChange::Remove, _) => cookie.removal(),
            _ => None,
        };
    }

    async fn save(&self, state: &mut State) -> Result<(), SessionError> {
        let shared = &self.inner.shared;
        let now = shared.now();
        match &mut state.stored {
            Stored::Unloaded => Ok(()),
            Stored::Absent => {
                if has_data(state) || !state.pending.flashes.is_empty() {
                    self.create_now(state, None, now).await
                } else {
                    Ok(())
                }
            }
            Stored::Present(live) if matches!(live.key, LiveKey::Sealed { .. }) => {
                self.save_sealed(state, now).await
            }
            Stored::Present(live) => {
                let record = &live.record;
                let touch_due = now.saturating_since(record.last_seen_at) >= shared.touch_interval;
                if state.pending.is_empty() && !touch_due {
                    return Ok(());
                }
                let digest = *live.server()?.1;
                let expiry = state.pending.expiry.unwrap_or(record.expiry);
                let mut patch = state.pending.take_patch();
                if touch_due || patch.expiry.is_some() {
                    patch.touch = Some(Touch {
                        last_seen_at: now,
                        expires_at: shared.deadline(record.created_at, now, &expiry),
                    });
                }
                let span =
                    tracing::debug_span!("sessio.save", touch_only = !patch.changes_content());
                let outcome = shared
                    .store()?
                    .apply(&digest, &patch, now)
                    .instrument(span)
                    .await;
                match outcome {
                    Ok(WriteOutcome::Done) => {
                        if let Some(touch) = patch.touch {
                            let extended = touch.expires_at != live.record.expires_at;
                            live.record.last_seen_at = touch.last_seen_at;
                            live.record.expires_at = touch.expires_at;
                            // A persistent cookie's Max-Age follows the deadline.
                            if extended
                                && state.cookie == CookieChange::Keep
                                && !shared.cookie.browser_session
                            {
                                state.cookie = CookieChange::Set;
                            }
                        }
                        Ok(())
                    }
                    Ok(outcome) => {
                        self.emit(EventKind::SaveRefused, Some(&live.record));
                        state.stored = Stored::Absent;
                        if outcome == WriteOutcome::Gone {
                            state.cookie = CookieChange::Remove;
                        }
                        if patch.changes_content() {
                            Err(SessionError::Ended)
                        } else {
                            Ok(())
                        }
                    }
                    Err(error) => {
                        let error = self.store_failed(error);
                        if patch.changes_content() || patch.expiry.is_some() {
                            Err(error)
                        } else {
                            // Only a last-seen update was lost; the session still works.
                            tracing::warn!(target: "sessio", %error, "could not extend a session's idle deadline");
                            Ok(())
                        }
                    }
                }
            }
        }
    }
}

fn current(state: &State) -> Option<&Live> {
    match &state.stored {
        Stored::Present(live) => Some(live),
        _ => None,
    }
}

fn stored_flashes(state: &State) -> &[Flash] {
    current(state).map_or(&[], |live| &live.record.flashes)
}

/// Puts a patch that could not be saved back into the pending changes, ahead of anything
/// queued since.
fn restore_pending(pending: &mut Pending, patch: Patch) {
    let newer = std::mem::take(pending);
    pending.clear = patch.clear || newer.clear;
    if !newer.clear {
        pending.changes.extend(patch.changes);
    }
    pending.changes.extend(newer.changes);
    pending.flashes = patch.flashes;
    pending.flashes.extend(newer.flashes);
    pending.expiry = newer.expiry.or(patch.expiry);
}

fn entry_size(key: &str, value: &RawValue) -> usize {
    // Quotes, colon and comma around each entry.
    key.len() + value.get().len() + 4
}

/// The stored data this request started from, unless it cleared it.
fn base_data(state: &State) -> Option<&Data> {
    if state.pending.clear {
        return None;
    }
    current(state).map(|live| &live.record.data)
}

/// One key as the handler sees it: this request's change first, then the stored data, read
/// without building a map.
fn lookup<'s>(state: &'s State, key: &str) -> Result<Option<&'s RawValue>, serde_json::Error> {
    if let Some(change) = state.pending.changes.get(key) {
        return Ok(change.as_deref());
    }
    match base_data(state) {
        Some(data) => data.get_raw(key),
        None => Ok(None),
    }
}

/// The whole data as the handler sees it, built on demand (listing, creating, size checks of
/// cookie-only sessions).
fn materialize(state: &State) -> Result<DataMap, serde_json::Error> {
    let mut data = match base_data(state) {
        Some(data) => data.entries()?,
        None => DataMap::new(),
    };
    for (key, change) in &state.pending.changes {
        match change {
            Some(value) => {
                data.insert(key.clone(), value.clone());
            }
            None => {
                data.remove(key);
            }
        }
    }
    Ok(data)
}

/// The size of the data as the handler sees it, without building the map.
fn data_bytes(state: &State) -> Result<usize, serde_json::Error> {
    let base = base_data(state);
    let mut size = base.map_or(2, Data::len);
    for (key, change) in &state.pending.changes {
        if let Some(data) = base
            && let Some(old) = data.get_raw(key)?
        {
            size = size.saturating_sub(entry_size(key, old));
        }
        if let Some(value) = change {
            size += entry_size(key, value);
        }
    }
    Ok(size)
}

/// Whether a session that is not stored yet has data to store.
fn has_data(state: &State) -> bool {
    state.pending.changes.values().any(Option::is_some)
}
