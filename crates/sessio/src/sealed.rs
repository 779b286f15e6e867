//! Cookie-only sessions: the whole session sealed in its cookie with AES-256-GCM (G10).
//!
//! A cookie value is `1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`:
//! - a fresh 96-bit random nonce for every cookie;
//! - the format version, the cookie name, a purpose string and the key id are bound in as
//!   associated data, so a value sealed for another cookie, another app or under another key
//!   id fails to open;
//! - the plaintext is the session in compact JSON, *including its expiry*: the `cookie` crate
//!   and browsers authenticate nothing about `Max-Age`, so the deadline must travel sealed.
//!
//! Opening is strict: the exact grammar, canonical base64, a listed key id, an authentic tag,
//! a payload with exactly the known fields. Anything else is no session. There is no fallback
//! decoder of any kind (peers that had one: rack-session CVE-2026-39324).

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ConfigError, SessionError};
use crate::id::SessionHandle;
use crate::record::{Data, ExpiryOverrides, Flash, Record, UserBinding};
use crate::time::Timestamp;

/// The format version written and accepted.
const VERSION: &str = "1";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Browsers drop cookies whose name and value exceed this many bytes.
pub const MAX_COOKIE_BYTES: usize = 4096;
const MAX_KEY_ID: usize = 16;

/// One AES-256 key with the id that names it in cookies.
pub struct CookieKey {
    id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl CookieKey {
    /// A key from 32 secret random bytes. `id` (1 to 16 characters of `A-Za-z0-9_-`) names
    /// the key in every cookie it seals, so a key ring knows which key opens which cookie.
    ///
    /// # Errors
    /// A key that is not exactly 256 bits, or is all zeros, or an invalid id.
    pub fn new(id: impl Into<String>, secret: &[u8]) -> Result<Self, ConfigError> {
        let id = id.into();
        let valid_id = !id.is_empty()
            && id.len() <= MAX_KEY_ID
            && id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !valid_id {
            return Err(ConfigError::InvalidKeyId(id));
        }
        if secret.len() != 32 {
            return Err(ConfigError::WeakCookieKey(
                "cookie keys must be exactly 256 bits (32 bytes) of secret random data",
            ));
        }
        if secret.iter().all(|byte| *byte == 0) {
            return Err(ConfigError::WeakCookieKey(
                "a cookie key of all zeros is not a secret",
            ));
        }
        let cipher = Aes256Gcm::new_from_slice(secret)
            .map_err(|_| ConfigError::WeakCookieKey("the key could not be used for AES-256"))?;
        Ok(Self { id, cipher })
    }

    /// A key from base64 (standard or URL-safe, padded or not) of 32 bytes, as kept in an
    /// environment variable.
    pub fn from_base64(id: impl Into<String>, encoded: &str) -> Result<Self, ConfigError> {
        let trimmed = encoded.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
            .map_err(|_| ConfigError::WeakCookieKey("the cookie key is not valid base64"))?;
        Self::new(id, &bytes)
    }

    /// The id that names this key in cookies.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The keys cookies may be sealed with: the first seals every new cookie, any of them opens
/// one. To rotate, put a new key first and keep the old one listed until every cookie it
/// sealed has expired or been re-issued; sessio re-issues a cookie opened with an older key
/// under the newest one whenever the session is used. A key taken off the list retires
/// every cookie it sealed.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<CookieKey>,
}

impl KeyRing {
    /// A ring of `keys`, newest first.
    ///
    /// # Errors
    /// No keys, or two keys with the same id.
    pub fn new(keys: Vec<CookieKey>) -> Result<Self, ConfigError> {
        if keys.is_empty() {
            return Err(ConfigError::WeakCookieKey(
                "a key ring needs at least one key",
            ));
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|earlier| earlier.id == key.id) {
                return Err(ConfigError::InvalidKeyId(key.id.clone()));
            }
        }
        Ok(Self { keys })
    }

    /// A ring of one key.
    pub fn single(key: CookieKey) -> Self {
        Self { keys: vec![key] }
    }
}

