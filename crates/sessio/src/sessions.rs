//! [`Sessions`]: the configured session manager, and the admin handle for ending sessions
//! from outside any request.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};

use crate::cookie::{CookieSettings, SameSite};
use crate::error::{ConfigError, SessionError};
use crate::events::{Event, EventKind, EventListener, Events, Metrics};
use crate::id::{IdDigest, IdHasher, SessionHandle, SessionId};
use crate::record::{ExpiryOverrides, SessionInfo};
use crate::revocation::Revocations;
use crate::sealed::KeyRing;
use crate::service::SessionLayer;
use crate::session::Session;
use crate::store::{DynStore, SessionStore};
use crate::time::{Clock, SystemClock, Timestamp};

const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
const DEFAULT_ABSOLUTE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);
const DEFAULT_MAX_DATA_SIZE: usize = 64 * 1024;
const MAX_TOUCH_INTERVAL: Duration = Duration::from_secs(60);
/// How long a cycled id keeps a moved marker: long enough for requests in flight at the
/// moment of a login to finish.
const MOVED_MARKER_TTL: Duration = Duration::from_secs(120);
const PURGE_BATCH: usize = 1_000;
/// Bound into every sealed cookie, so a cookie sealed by another app with the same key and
/// cookie name does not open here.
const DEFAULT_PURPOSE: &str = "sessio-session";

/// Where sessions live.
pub(crate) enum Backend {
    /// Records in a store, the cookie holding only the id.
    Server(Box<dyn DynStore>),
    /// The whole session sealed in the cookie.
    Sealed(SealedBackend),
}

/// Cookie-only sessions: the key ring, and optionally where revocations are kept.
pub(crate) struct SealedBackend {
    pub(crate) ring: KeyRing,
    pub(crate) purpose: String,
    pub(crate) revocations: Option<Revocations>,
}

/// Everything decided when the layer is built.
pub(crate) struct Shared {
    pub(crate) backend: Backend,
    pub(crate) cookie: CookieSettings,
    pub(crate) hasher: IdHasher,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) absolute_lifetime: Option<Duration>,
    pub(crate) touch_interval: Duration,
    pub(crate) max_data_size: usize,
    pub(crate) max_sessions_per_user: Option<NonZeroU32>,
    pub(crate) store_error_status: StatusCode,
    pub(crate) ended_status: StatusCode,
    pub(crate) events: Events,
    pub(crate) clock: Arc<dyn Clock>,
}

pub(crate) const NEEDS_REVOCATION_STORE: &str = "ending other copies of a cookie-only session needs a revocation store (SessionsBuilder::revocation_store)";

const NEEDS_SERVER_STORE: &str = "this operation needs sessions kept in a server store; cookie-only sessions cannot list or count sessions";

impl Shared {
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The server store, or the error that explains why cookie-only sessions cannot do this.
    pub(crate) fn store(&self) -> Result<&dyn DynStore, SessionError> {
        match &self.backend {
            Backend::Server(store) => Ok(store.as_ref()),
            Backend::Sealed(_) => Err(SessionError::NeedsServerStore(NEEDS_SERVER_STORE)),
        }
    }

    /// The cookie-only backend, if sessions are cookie-only.
    pub(crate) fn sealed(&self) -> Option<&SealedBackend> {
        match &self.backend {
            Backend::Sealed(sealed) => Some(sealed),
            Backend::Server(_) => None,
        }
    }

    /// See [`SessionStore::route_bits`]; cookie-only sessions have no partitions.
    pub(crate) fn route_bits(&self) -> u8 {
        match &self.backend {
            Backend::Server(store) => store.route_bits(),
            Backend::Sealed(_) => 0,
        }
    }

    /// When a session with these times and overrides expires: the earlier of its idle and
    /// absolute deadlines (G8).
    pub(crate) fn deadline(
        &self,
        created_at: Timestamp,
        last_seen_at: Timestamp,
        overrides: &ExpiryOverrides,
    ) -> Timestamp {
        let idle = overrides
            .idle_timeout
            .or(self.idle_timeout)
            .map(|idle| last_seen_at.saturating_add(idle));
        let absolute = overrides
            .absolute_lifetime
            .or(self.absolute_lifetime)
            .map(|lifetime| created_at.saturating_add(lifetime));
        match (idle, absolute) {
            (Some(idle), Some(absolute)) => idle.min(absolute),
            (Some(deadline), None) | (None, Some(deadline)) => deadline,
            // Unreachable by construction: the builder requires one of the two.
            (None, None) => created_at,
        }
    }

