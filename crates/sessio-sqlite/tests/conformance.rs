//! The SQLite store against the whole conformance suite, each test on a fresh file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use sessio_sqlite::SqliteStore;

fn fresh_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("sessio-sqlite-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("{}.db", NEXT.fetch_add(1, Ordering::Relaxed)))
}

async fn fresh_store() -> Option<SqliteStore> {
    Some(
        SqliteStore::open(fresh_path())
            .await
            .expect("open sqlite store"),
    )
}

sessio_testkit::store_conformance!(fresh_store());
