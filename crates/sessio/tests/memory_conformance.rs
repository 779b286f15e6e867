//! The memory store against the whole conformance suite.

sessio_testkit::store_conformance!(async { Some(sessio::MemoryStore::new()) });
