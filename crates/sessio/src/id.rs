//! Session ids, the digests stores key records by, and the public handles of device lists.
//!
//! Three different values, on purpose (G6):
//! - [`SessionId`]: 256 random bits, the secret in the cookie. Never stored, logged or printed.
//! - [`IdDigest`]: SHA-256 (or HMAC-SHA-256 with a pepper) of the id. Stores key records by
//!   it, so a dump of the store holds nothing that works as a cookie.
//! - [`SessionHandle`]: 128 random bits chosen when the record is created, shown in device
//!   lists and used to end one device's session. It has a different length than an id, so it
//!   can never pass as a cookie.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ID_BYTES: usize = 32;
/// Length of an id in its cookie form: 32 bytes in unpadded base64url.
const ID_CHARS: usize = 43;
const HANDLE_BYTES: usize = 16;
const HANDLE_CHARS: usize = 22;

/// The operating system's random number generator failed.
///
/// This does not happen on a healthy machine; if it does, no session can be created safely,
/// so the error is surfaced instead of falling back to a weaker source.
#[derive(Debug, thiserror::Error)]
#[error(
    "the operating system's random number generator failed ({0}); no session id can be made safely"
)]
pub struct RandomError(getrandom::Error);

fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(RandomError)?;
    Ok(bytes)
}

/// A session id: 256 bits from the operating system's CSPRNG.
///
/// It is the bearer secret of a session and exists only in the cookie and in memory for the
/// length of a request. `Debug` prints a placeholder; there is no `Display`.
#[derive(Clone)]
pub struct SessionId([u8; ID_BYTES]);

impl SessionId {
    /// Draws a fresh id from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        random_bytes().map(Self)
    }

    /// Parses the cookie form of an id, checking its syntax before any store sees it:
    /// exactly 43 characters of canonical unpadded base64url. Anything else is `None`.
    pub fn parse(cookie_value: &str) -> Option<Self> {
        if cookie_value.len() != ID_CHARS {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(cookie_value, &mut bytes) {
            Ok(ID_BYTES) => Some(Self(bytes)),
            _ => None,
        }
    }

    /// The cookie form of the id. The name says what it is: a secret that belongs in a
    /// `Set-Cookie` header and nowhere else.
    pub fn expose_cookie_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// The digest of a [`SessionId`]: the only form of the id a store ever sees (G6).
///
/// Equality is constant-time. `Debug` prints a placeholder: a digest is not a cookie, but
/// there is no reason for it to appear in logs either.
#[derive(Clone, Copy)]
pub struct IdDigest([u8; 32]);

impl IdDigest {
    /// Wraps 32 digest bytes read back from a store.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest, for stores that key by bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first `bits` bits of the digest (at most 16): the partition a store that
    /// partitions by digest keeps the record in. See [`SessionStore::route_bits`].
    ///
    /// [`SessionStore::route_bits`]: crate::SessionStore::route_bits
    pub fn route(&self, bits: u8) -> u16 {
        let bits = bits.min(16);
        if bits == 0 {
            return 0;
        }
        u16::from_be_bytes([self.0[0], self.0[1]]) >> (16 - bits)
    }

    /// Lower-case hex, for stores that key by text (Redis keys, SQL text columns).
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0x0f)] as char);
        }
        out
    }

    /// Parses [`IdDigest::to_hex`] output.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            bytes[i] = u8::try_from(high * 16 + low).ok()?;
        }
        Some(Self(bytes))
    }
}

impl PartialEq for IdDigest {
    /// Constant time: compares all four 64-bit words, whatever the first difference.
    fn eq(&self, other: &Self) -> bool {
        let word = |bytes: &[u8; 32], i: usize| {
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(chunk)
        };
        let equal = (0..4).fold(subtle::Choice::from(1), |equal, i| {
            equal & word(&self.0, i).ct_eq(&word(&other.0, i))
        });
        equal.into()
    }
}

impl Eq for IdDigest {}

impl std::hash::Hash for IdDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl fmt::Debug for IdDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdDigest(<redacted>)")
    }
}

/// How ids become digests: SHA-256, or HMAC-SHA-256 keyed with a server-side pepper so that
/// even a stolen store plus a guessed id cannot be matched without the pepper.
#[derive(Clone)]
pub(crate) enum IdHasher {
    Sha256,
    Peppered(Hmac<Sha256>),
}

impl IdHasher {
    pub(crate) fn digest(&self, id: &SessionId) -> IdDigest {
        match self {
            Self::Sha256 => IdDigest(Sha256::digest(id.0).into()),
            Self::Peppered(mac) => {
                let mut mac = mac.clone();
                mac.update(&id.0);
                IdDigest(mac.finalize().into_bytes().into())
            }
        }
    }
}

/// The public name of one session in a user's device list.
///
/// Chosen at random when the record is created and kept when the id is cycled, so a device
/// keeps its handle across logins and id changes. It is not a secret and it cannot be used
/// as a cookie: it is 22 characters long and an id is 43.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle([u8; HANDLE_BYTES]);

impl SessionHandle {
    /// Draws a fresh random handle.
    pub fn generate() -> Result<Self, RandomError> {
        random_bytes().map(Self)
    }

