//! The PostgreSQL store against the whole conformance suite, each test in a fresh schema of
//! the server the test command started (`SESSIO_TEST_POSTGRES_URL`).

use sessio_postgres::PostgresStore;
use sessio_testkit::servers::unique_name;

async fn fresh_store() -> Option<PostgresStore> {
    let Ok(url) = std::env::var("SESSIO_TEST_POSTGRES_URL") else {
        return sessio_testkit::server_missing("PostgreSQL", "SESSIO_TEST_POSTGRES_URL is not set");
    };
    let schema = unique_name("conformance");
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