/// A session as it travels in a cookie.
#[derive(Serialize)]
struct PayloadOut<'a> {
    s: SessionHandle,
    t: u64,
    c: u64,
    l: u64,
    e: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ua: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    i: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    a: Option<u64>,
    #[serde(skip_serializing_if = "<[Flash]>::is_empty")]
    f: &'a [Flash],
    d: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayloadIn<'a> {
    s: SessionHandle,
    t: u64,
    c: u64,
    l: u64,
    e: u64,
    #[serde(borrow, default)]
    u: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ua: Option<Cow<'a, str>>,
    #[serde(default)]
    ip: Option<IpAddr>,
    #[serde(default)]
    i: Option<u64>,
    #[serde(default)]
    a: Option<u64>,
    #[serde(default)]
    f: Vec<Flash>,
    #[serde(borrow)]
    d: &'a RawValue,
}

/// A session opened from a cookie.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    pub(crate) record: Record,
    /// When this identity (this session id) was issued: the time "not before" revocations
    /// compare with.
    pub(crate) issued_at: Timestamp,
    /// Sealed under an older key: re-issue under the newest.
    pub(crate) stale_key: bool,
}

fn millis(duration: Option<Duration>) -> Option<u64> {
    duration.map(|duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

impl KeyRing {
    fn associated_data(cookie_name: &str, purpose: &str, key_id: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + cookie_name.len() + purpose.len() + key_id.len());
        for part in ["sessio-cookie", VERSION, cookie_name, purpose, key_id] {
            aad.extend_from_slice(part.as_bytes());
            aad.push(0);
        }
        aad
    }

    /// Writes the payload of `record` to `out` as compact JSON.
    fn write_plaintext(
        out: impl std::io::Write,
        record: &Record,
        issued_at: Timestamp,
    ) -> Result<(), SessionError> {
        let serialize_error = |source| SessionError::Serialize {
            key: "*".into(),
            source,
        };
        let data: &RawValue =
            serde_json::from_str(record.data.as_json()).map_err(serialize_error)?;
        let user = record.user.as_ref();
        let payload = PayloadOut {
            s: record.handle,
            t: issued_at.as_millis(),
            c: record.created_at.as_millis(),
            l: record.last_seen_at.as_millis(),
            e: record.expires_at.as_millis(),
            u: user.map(|user| user.user_id.as_str()),
            ua: user.and_then(|user| user.user_agent.as_deref()),
            ip: user.and_then(|user| user.ip),
            i: millis(record.expiry.idle_timeout),
            a: millis(record.expiry.absolute_lifetime),
            f: &record.flashes,
            d: data,
        };
        serde_json::to_writer(out, &payload).map_err(serialize_error)
    }

    /// The length of `record`'s payload, counted without building it.
    fn plaintext_len(record: &Record, issued_at: Timestamp) -> Result<usize, SessionError> {
        let mut counter = ByteCounter(0);
        Self::write_plaintext(&mut counter, record, issued_at)?;
        Ok(counter.0)
    }

    /// The length of the cookie value sealing a plaintext of `plaintext` bytes.
    fn sealed_len(&self, plaintext: usize) -> usize {
        let binary = NONCE_BYTES + plaintext + TAG_BYTES;
        VERSION.len() + 1 + self.keys[0].id.len() + 1 + (binary * 4).div_ceil(3)
    }

    /// Checks that `record` fits in a cookie called `cookie_name` (G10), before anything is
    /// sent.
    pub(crate) fn check_size(
        &self,
        cookie_name: &str,
        record: &Record,
    ) -> Result<(), SessionError> {
        let plaintext = Self::plaintext_len(record, record.created_at)?;
        let size = cookie_name.len() + 1 + self.sealed_len(plaintext);
        if size > MAX_COOKIE_BYTES {
            return Err(SessionError::CookieTooLarge {
                size,
                limit: MAX_COOKIE_BYTES,
            });
        }
        Ok(())
    }

    /// Seals `record` under the newest key.
    pub(crate) fn seal(
        &self,
        cookie_name: &str,
        purpose: &str,
        record: &Record,
        issued_at: Timestamp,
    ) -> Result<String, SessionError> {
        // One buffer, sealed in place: nonce, then the plaintext turned ciphertext, then the tag.
        let mut binary = Vec::with_capacity(256);
        binary.extend_from_slice(&[0u8; NONCE_BYTES]);
        Self::write_plaintext(&mut binary, record, issued_at)?;
        let size = cookie_name.len() + 1 + self.sealed_len(binary.len() - NONCE_BYTES);
        if size > MAX_COOKIE_BYTES {
            return Err(SessionError::CookieTooLarge {
                size,
                limit: MAX_COOKIE_BYTES,
            });
        }
        let key = &self.keys[0];
        let (nonce, plaintext) = binary.split_at_mut(NONCE_BYTES);
        getrandom::fill(nonce).map_err(|_| {
            SessionError::Store(crate::StoreError::backend(
                "the operating system's random number generator failed; no cookie can be sealed",
            ))
        })?;
        let aad = Self::associated_data(cookie_name, purpose, &key.id);
        let tag = key
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(nonce), &aad, plaintext)
            .map_err(|_| {
                SessionError::Store(crate::StoreError::backend("AES-GCM sealing failed"))
            })?;
        binary.extend_from_slice(&tag);
        let mut value = String::with_capacity(size - cookie_name.len() - 1);
        value.push_str(VERSION);
        value.push('.');
        value.push_str(&key.id);
        value.push('.');
        URL_SAFE_NO_PAD.encode_string(&binary, &mut value);
        Ok(value)
    }

    /// Opens a cookie value sealed for `cookie_name` and `purpose`; `None` for anything that
    /// is not exactly such a value, sealed by a listed key.
    pub(crate) fn open(&self, cookie_name: &str, purpose: &str, value: &str) -> Option<Opened> {
        if cookie_name.len() + 1 + value.len() > MAX_COOKIE_BYTES {
            return None;
        }
        let mut parts = value.split('.');
        let (Some(version), Some(key_id), Some(body), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if version != VERSION {
            return None;
        }
        let (index, key) = self
            .keys
            .iter()
            .enumerate()
            .find(|(_, key)| key.id == key_id)?;
        let mut binary = URL_SAFE_NO_PAD.decode(body).ok()?;
        if binary.len() < NONCE_BYTES + TAG_BYTES {
            return None;
        }
        let (nonce, rest) = binary.split_at_mut(NONCE_BYTES);
        let (sealed, tag) = rest.split_at_mut(rest.len() - TAG_BYTES);
        let aad = Self::associated_data(cookie_name, purpose, key_id);
        key.cipher
            .decrypt_in_place_detached(Nonce::from_slice(nonce), &aad, sealed, Tag::from_slice(tag))
            .ok()?;
        let (record, issued_at) = decode_payload(sealed)?;
        Some(Opened {
            record,
            issued_at,
            stale_key: index > 0,
        })
    }
}

/// An `io::Write` that only counts the bytes written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The payload decoder: strict JSON with exactly the known fields, data an object.
fn decode_payload(plaintext: &[u8]) -> Option<(Record, Timestamp)> {
    let payload: PayloadIn<'_> = serde_json::from_slice(plaintext).ok()?;
    let data = Data::from_json(payload.d.get()).ok()?;
    let record = Record {
        handle: payload.s,
        created_at: Timestamp::from_millis(payload.c),
        last_seen_at: Timestamp::from_millis(payload.l),
        expires_at: Timestamp::from_millis(payload.e),
        expiry: ExpiryOverrides {
            idle_timeout: payload.i.map(Duration::from_millis),
            absolute_lifetime: payload.a.map(Duration::from_millis),
        },
        user: payload.u.map(|user_id| UserBinding {
            user_id: user_id.into_owned(),
            user_agent: payload.ua.map(Cow::into_owned),
            ip: payload.ip,
        }),
        data,
        flashes: payload.f,
    };
    Some((record, Timestamp::from_millis(payload.t)))
}

/// Entry points for the fuzz targets in `fuzz/`: the cookie decoder, and the payload
/// decoder behind the AEAD (which fuzzing cannot reach through forged tags).
#[doc(hidden)]
pub mod fuzzing {
    use super::{KeyRing, decode_payload};

    /// Opens `value` as a cookie called `cookie_name`: `true` if it opened.
    pub fn open(ring: &KeyRing, cookie_name: &str, value: &[u8]) -> bool {
        std::str::from_utf8(value)
            .is_ok_and(|value| ring.open(cookie_name, "fuzz", value).is_some())
    }

    /// Decodes `plaintext` as a sealed payload: `true` if it is one.
    pub fn payload(plaintext: &[u8]) -> bool {
        decode_payload(plaintext).is_some()
    }
}
