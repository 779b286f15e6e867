//! What a store keeps for one session, and what it reports about a user's sessions.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::id::SessionHandle;
use crate::time::Timestamp;

/// Session data as the session handle works on it: keys to raw JSON values, parsed only when
/// a handler asks for a typed value.
pub type DataMap = BTreeMap<String, Box<RawValue>>;

/// Session data as a store keeps it: one compact JSON object.
///
/// Stores may keep it as text (SQL, memory) or split it into one field per key (Redis
/// hashes); [`Data::entries`] and [`Data::from_entries`] convert between the two. Small
/// objects are kept in place and larger ones shared, so that handing a stored record to a
/// request copies no data beyond a few bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Data(Text);

/// The longest JSON text kept in place rather than behind an `Arc`.
const INLINE_BYTES: usize = 22;

/// JSON text: up to [`INLINE_BYTES`] in place, so a small session (`{"n":0}`, `{}`) costs no
/// allocation of its own (G8), and longer text shared, so cloning never copies it. Each
/// length has exactly one form, which keeps equality a comparison of the forms.
#[derive(Clone, PartialEq, Eq)]
enum Text {
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    Shared(Arc<str>),
}

impl Text {
    fn new(text: &str) -> Self {
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= INLINE_BYTES => {
                let mut bytes = [0u8; INLINE_BYTES];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(Arc::from(text)),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Always a whole `&str` copied in by `new`, so always UTF-8; the fallback is
            // never taken and keeps this free of `unsafe` and of panics.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("{}")
            }
            Self::Shared(text) => text,
        }
    }
}

impl Data {
    /// No keys: `{}`.
    pub fn empty() -> Self {
        Self(Text::new("{}"))
    }

    /// Checks that `json` is a JSON object with string keys and keeps it as it is.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<DataMap>(json)?;
        Ok(Self(Text::new(json)))
    }

    /// Builds the compact JSON object of `entries`.
    pub fn from_entries(entries: &DataMap) -> Self {
        // A map of already-valid JSON values with string keys cannot fail to serialize.
        match serde_json::to_string(entries) {
            Ok(json) => Self(Text::new(&json)),
            Err(_) => Self::empty(),
        }
    }

    /// The JSON object text.
    pub fn as_json(&self) -> &str {
        self.0.as_str()
    }

    /// The raw value of one key, found without building the whole map: what a read of one
    /// key costs on the per-request path.
    pub fn get_raw(&self, key: &str) -> Result<Option<&RawValue>, serde_json::Error> {
        use serde::de::{Deserializer, MapAccess, Visitor};
        struct Find<'k>(&'k str);
        impl<'de> Visitor<'de> for Find<'_> {
            type Value = Option<&'de RawValue>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut found = None;
                while let Some(Key(key)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    if found.is_none() && key == self.0 {
                        found = Some(value);
                    }
                }
                Ok(found)
            }
        }
        /// A key, borrowed from the text unless it has escapes.
        struct Key<'de>(std::borrow::Cow<'de, str>);
        impl<'de> serde::Deserialize<'de> for Key<'de> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct KeyVisitor;
                impl<'de> Visitor<'de> for KeyVisitor {
                    type Value = Key<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a string key")
                    }
                    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                        Ok(Key(std::borrow::Cow::Borrowed(key)))
                    }
                    fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                        Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
                    }
                }
                deserializer.deserialize_str(KeyVisitor)
            }
        }
        let mut deserializer = serde_json::Deserializer::from_str(self.as_json());
        deserializer.deserialize_map(Find(key))
    }

    /// Parses the object into its entries.
    pub fn entries(&self) -> Result<DataMap, serde_json::Error> {
        serde_json::from_str(self.as_json())
    }

    /// Whether the object has no keys.
    pub fn is_empty(&self) -> bool {
        self.as_json().trim() == "{}"
    }

    /// Size of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.as_json().len()
    }
}

impl Default for Data {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Data({} bytes)", self.len())
    }
}

/// How important a flash message is; pages usually style each level differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashLevel {
    /// Neutral information.
    Info,
    /// Something the user asked for worked.
    Success,
    /// Something needs the user's attention.
    Warning,
    /// Something failed.
    Error,
}

