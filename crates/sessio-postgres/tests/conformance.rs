//! The PostgreSQL store against the whole conformance suite, each test in a fresh schema of
//! the server the test command started (`SESSIO_TEST_POSTGRES_URL`).

use std::sync::atomic::{AtomicU64, Ordering};

use sessio_postgres::PostgresStore;

async fn fresh_store() -> Option<PostgresStore> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Ok(url) = std::env::var("SESSIO_TEST_POSTGRES_URL") else {
        return sessio_testkit::server_missing("PostgreSQL", "SESSIO_TEST_POSTGRES_URL is not set");
    };
    let schema = format!(
        "conformance_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let store = PostgresStore::builder(&url)
        .schema(schema)
        .pool_size(8)
        .without_background_purge()
        .connect()
        .await;
    match store {
        Ok(store) => Some(store),
        Err(error) => sessio_testkit::server_missing("PostgreSQL", error),
    }
}

sessio_testkit::store_conformance!(fresh_store());
