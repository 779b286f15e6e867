//! The Redis store against the whole conformance suite on one server
//! (`SESSIO_TEST_REDIS_URL`), each test under a fresh key prefix.

use sessio_redis::RedisStore;
use sessio_testkit::servers::unique_name;

async fn fresh_store() -> Option<RedisStore> {
    let Ok(url) = std::env::var("SESSIO_TEST_REDIS_URL") else {
        return sessio_testkit::server_missing("Redis", "SESSIO_TEST_REDIS_URL is not set");
    };
    let prefix = unique_name("t");
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
