//! The Redis store against the whole conformance suite on a three-node Redis Cluster
//! (`SESSIO_TEST_REDIS_CLUSTER`: comma-separated `redis://host:port` nodes), each test under
//! a fresh key prefix.

use sessio_redis::RedisStore;
use sessio_testkit::servers::unique_name;

async fn fresh_store() -> Option<RedisStore> {
    let Ok(nodes) = std::env::var("SESSIO_TEST_REDIS_CLUSTER") else {
        return sessio_testkit::server_missing(
            "Redis Cluster",
            "SESSIO_TEST_REDIS_CLUSTER is not set",
        );
    };
    let nodes: Vec<&str> = nodes.split(',').collect();
    let prefix = unique_name("t");
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