    /// Draws a handle whose first `bits` bits (at most 16) are `route`, so that a store that
    /// partitions by digest route can find a session's partition from its handle alone.
    pub fn generate_routed(route: u16, bits: u8) -> Result<Self, RandomError> {
        let mut handle = Self::generate()?;
        let bits = bits.min(16);
        if bits > 0 {
            let mask = u16::MAX << (16 - bits);
            let random = u16::from_be_bytes([handle.0[0], handle.0[1]]) & !mask;
            let prefix = (route << (16 - bits)) & mask;
            let [high, low] = (prefix | random).to_be_bytes();
            handle.0[0] = high;
            handle.0[1] = low;
        }
        Ok(handle)
    }

    /// The first `bits` bits of the handle; for a routed handle, its session's route.
    pub fn route(&self, bits: u8) -> u16 {
        let bits = bits.min(16);
        if bits == 0 {
            return 0;
        }
        u16::from_be_bytes([self.0[0], self.0[1]]) >> (16 - bits)
    }

    /// Parses the text form (22 characters of base64url).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != HANDLE_CHARS {
            return None;
        }
        let mut bytes = [0u8; HANDLE_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(HANDLE_BYTES) => Some(Self(bytes)),
            _ => None,
        }
    }

    /// Wraps handle bytes read back from a store.
    pub const fn from_bytes(bytes: [u8; HANDLE_BYTES]) -> Self {
        Self(bytes)
    }

    /// The raw handle bytes.
    pub const fn as_bytes(&self) -> &[u8; HANDLE_BYTES] {
        &self.0
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; HANDLE_CHARS];
        match URL_SAFE_NO_PAD.encode_slice(self.0, &mut buf) {
            Ok(_) => f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({self})")
    }
}

impl std::str::FromStr for SessionHandle {
    type Err = InvalidHandle;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or(InvalidHandle)
    }
}

/// A string that is not a session handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a session handle: expected 22 characters of base64url, as shown in a session list")]
pub struct InvalidHandle;

impl serde::Serialize for SessionHandle {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionHandle {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(InvalidHandle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_its_cookie_form() {
        let id = SessionId::generate().unwrap();
        let text = id.expose_cookie_value();
        assert_eq!(text.len(), ID_CHARS);
        let parsed = SessionId::parse(&text).unwrap();
        assert_eq!(parsed.0, id.0);
    }

    #[test]
    fn malformed_ids_are_rejected_before_any_store_access() {
        let good = SessionId::generate().unwrap().expose_cookie_value();
        assert!(SessionId::parse("").is_none());
        assert!(SessionId::parse(&good[1..]).is_none());
        assert!(SessionId::parse(&format!("{good}A")).is_none());
        assert!(
            SessionId::parse(&good.replace(|c: char| c.is_ascii_alphanumeric(), "+")).is_none()
        );
        assert!(SessionId::parse(&"é".repeat(21)).is_none());
        // Standard-alphabet and padded forms are not canonical base64url.
        assert!(SessionId::parse(&format!("{}/", &good[..42])).is_none());
        // The 43rd character carries 4 data bits and 2 padding bits that must be zero.
        let mut non_canonical = good.into_bytes();
        non_canonical[42] = b'B';
        assert!(SessionId::parse(std::str::from_utf8(&non_canonical).unwrap()).is_none());
    }

    #[test]
    fn secrets_never_reach_debug_output() {
        let id = SessionId::generate().unwrap();
        let cookie = id.expose_cookie_value();
        let digest = IdHasher::Sha256.digest(&id);
        assert!(!format!("{id:?}").contains(&cookie));
        assert!(!format!("{digest:?}").contains(&digest.to_hex()));
    }

    #[test]
    fn digest_depends_on_the_pepper() {
        let id = SessionId::generate().unwrap();
        let plain = IdHasher::Sha256.digest(&id);
        let mac = Hmac::<Sha256>::new_from_slice(&[7u8; 32]).unwrap();
        let peppered = IdHasher::Peppered(mac).digest(&id);
        assert_ne!(plain, peppered);
        assert_eq!(plain, IdHasher::Sha256.digest(&id));
        assert_eq!(IdDigest::from_hex(&plain.to_hex()), Some(plain));
    }

    #[test]
    fn routed_handles_carry_the_route_of_their_digest() {
        for bits in [1u8, 8, 12, 16] {
            let id = SessionId::generate().unwrap();
            let digest = IdHasher::Sha256.digest(&id);
            let route = digest.route(bits);
            assert!(u32::from(route) < 1 << bits);
            let handle = SessionHandle::generate_routed(route, bits).unwrap();
            assert_eq!(handle.route(bits), route);
        }
        assert_eq!(IdDigest::from_bytes([0xab; 32]).route(8), 0xab);
        assert_eq!(IdDigest::from_bytes([0xab; 32]).route(0), 0);
    }

    #[test]
    fn handles_cannot_pass_as_ids() {
        let handle = SessionHandle::generate().unwrap();
        let text = handle.to_string();
        assert_eq!(SessionHandle::parse(&text), Some(handle));
        assert!(SessionId::parse(&text).is_none());
    }
}
