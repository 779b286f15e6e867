//! Opening connections and migrating the schema.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sessio::StoreError;

use crate::worker::sqlite_error;

/// The table, its indexes, and the version of both. Each entry upgrades from the version
/// before it; entries are never edited once released, only appended.
const MIGRATIONS: &[&str] = &[
    // Version 1. `moved = 1` rows are moved markers left by a cycle (G3): they hold no
    // session, block the digest from reuse, and expire like records.
    "CREATE TABLE sessio_sessions (
        digest BLOB PRIMARY KEY NOT NULL,
        moved INTEGER NOT NULL DEFAULT 0,
        handle BLOB,
        user_id TEXT,
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sessio_sessions_by_user ON sessio_sessions (user_id, created_at)
        WHERE user_id IS NOT NULL;
    CREATE INDEX sessio_sessions_by_expiry ON sessio_sessions (expires_at);",
    // Version 2: ending a session by its handle alone (the admin CLI).
    "CREATE INDEX sessio_sessions_by_handle ON sessio_sessions (handle) WHERE handle IS NOT NULL;",
];

/// The schema version this crate writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Cap on the WAL file kept after a checkpoint, so a burst of writes does not leave a large
/// file behind.
const JOURNAL_SIZE_LIMIT: i64 = 32 * 1024 * 1024;

pub(crate) fn open_writer(path: &Path, synchronous_full: bool) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(sqlite_error)?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_error)?;
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sqlite_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::backend(format!(
            "sqlite refused WAL mode (got {mode}); use a file on a local file system"
        )));
    }
    let synchronous = if synchronous_full { "FULL" } else { "NORMAL" };
    connection
        .execute_batch(&format!(
            "PRAGMA synchronous = {synchronous};
             PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};
             PRAGMA foreign_keys = OFF;"
        ))
        .map_err(sqlite_error)?;
    Ok(connection)
}

pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error)?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_error)?;
    Ok(connection)
}

/// Creates or upgrades the schema; idempotent. Refuses a database written by a newer sessio.
pub(crate) fn migrate(connection: &mut Connection) -> Result<i64, StoreError> {
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    transaction
        .execute_batch("CREATE TABLE IF NOT EXISTS sessio_schema (version INTEGER NOT NULL)")
        .map_err(sqlite_error)?;
    let current: i64 = transaction
        .query_row("SELECT version FROM sessio_schema", [], |row| row.get(0))
        .optional()
        .map_err(sqlite_error)?
        .unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::backend(format!(
            "the session database has schema version {current}, newer than this sessio-sqlite understands ({SCHEMA_VERSION}); upgrade sessio-sqlite"
        )));
    }
    for migration in MIGRATIONS
        .iter()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        transaction.execute_batch(migration).map_err(sqlite_error)?;
    }
    transaction
        .execute("DELETE FROM sessio_schema", [])
        .map_err(sqlite_error)?;
    transaction
        .execute(
            "INSERT INTO sessio_schema (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )
        .map_err(sqlite_error)?;
    transaction.commit().map_err(sqlite_error)?;
    Ok(SCHEMA_VERSION)
}
