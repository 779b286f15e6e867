//! The Redis store against the whole conformance suite on one server
//! (`SESSIO_TEST_REDIS_URL`), each test under a fresh key prefix.

use std::sync::atomic::{AtomicU64, Ordering};

use sessio_redis::RedisStore;

async fn fresh_store() -> Option<RedisStore> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Ok(url) = std::env::var("SESSIO_TEST_REDIS_URL") else {
        return sessio_testkit::server_missing("Redis", "SESSIO_TEST_REDIS_URL is not set");
    };
    let prefix = format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    match RedisStore::builder(&url)
        .prefix(prefix)
        .without_background_purge()
        .connect()
        .await
    {
        Ok(store) => Some(store),
        Err(error) => sessio_testkit::server_missing("Redis", error),
    }
}

sessio_testkit::store_conformance!(fresh_store());
