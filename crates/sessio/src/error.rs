//! Errors a handler or an application sees. Each says what happened and what to do.

use crate::id::RandomError;
use crate::store::StoreError;

/// Why a session operation failed.
///
/// With the `axum` feature it is also a response: `503` for store failures, `409` when the
/// session ended during the request, `401` for device operations without a login, `413` for
/// oversized data, `500` otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed; nothing the operation promised happened (G12).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session was destroyed, expired or moved to a new id while this request ran, so
    /// this request's changes were not saved (G2, G3).
    #[error(
        "the session ended or changed id during this request (another request, device or admin); its changes were not saved"
    )]
    Ended,
    /// An operation on a user's devices needs a logged-in session.
    #[error("no user is logged in to this session; call `login` first")]
    NotLoggedIn,
    /// A value could not be turned into JSON.
    #[error("session value for key `{key}` could not be serialized: {source}")]
    Serialize {
        /// The key being written.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value does not have the type the handler asked for.
    #[error("session value for key `{key}` is not of the requested type: {source}")]
    Deserialize {
        /// The key being read.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The session's data would exceed the configured maximum (G11).
    #[error(
        "session data would be {size} bytes, over the limit of {limit}; store large values elsewhere and keep a reference in the session"
    )]
    TooLarge {
        /// The size the data would have had.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// No session id could be drawn.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// A cookie-only session would not fit in a cookie (G10): browsers drop cookies over 4096
    /// bytes, so sessio refuses before anything is sent.
    #[error(
        "the session cookie would be {size} bytes, over the {limit} browsers keep; store less in a cookie-only session, or use a server store"
    )]
    CookieTooLarge {
        /// Name plus value, in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The operation needs sessions kept on the server (or a revocation store), which
    /// cookie-only sessions do not have.
    #[error("{0}")]
    NeedsServerStore(&'static str),
}

impl SessionError {
    /// Whether the error comes from the store (and retrying later may help).
    pub fn is_store_error(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

/// A configuration that would make sessions insecure or unusable, caught when the layer is
/// built (G7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cookie name is empty or has characters a cookie name cannot have.
    #[error(
        "cookie name {0:?} is not a valid cookie name: use letters, digits and `-_.!#$%&'*+^`|~`"
    )]
    InvalidCookieName(String),
    /// A `__Host-` cookie must be `Secure`, have `Path=/` and no `Domain`; browsers drop it
    /// otherwise.
    #[error("a `__Host-` cookie needs Secure, Path=/ and no Domain, or browsers ignore it: {0}")]
    HostPrefix(&'static str),
    /// A `__Secure-` cookie must be `Secure`.
    #[error("a `__Secure-` cookie needs Secure, or browsers ignore it")]
    SecurePrefix,
    /// `SameSite=None` without `Secure` is rejected by browsers.
    #[error("SameSite=None needs Secure, or browsers reject the cookie")]
    SameSiteNoneWithoutSecure,
    /// The cookie path does not start with `/` or has characters a cookie attribute cannot have.
    #[error("cookie path {0:?} must start with `/` and contain no `;` or control characters")]
    InvalidPath(String),
    /// The cookie domain has characters a cookie attribute cannot have.
    #[error("cookie domain {0:?} is not a valid domain")]
    InvalidDomain(String),
    /// Sessions would never expire.
    #[error(
        "sessions need an idle timeout, an absolute lifetime or both, so that they end and can be purged"
    )]
    NoExpiry,
    /// A timeout of zero.
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    /// Touches would happen less often than the idle timeout, so sessions would expire while in use.
    #[error("the touch interval must be shorter than the idle timeout")]
    TouchIntervalTooLong,
    /// A pepper under 256 bits.
    #[error("the id pepper must be at least 32 bytes of secret random data")]
    PepperTooShort,
    /// The maximum data size is zero.
    #[error("the maximum session data size must be larger than zero")]
    ZeroDataLimit,
    /// A cookie key id is empty, too long, has characters other than `A-Za-z0-9_-`, or is
    /// listed twice.
    #[error(
        "cookie key id {0:?} must be 1 to 16 characters of A-Za-z0-9_- and unique in the key ring"
    )]
    InvalidKeyId(String),
    /// A cookie key that would not keep sessions secret (G10).
    #[error("{0}")]
    WeakCookieKey(&'static str),
    /// Revocation entries must expire, so revocable cookie sessions need an absolute lifetime.
    #[error(
        "revocable cookie-only sessions need an absolute lifetime, so that revocation entries can expire"
    )]
    RevocationNeedsAbsoluteLifetime,
    /// A revocation store was given for sessions kept in a server store, which need none.
    #[error(
        "a revocation store is only for cookie-only sessions (Sessions::cookie_builder); server-stored sessions are revoked in their store"
    )]
    RevocationNeedsCookieSessions,
}
