//! Bytes of RSS per session held by the memory store: `cargo run --release -p sessio-bench
//! --example memory_footprint [sessions]`. Creates that many small sessions (`{"n":0}`, no
//! user) through the store contract and reports the growth.

use std::time::Duration;

use sessio::{Clock, MemoryStore, SessionStore, SystemClock};
use sessio_testkit::cases::{fresh_digest, record};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let sessions: u64 = std::env::args()
        .nth(1)
        .and_then(|count| count.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = MemoryStore::builder().capacity(usize::MAX).build();
    let now = SystemClock.now();
    let template = record(now, Duration::from_secs(3600), None);
    let before = rss_kib();
    runtime.block_on(async {
        for _ in 0..sessions {
            let mut record = template.clone();
            record.handle = sessio::SessionHandle::generate().expect("random");
            // Its own data text, as a real session has.
            record.data = sessio::Data::from_json(r#"{"n":0}"#).expect("data");
            store
                .create(&fresh_digest(), &record, None)
                .await
                .expect("create");
        }
    });
    let after = rss_kib();
    println!(
        "{sessions} sessions: {:.0} bytes of RSS each",
        (after - before) as f64 * 1024.0 / sessions as f64
    );
}