    pub(crate) fn moved_marker_until(&self, now: Timestamp, expires_at: Timestamp) -> Timestamp {
        now.saturating_add(MOVED_MARKER_TTL).min(expires_at)
    }
}

/// The session manager: a store plus the cookie and expiry settings, validated.
///
/// Build it once with [`Sessions::builder`], install [`Sessions::layer`] on the router, and
/// keep a clone wherever sessions must be ended from outside a request (an admin page, a
/// password-change handler, a CLI): the `*_user_*` methods end a user's sessions by user id
/// with no request involved (G4).
///
/// ```
/// use std::time::Duration;
/// use sessio::{MemoryStore, Sessions};
///
/// # fn main() -> Result<(), sessio::ConfigError> {
/// let sessions = Sessions::builder(MemoryStore::new())
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .absolute_lifetime(Duration::from_secs(12 * 60 * 60))
///     .build()?;
/// let app: axum::Router = axum::Router::new().layer(sessions.layer());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sessions {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("cookie", &self.shared.cookie.name)
            .field("idle_timeout", &self.shared.idle_timeout)
            .field("absolute_lifetime", &self.shared.absolute_lifetime)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Starts configuring sessions kept in `store`.
    pub fn builder(store: impl SessionStore) -> SessionsBuilder {
        Self::builder_for(BackendChoice::Server(Box::new(store)))
    }

    /// Starts configuring cookie-only sessions: the whole session sealed with AES-256-GCM in
    /// its cookie, no server store needed (G10).
    ///
    /// Choose them when there is nowhere to keep sessions and they stay small (a cookie holds
    /// at most 4096 bytes). What they cannot do: list a user's devices, or count sessions;
    /// keep two concurrent requests' changes (the last response's cookie wins, G5 does not
    /// hold); show a flash message exactly once to concurrent requests. And ending one clears
    /// only the cookie of the browser that asked: a copy of the cookie stays valid until it
    /// expires, unless [`SessionsBuilder::revocation_store`] is set.
    ///
    /// ```
    /// use sessio::{CookieKey, KeyRing, MemoryStore, Sessions};
    ///
    /// # fn main() -> Result<(), sessio::ConfigError> {
    /// let key = CookieKey::new("2026-12", &[7u8; 32])?; // 32 secret random bytes, really
    /// let sessions = Sessions::cookie_builder(KeyRing::single(key))
    ///     .revocation_store(MemoryStore::new()) // optional: makes destroy end every copy
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn cookie_builder(keys: KeyRing) -> SessionsBuilder {
        Self::builder_for(BackendChoice::Sealed {
            ring: keys,
            purpose: DEFAULT_PURPOSE.to_owned(),
            revocations: None,
        })
    }

    fn builder_for(backend: BackendChoice) -> SessionsBuilder {
        SessionsBuilder {
            backend,
            cookie: CookieSettings::default(),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            absolute_lifetime: Some(DEFAULT_ABSOLUTE_LIFETIME),
            touch_interval: None,
            max_data_size: DEFAULT_MAX_DATA_SIZE,
            max_sessions_per_user: None,
            pepper: None,
            store_error_status: StatusCode::SERVICE_UNAVAILABLE,
            ended_status: StatusCode::CONFLICT,
            listeners: Vec::new(),
            clock: Arc::new(SystemClock),
            revocation_misplaced: false,
        }
    }

    /// The name of the session cookie.
    pub fn cookie_name(&self) -> &str {
        &self.shared.cookie.name
    }

    /// The tower layer that gives every request a [`Session`].
    pub fn layer(&self) -> SessionLayer {
        SessionLayer::new(self.clone())
    }

    /// The session of a request with these headers, for frameworks other than tower: call
    /// [`Session::commit`] when the response is ready and apply what it returns.
    pub fn session_for(&self, headers: &HeaderMap) -> Session {
        let sealed = self.shared.sealed().is_some();
        Session::new(
            self.shared.clone(),
            self.shared.cookie.incoming(headers, sealed),
        )
    }

    /// The digest the store keys `id`'s record by (G6). Not a secret (it cannot be turned
    /// back into an id), but there is rarely a reason to show it.
    pub fn digest_of(&self, id: &SessionId) -> IdDigest {
        self.shared.hasher.digest(id)
    }

    /// Lists the live sessions of a user, oldest first (G4). Needs a server store.
    pub async fn user_sessions(&self, user_id: &str) -> Result<Vec<SessionInfo>, SessionError> {
        let shared = &self.shared;
        let listed = shared.store()?.list_user(user_id, shared.now()).await;
        self.observe(listed)
    }

    /// Ends one session of a user; returns whether it was live. The next request with its
    /// cookie is anonymous, and a request in flight cannot save it back (G2). Needs a server
    /// store (cookie-only sessions have no handles anyone could list).
    pub async fn destroy_user_session(
        &self,
        user_id: &str,
        handle: &SessionHandle,
    ) -> Result<bool, SessionError> {
        let shared = &self.shared;
        let destroyed = shared
            .store()?
            .destroy_user_session(user_id, handle, shared.now())
            .await;
        let destroyed = self.observe(destroyed)?;
        if destroyed {
            self.revoked(user_id, Some(*handle), 1);
        }
        Ok(destroyed)
    }

    /// Ends every session of a user ("log out everywhere"). With cookie-only sessions this
    /// needs a revocation store, and the number ended is not known.
    pub async fn destroy_user_sessions(
        &self,
        user_id: &str,
    ) -> Result<EndedSessions, SessionError> {
        self.destroy_user_sessions_except(user_id, None).await
    }

    /// Ends every session of a user but the one with handle `keep`, if any.
    pub async fn destroy_user_sessions_except(
        &self,
        user_id: &str,
        keep: Option<&SessionHandle>,
    ) -> Result<EndedSessions, SessionError> {
        let shared = &self.shared;
        if let Some(sealed) = shared.sealed() {
            if keep.is_some() {
                return Err(SessionError::NeedsServerStore(
                    "cookie-only sessions have no handles; keep a session by ending the others from its own request",
                ));
            }
            let revocations = sealed
                .revocations
                .as_ref()
                .ok_or(SessionError::NeedsServerStore(NEEDS_REVOCATION_STORE))?;
            let revoked = revocations.revoke_user(user_id, shared.now()).await;
            self.observe(revoked.map(|_| ()))?;
            self.revoked(user_id, None, 1);
            return Ok(EndedSessions::Uncounted);
        }
        let destroyed = shared
            .store()?
            .destroy_user_sessions(user_id, keep, shared.now())
            .await;
        let destroyed = self.observe(destroyed)?;
        self.revoked(user_id, None, destroyed);
        Ok(EndedSessions::Counted(destroyed))
    }

    /// Deletes every expired record now, in batches so that live requests are never held up
    /// for long; returns how many it deleted. Stores purge on their own too (G8). For
    /// cookie-only sessions, purges the revocation store (expired sessions need no purge:
    /// their cookies expire).
    pub async fn purge_expired(&self) -> Result<u64, SessionError> {
        let shared = &self.shared;
        let store = match &shared.backend {
            Backend::Server(store) => store.as_ref(),
            Backend::Sealed(SealedBackend {
                revocations: Some(revocations),
                ..
            }) => revocations.store.as_ref(),
            Backend::Sealed(_) => return Ok(0),
        };
        let now = shared.now();
        let mut total = 0;
        loop {
            let purged = store.purge_expired(now, PURGE_BATCH).await;
            let purged = self.observe(purged)?;
            total += purged;
            if purged < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Counts live sessions. Needs a server store.
    pub async fn count(&self) -> Result<u64, SessionError> {
        let shared = &self.shared;
        let counted = shared.store()?.count(shared.now()).await;
        self.observe(counted)
    }

    /// Event counts since the sessions were built (G14).
    pub fn metrics(&self) -> Metrics {
        self.shared.events.snapshot()
    }

    fn observe<T>(&self, result: Result<T, crate::StoreError>) -> Result<T, SessionError> {
        result.map_err(|error| {
            self.shared.events.kind(EventKind::StoreFailed);
            error.into()
        })
    }

    fn revoked(&self, user_id: &str, handle: Option<SessionHandle>, count: u64) {
        if count > 0 {
            self.shared.events.emit(Event {
                kind: EventKind::Revoked,
                user_id: Some(user_id),
                handle,
                count,
            });
        }
    }
}

/// How many sessions an "end them all" reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedSessions {
    /// This many live sessions were ended.
    Counted(u64),
    /// Every session issued before now was ended, but how many there were is not known:
    /// cookie-only sessions are not kept anywhere to be counted.
    Uncounted,
}

