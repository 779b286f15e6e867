//! The Redis store against the whole conformance suite on a three-node Redis Cluster
//! (`SESSIO_TEST_REDIS_CLUSTER`: comma-separated `redis://host:port` nodes), each test under
//! a fresh key prefix.

use std::sync::atomic::{AtomicU64, Ordering};

use sessio_redis::RedisStore;

async fn fresh_store() -> Option<RedisStore> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Ok(nodes) = std::env::var("SESSIO_TEST_REDIS_CLUSTER") else {
        return sessio_testkit::server_missing(
            "Redis Cluster",
            "SESSIO_TEST_REDIS_CLUSTER is not set",
        );
    };
    let nodes: Vec<&str> = nodes.split(',').collect();
    let prefix = format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    match RedisStore::cluster_builder(&nodes)
        .prefix(prefix)
        .without_background_purge()
        .connect()
        .await
    {
        Ok(store) => Some(store),
        Err(error) => sessio_testkit::server_missing("Redis Cluster", error),
    }
}

sessio_testkit::store_conformance!(fresh_store());
