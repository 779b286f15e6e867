//! The cookie decoder on arbitrary input: it must never panic, and never open anything
//! that was not sealed by the ring (nothing here was, so nothing may open).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sessio::{CookieKey, KeyRing};

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let newest = CookieKey::new("k2", &[2u8; 32]).expect("valid key");
        let older = CookieKey::new("k1", &[1u8; 32]).expect("valid key");
        KeyRing::new(vec![newest, older]).expect("valid ring")
    })
}

fuzz_target!(|data: &[u8]| {
    assert!(!sessio::fuzzing::open(ring(), "__Host-sessio", data));
});
