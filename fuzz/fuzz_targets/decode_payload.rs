//! The payload decoder behind the AEAD, on arbitrary input: it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sessio::fuzzing::payload(data);
});