/// A message shown once, on the next request that reads it (G13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    /// How important the message is.
    pub level: FlashLevel,
    /// The text to show.
    pub message: String,
}

/// The user a session belongs to and where the login came from, recorded at login (G4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBinding {
    /// The application's user id.
    pub user_id: String,
    /// The `User-Agent` of the login request, for the device list.
    pub user_agent: Option<String>,
    /// The client address of the login request, for the device list.
    pub ip: Option<IpAddr>,
}

/// Per-session expiry settings that override the layer's defaults (G8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExpiryOverrides {
    /// Idle timeout for this session instead of the layer's.
    pub idle_timeout: Option<Duration>,
    /// Absolute lifetime (from creation) for this session instead of the layer's.
    pub absolute_lifetime: Option<Duration>,
}

impl ExpiryOverrides {
    /// Whether neither setting is overridden.
    pub fn is_default(&self) -> bool {
        self.idle_timeout.is_none() && self.absolute_lifetime.is_none()
    }
}

/// One session as a store keeps it, keyed by the digest of its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The public handle shown in device lists; kept when the id is cycled.
    pub handle: SessionHandle,
    /// When the session was created, or when its user logged in: the start of the absolute
    /// lifetime.
    pub created_at: Timestamp,
    /// The last time a request used the session (throttled, see G9).
    pub last_seen_at: Timestamp,
    /// When the record stops being valid: the earlier of the idle and absolute deadlines.
    /// Stores must treat a record with `expires_at <= now` as absent.
    pub expires_at: Timestamp,
    /// Per-session expiry settings.
    pub expiry: ExpiryOverrides,
    /// The user the session belongs to, if someone logged in.
    pub user: Option<UserBinding>,
    /// The session's key-value data.
    pub data: Data,
    /// Flash messages not yet shown.
    pub flashes: Vec<Flash>,
}

impl Record {
    /// The user id the session is bound to.
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_ref().map(|user| user.user_id.as_str())
    }

    /// Whether the record is expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    /// What a device list shows about this session.
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            handle: self.handle,
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            expires_at: self.expires_at,
            user_agent: self.user.as_ref().and_then(|user| user.user_agent.clone()),
            ip: self.user.as_ref().and_then(|user| user.ip),
            current: false,
        }
    }
}

/// One entry of a user's device list (G4). Holds no secret: the handle cannot be used as a
/// cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session's public handle, to end it with.
    pub handle: SessionHandle,
    /// When the session was created or logged in.
    pub created_at: Timestamp,
    /// The last time a request used it.
    pub last_seen_at: Timestamp,
    /// When it expires unless used again.
    pub expires_at: Timestamp,
    /// The `User-Agent` recorded at login.
    pub user_agent: Option<String>,
    /// The client address recorded at login.
    pub ip: Option<IpAddr>,
    /// Whether this is the session of the request that asked; always `false` outside a
    /// request.
    pub current: bool,
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.as_millis())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u64::deserialize(deserializer).map(Timestamp::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_data_is_kept_in_place_and_large_data_shared() {
        // 22 bytes: the longest kept in place; 23: shared.
        let small = r#"{"key":"0123456789ab"}"#;
        let large = r#"{"key":"0123456789abc"}"#;
        assert_eq!((small.len(), large.len()), (INLINE_BYTES, INLINE_BYTES + 1));
        let small_data = Data::from_json(small).unwrap();
        let large_data = Data::from_json(large).unwrap();
        assert!(matches!(small_data.0, Text::Inline { .. }));
        assert!(matches!(large_data.0, Text::Shared(_)));
        assert!(matches!(Data::empty().0, Text::Inline { .. }));
        assert_eq!(small_data.as_json(), small);
        assert_eq!(large_data.as_json(), large);
        assert_eq!(small_data.clone(), small_data);
        assert_ne!(small_data, large_data);
        assert!(Data::empty().is_empty());
        assert_eq!(
            small_data.get_raw("key").unwrap().map(RawValue::get),
            Some(r#""0123456789ab""#)
        );
        let multibyte = r#"{"k":"é€😀"}"#;
        assert_eq!(Data::from_json(multibyte).unwrap().as_json(), multibyte);
    }

    #[test]
    fn data_stays_three_words() {
        assert_eq!(std::mem::size_of::<Data>(), 24);
    }
}