impl EndedSessions {
    /// The number ended, if known.
    pub fn count(self) -> Option<u64> {
        match self {
            Self::Counted(count) => Some(count),
            Self::Uncounted => None,
        }
    }
}

/// What [`SessionsBuilder`] will keep sessions in.
enum BackendChoice {
    Server(Box<dyn DynStore>),
    Sealed {
        ring: KeyRing,
        purpose: String,
        revocations: Option<Box<dyn DynStore>>,
    },
}

/// Configuration for [`Sessions`]; every setting has a secure default.
///
/// Defaults: cookie `__Host-sessio` with `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/` and
/// no `Domain`; idle timeout 24 hours; absolute lifetime 7 days; idle touches at most once a
/// minute (or a tenth of the idle timeout, if shorter); data up to 64 KiB; `503` when the
/// store fails and `409` when the session ended during the request.
pub struct SessionsBuilder {
    backend: BackendChoice,
    cookie: CookieSettings,
    idle_timeout: Option<Duration>,
    absolute_lifetime: Option<Duration>,
    touch_interval: Option<Duration>,
    max_data_size: usize,
    max_sessions_per_user: Option<NonZeroU32>,
    pepper: Option<Vec<u8>>,
    store_error_status: StatusCode,
    ended_status: StatusCode,
    listeners: Vec<Arc<dyn EventListener>>,
    clock: Arc<dyn Clock>,
    revocation_misplaced: bool,
}

impl std::fmt::Debug for SessionsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionsBuilder")
            .field("cookie", &self.cookie.name)
            .finish_non_exhaustive()
    }
}

impl SessionsBuilder {
    /// The cookie name. A name starting with `__Host-` (the default is `__Host-sessio`) makes
    /// browsers refuse the cookie from subdomains and insecure origins; sessio checks at
    /// build time that the other settings allow it.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// The cookie `Path` (default `/`).
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// The cookie `Domain`, to share the session with subdomains (default: none, host only).
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie.domain = Some(domain.into());
        self
    }

    /// Whether the cookie is `Secure` (default `true`). Browsers accept `Secure` cookies from
    /// `http://localhost`; turn it off only for plain-http hosts other than localhost.
    pub fn secure(mut self, secure: bool) -> Self {
        self.cookie.secure = secure;
        self
    }

    /// The cookie's `SameSite` (default `Lax`).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// Send the cookie without `Max-Age`, so the browser drops it when it closes. The
    /// server-side timeouts still apply.
    pub fn browser_session_cookie(mut self, enabled: bool) -> Self {
        self.cookie.browser_session = enabled;
        self
    }

    /// End sessions not used for this long (rolling; default 24 hours).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// No idle timeout: sessions end only at their absolute lifetime.
    pub fn without_idle_timeout(mut self) -> Self {
        self.idle_timeout = None;
        self
    }

    /// End sessions this long after creation or login, however active (default 7 days).
    pub fn absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// No absolute lifetime: an active session can last forever.
    pub fn without_absolute_lifetime(mut self) -> Self {
        self.absolute_lifetime = None;
        self
    }

    /// Write a session's last-seen time (and extend its idle deadline) at most this often
    /// (G9). Default: a tenth of the idle timeout, at most one minute.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = Some(interval);
        self
    }

    /// Largest session data, in bytes of JSON (default 64 KiB). Inserts beyond it fail with
    /// [`SessionError::TooLarge`].
    pub fn max_data_size(mut self, bytes: usize) -> Self {
        self.max_data_size = bytes;
        self
    }

    /// Keep at most this many sessions per user: a login beyond it ends the user's oldest
    /// sessions (G4).
    pub fn max_sessions_per_user(mut self, max: NonZeroU32) -> Self {
        self.max_sessions_per_user = Some(max);
        self
    }

    /// Key id digests with HMAC-SHA-256 and this secret (at least 32 bytes) instead of plain
    /// SHA-256, so that a leaked store cannot even be checked against guessed ids. Every
    /// process sharing a store needs the same pepper; changing it ends every session.
    pub fn pepper(mut self, pepper: impl Into<Vec<u8>>) -> Self {
        self.pepper = Some(pepper.into());
        self
    }

    /// The status of a response whose session save failed in the store (default `503`).
    pub fn store_error_status(mut self, status: StatusCode) -> Self {
        self.store_error_status = status;
        self
    }

    /// The status of a response whose changes were refused because the session ended or
    /// changed id while the request ran (default `409`).
    pub fn ended_status(mut self, status: StatusCode) -> Self {
        self.ended_status = status;
        self
    }

    /// Calls `listener` on every session event (G14).
    pub fn event_listener(mut self, listener: impl EventListener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// For cookie-only sessions: keep revocations in `store`, so that destroying a session
    /// also rejects every copy of its cookie, and "log out everywhere" works (G10). Costs
    /// one small store read per request that uses the session. Needs an absolute lifetime,
    /// which bounds how long a revocation must be kept. Use a store (or key prefix, or
    /// schema) of its own: revocation records would count as sessions in a shared one.
    pub fn revocation_store(mut self, store: impl SessionStore) -> Self {
        match &mut self.backend {
            BackendChoice::Sealed { revocations, .. } => *revocations = Some(Box::new(store)),
            BackendChoice::Server(_) => self.revocation_misplaced = true,
        }
        self
    }

    /// For cookie-only sessions: a string naming what the cookie is for, bound into every
    /// cookie, so that a cookie sealed by another app sharing the key and cookie name does not
    /// open here (default `sessio-session`).
    pub fn cookie_purpose(mut self, purpose: impl Into<String>) -> Self {
        if let BackendChoice::Sealed {
            purpose: current, ..
        } = &mut self.backend
        {
            *current = purpose.into();
        }
        self
    }

    /// The clock to read (default: the system clock). Tests use a manual clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Validates the configuration (G7) and builds the session manager.
    pub fn build(self) -> Result<Sessions, ConfigError> {
        let cookie = self.cookie.prepared()?;
        if self.idle_timeout.is_none() && self.absolute_lifetime.is_none() {
            return Err(ConfigError::NoExpiry);
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroDuration("the idle timeout"));
        }
        if self.absolute_lifetime == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroDuration("the absolute lifetime"));
        }
        let touch_interval = match (self.touch_interval, self.idle_timeout) {
            (Some(interval), Some(idle)) if interval >= idle => {
                return Err(ConfigError::TouchIntervalTooLong);
            }
            (Some(interval), _) => interval,
            (None, Some(idle)) => (idle / 10).min(MAX_TOUCH_INTERVAL),
            (None, None) => MAX_TOUCH_INTERVAL,
        };
        if self.max_data_size == 0 {
            return Err(ConfigError::ZeroDataLimit);
        }
        let hasher = match self.pepper {
            None => IdHasher::Sha256,
            Some(pepper) if pepper.len() < 32 => return Err(ConfigError::PepperTooShort),
            Some(pepper) => IdHasher::Peppered(
                Hmac::new_from_slice(&pepper).map_err(|_| ConfigError::PepperTooShort)?,
            ),
        };
        if self.revocation_misplaced {
            return Err(ConfigError::RevocationNeedsCookieSessions);
        }
        let backend = match self.backend {
            BackendChoice::Server(store) => Backend::Server(store),
            BackendChoice::Sealed {
                ring,
                purpose,
                revocations,
            } => {
                let revocations = match (revocations, self.absolute_lifetime) {
                    (Some(store), Some(horizon)) => Some(Revocations { store, horizon }),
                    (Some(_), None) => return Err(ConfigError::RevocationNeedsAbsoluteLifetime),
                    (None, _) => None,
                };
                Backend::Sealed(SealedBackend {
                    ring,
                    purpose,
                    revocations,
                })
            }
        };
        Ok(Sessions {
            shared: Arc::new(Shared {
                backend,
                cookie,
                hasher,
                idle_timeout: self.idle_timeout,
                absolute_lifetime: self.absolute_lifetime,
                touch_interval,
                max_data_size: self.max_data_size,
                max_sessions_per_user: self.max_sessions_per_user,
                store_error_status: self.store_error_status,
                ended_status: self.ended_status,
                events: Events::new(self.listeners),
                clock: self.clock,
            }),
        })
    }
}
