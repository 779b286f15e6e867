//! [`SqliteStore`]: the contract operations as SQL on the worker threads.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use sessio::codec::{self, RecordColumns};
use sessio::{
    Clock, CycleChange, Flash, IdDigest, Patch, Record, SessionHandle, SessionInfo, SessionStore,
    StoreError, SystemClock, Timestamp, WriteOutcome,
};

use crate::schema;
use crate::worker::{Workers, sqlite_error};

const DEFAULT_READERS: usize = 2;
const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);
const PURGE_BATCH: usize = 1_000;

/// A session store in one SQLite file. Cheap to clone; clones share the worker threads,
/// which stop when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    workers: Arc<Workers>,
    path: Arc<PathBuf>,
    _purger: Arc<Purger>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    readers: usize,
    purge_interval: Option<Duration>,
    synchronous_full: bool,
}

impl SqliteStoreBuilder {
    /// Reader threads, each with its own connection (default 2).
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers.clamp(1, 64);
        self
    }

    /// How often a background thread deletes expired records, in batches (default 60 s).
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.purge_interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// No background purge; call [`Sessions::purge_expired`](sessio::Sessions::purge_expired)
    /// yourself.
    pub fn without_background_purge(mut self) -> Self {
        self.purge_interval = None;
        self
    }

    /// `PRAGMA synchronous = FULL`: also survive power loss and OS crashes, at the cost of an
    /// fsync per commit. The default (`NORMAL` in WAL mode) survives any crash of the process.
    pub fn synchronous_full(mut self, full: bool) -> Self {
        self.synchronous_full = full;
        self
    }

    /// Opens (creating if needed) the file, migrates the schema and starts the threads.
    pub async fn open(self) -> Result<SqliteStore, StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        // Opening and migrating block; do it off the async executor.
        std::thread::Builder::new()
            .name("sessio-sqlite-open".into())
            .spawn(move || {
                let _ = done.send(self.open_blocking());
            })
            .map_err(StoreError::backend)?;
        result
            .await
            .map_err(|_| StoreError::backend("opening the sqlite store failed"))?
    }

    fn open_blocking(self) -> Result<SqliteStore, StoreError> {
        let mut writer = schema::open_writer(&self.path, self.synchronous_full)?;
        schema::migrate(&mut writer)?;
        let readers = (0..self.readers)
            .map(|_| schema::open_reader(&self.path))
            .collect::<Result<Vec<_>, _>>()?;
        let workers = Workers::start(writer, readers)?;
        let purger = Purger::start(&workers, self.purge_interval);
        Ok(SqliteStore {
            workers,
            path: Arc::new(self.path),
            _purger: Arc::new(purger),
        })
    }
}

impl SqliteStore {
    /// Runs a `count(*)` query whose one parameter is `now` on a reader.
    async fn count_rows(&self, sql: &'static str, now: Timestamp) -> Result<u64, StoreError> {
        let now = sql_time(now);
        self.workers
            .read(move |connection| {
                connection
                    .query_row(sql, [now], |row| row.get::<_, i64>(0))
                    .map(|count| u64::try_from(count).unwrap_or(0))
                    .map_err(sqlite_error)
            })
            .await
    }

    /// Opens the store in the file at `path` with the default settings.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::builder(path).open().await
    }

    /// Settings for a store in the file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            readers: DEFAULT_READERS,
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
            synchronous_full: false,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the file (migrations run at open).
    pub fn schema_version(&self) -> i64 {
        schema::SCHEMA_VERSION
    }
}

/// Deletes expired records in the background until the store is dropped.
struct Purger {
    thread: Option<std::thread::Thread>,
}

impl Purger {
    fn start(workers: &Arc<Workers>, interval: Option<Duration>) -> Self {
        let Some(interval) = interval else {
            return Self { thread: None };
        };
        let workers: Weak<Workers> = Arc::downgrade(workers);
        let spawned = std::thread::Builder::new()
            .name("sessio-sqlite-purge".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(interval);
                    let Some(workers) = workers.upgrade() else {
                        return;
                    };
                    purge_all(&workers, SystemClock.now());
                }
            });
        match spawned {
            Ok(handle) => Self {
                thread: Some(handle.thread().clone()),
            },
            Err(error) => {
                tracing::warn!(target: "sessio::sqlite", %error, "could not start the purge thread; call Sessions::purge_expired yourself");
                Self { thread: None }
            }
        }
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        if let Some(thread) = &self.thread {
            thread.unpark();
        }
    }
}

/// Purges in batches, each its own write job, so live writes queue between them.
fn purge_all(workers: &Workers, now: Timestamp) {
    let mut total = 0;
    loop {
        match workers.write_blocking(move |connection| purge(connection, now, PURGE_BATCH)) {
            Ok(purged) => {
                total += purged;
                if purged < PURGE_BATCH as u64 {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(target: "sessio::sqlite", %error, "purging expired sessions failed; retrying next interval");
                break;
            }
        }
    }
    if total > 0 {
        tracing::debug!(target: "sessio::sqlite", purged = total, "purged expired sessions");
    }
}

fn sql_time(time: Timestamp) -> i64 {
    i64::try_from(time.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp(millis: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn handle_from(bytes: &[u8]) -> Result<SessionHandle, StoreError> {
    <[u8; 16]>::try_from(bytes)
        .map(SessionHandle::from_bytes)
        .map_err(|_| StoreError::Corrupt("a session handle is not 16 bytes".into()))
}

/// A live-record row as read: columns and the undecoded body.
struct RawRecord {
    handle: Vec<u8>,
    user_id: Option<String>,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    body: String,
}

const RECORD_COLUMNS: &str = "handle, user_id, created_at, last_seen_at, expires_at, body";

impl RawRecord {
    /// Reads [`RECORD_COLUMNS`] starting at column `first`.
    fn read(row: &Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            handle: row.get(first)?,
            user_id: row.get(first + 1)?,
            created_at: row.get(first + 2)?,
            last_seen_at: row.get(first + 3)?,
            expires_at: row.get(first + 4)?,
            body: row.get(first + 5)?,
        })
    }

    fn decode(self) -> Result<Record, StoreError> {
        let columns = RecordColumns {
            handle: handle_from(&self.handle)?,
            user_id: self.user_id,
            created_at: timestamp(self.created_at),
            last_seen_at: timestamp(self.last_seen_at),
            expires_at: timestamp(self.expires_at),
        };
        codec::decode_record(columns, &self.body)
    }
}

/// What is under a digest, as the writer sees it inside its transaction.
enum Slot {
    Empty,
    Moved { until: i64 },
    Live(RawRecord),
}

fn slot(connection: &Connection, digest: &IdDigest) -> Result<Slot, StoreError> {
    connection
        .query_row(
            &format!("SELECT moved, {RECORD_COLUMNS} FROM sessio_sessions WHERE digest = ?1"),
            [digest.as_bytes().as_slice()],
            |row| {
                let moved: i64 = row.get(0)?;
                if moved != 0 {
                    Ok(Slot::Moved { until: row.get(5)? })
                } else {
                    RawRecord::read(row, 1).map(Slot::Live)
                }
            },
        )
        .optional()
        .map_err(sqlite_error)
        .map(|slot| slot.unwrap_or(Slot::Empty))
}

/// The live record under `digest` at `now`, or why there is none.
fn live(
    connection: &Connection,
    digest: &IdDigest,
    now: i64,
) -> Result<Result<RawRecord, WriteOutcome>, StoreError> {
    Ok(match slot(connection, digest)? {
        Slot::Live(raw) if raw.expires_at > now => Ok(raw),
        Slot::Moved { until } if until > now => Err(WriteOutcome::Moved),
        _ => Err(WriteOutcome::Gone),
    })
}

fn insert(connection: &Connection, digest: &IdDigest, record: &Record) -> Result<bool, StoreError> {
    let inserted = connection
        .execute(
            "INSERT INTO sessio_sessions
                (digest, moved, handle, user_id, created_at, last_seen_at, expires_at, body)
             VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (digest) DO NOTHING",
            params![
                digest.as_bytes().as_slice(),
                record.handle.as_bytes().as_slice(),
                record.user_id(),
                sql_time(record.created_at),
                sql_time(record.last_seen_at),
                sql_time(record.expires_at),
                codec::encode_body(record),
            ],
        )
        .map_err(sqlite_error)?;
    Ok(inserted == 1)
}

/// Ends the user's oldest live sessions beyond `max`, never `keep`.
fn evict_beyond(
    connection: &Connection,
    user_id: &str,
    max: NonZeroU32,
    keep: &SessionHandle,
    now: i64,
) -> Result<(), StoreError> {
    connection
        .execute(
            "DELETE FROM sessio_sessions WHERE digest IN (
                SELECT digest FROM sessio_sessions
                WHERE user_id = ?1 AND moved = 0 AND expires_at > ?2
                ORDER BY handle = ?3 DESC, created_at DESC
                LIMIT -1 OFFSET ?4)",
            params![user_id, now, keep.as_bytes().as_slice(), max.get()],
        )
        .map_err(sqlite_error)?;
    Ok(())
}

fn purge(connection: &Connection, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
    let deleted = connection
        .execute(
            "DELETE FROM sessio_sessions WHERE digest IN (
                SELECT digest FROM sessio_sessions WHERE expires_at <= ?1 LIMIT ?2)",
            params![sql_time(now), i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .map_err(sqlite_error)?;
    Ok(deleted as u64)
}

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

/// Counts the returned `expires_at` values later than `now`: rows that were live.
fn count_live(statement_rows: Vec<i64>, now: i64) -> u64 {
    statement_rows
        .into_iter()
        .filter(|expires| *expires > now)
        .count() as u64
}

fn deleted_expiries(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<i64>, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(sqlite_error)?;
    let rows = statement
        .query_map(params, |row| row.get::<_, i64>(0))
        .map_err(sqlite_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)
}

impl SessionStore for SqliteStore {
    async fn load(&self, digest: &IdDigest, now: Timestamp) -> Result<Option<Record>, StoreError> {
        let digest = *digest;
        self.workers
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(&format!(
                        "SELECT {RECORD_COLUMNS} FROM sessio_sessions
                         WHERE digest = ?1 AND moved = 0 AND expires_at > ?2"
                    ))
                    .map_err(sqlite_error)?;
                let raw = statement
                    .query_row(
                        params![digest.as_bytes().as_slice(), sql_time(now)],
                        |row| RawRecord::read(row, 0),
                    )
                    .optional()
                    .map_err(sqlite_error)?;
                raw.map(RawRecord::decode).transpose()
            })
            .await
    }

    async fn create(
        &self,
        digest: &IdDigest,
        record: &Record,
        max_sessions_per_user: Option<NonZeroU32>,
    ) -> Result<WriteOutcome, StoreError> {
        let digest = *digest;
        let record = record.clone();
        self.workers
            .write(move |connection| {
                if !insert(connection, &digest, &record)? {
                    return Ok(WriteOutcome::Exists);
                }
                if let (Some(max), Some(user_id)) = (max_sessions_per_user, record.user_id()) {
                    let now = sql_time(record.last_seen_at);
                    evict_beyond(connection, user_id, max, &record.handle, now)?;
                }
                Ok(WriteOutcome::Done)
            })
            .await
    }

    async fn apply(
        &self,
        digest: &IdDigest,
        patch: &Patch,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let digest = *digest;
        let patch = patch.clone();
        let now = sql_time(now);
        self.workers
            .write(move |connection| {
                let raw = match live(connection, &digest, now)? {
                    Ok(raw) => raw,
                    Err(outcome) => return Ok(outcome),
                };
                let key = digest.as_bytes().as_slice();
                if !patch.changes_content() && patch.expiry.is_none() {
                    // A touch: the body is untouched, no need to decode it.
                    if let Some(touch) = patch.touch {
                        connection
                            .execute(
                                "UPDATE sessio_sessions SET last_seen_at = ?2, expires_at = ?3 WHERE digest = ?1",
                                params![key, sql_time(touch.last_seen_at), sql_time(touch.expires_at)],
                            )
                            .map_err(sqlite_error)?;
                    }
                    return Ok(WriteOutcome::Done);
                }
                let mut record = raw.decode()?;
                patch.apply_to(&mut record).map_err(corrupt)?;
                connection
                    .execute(
                        "UPDATE sessio_sessions SET last_seen_at = ?2, expires_at = ?3, body = ?4 WHERE digest = ?1",
                        params![
                            key,
                            sql_time(record.last_seen_at),
                            sql_time(record.expires_at),
                            codec::encode_body(&record)
                        ],
                    )
                    .map_err(sqlite_error)?;
                Ok(WriteOutcome::Done)
            })
            .await
    }

    async fn cycle(
        &self,
        old: &IdDigest,
        new: &IdDigest,
        change: &CycleChange,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let (old, new) = (*old, *new);
        let change = change.clone();
        let now = sql_time(now);
        self.workers
            .write(move |connection| {
                let raw = match live(connection, &old, now)? {
                    Ok(raw) => raw,
                    Err(outcome) => return Ok(outcome),
                };
                let mut record = raw.decode()?;
                change.patch.apply_to(&mut record).map_err(corrupt)?;
                if let Some(created_at) = change.created_at {
                    record.created_at = created_at;
                }
                if let Some(bind) = &change.bind {
                    record.user = Some(bind.clone());
                }
                if !insert(connection, &new, &record)? {
                    return Ok(WriteOutcome::Exists);
                }
                let until = sql_time(change.moved_marker_until);
                let old_key = old.as_bytes().as_slice();
                if until > now {
                    connection
                        .execute(
                            "UPDATE sessio_sessions
                             SET moved = 1, handle = NULL, user_id = NULL, expires_at = ?2, body = '{}'
                             WHERE digest = ?1",
                            params![old_key, until],
                        )
                        .map_err(sqlite_error)?;
                } else {
                    connection
                        .execute("DELETE FROM sessio_sessions WHERE digest = ?1", [old_key])
                        .map_err(sqlite_error)?;
                }
                if let (Some(max), Some(bind)) = (change.max_sessions_per_user, &change.bind) {
                    evict_beyond(connection, &bind.user_id, max, &record.handle, now)?;
                }
                Ok(WriteOutcome::Done)
            })
            .await
    }

    async fn destroy(&self, digest: &IdDigest, now: Timestamp) -> Result<bool, StoreError> {
        let digest = *digest;
        let now = sql_time(now);
        self.workers
            .write(move |connection| {
                let expiries = deleted_expiries(
                    connection,
                    "DELETE FROM sessio_sessions WHERE digest = ?1 AND moved = 0 RETURNING expires_at",
                    [digest.as_bytes().as_slice()],
                )?;
                Ok(count_live(expiries, now) > 0)
            })
            .await
    }

    async fn take_flashes(
        &self,
        digest: &IdDigest,
        now: Timestamp,
    ) -> Result<Option<Vec<Flash>>, StoreError> {
        let digest = *digest;
        let now = sql_time(now);
        self.workers
            .write(move |connection| {
                let Ok(raw) = live(connection, &digest, now)? else {
                    return Ok(None);
                };
                let mut record = raw.decode()?;
                let flashes = std::mem::take(&mut record.flashes);
                if !flashes.is_empty() {
                    connection
                        .execute(
                            "UPDATE sessio_sessions SET body = ?2 WHERE digest = ?1",
                            params![digest.as_bytes().as_slice(), codec::encode_body(&record)],
                        )
                        .map_err(sqlite_error)?;
                }
                Ok(Some(flashes))
            })
            .await
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let user_id = user_id.to_owned();
        let now = sql_time(now);
        self.workers
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(&format!(
                        "SELECT {RECORD_COLUMNS} FROM sessio_sessions
                         WHERE user_id = ?1 AND moved = 0 AND expires_at > ?2
                         ORDER BY created_at, handle"
                    ))
                    .map_err(sqlite_error)?;
                let rows = statement
                    .query_map(params![user_id, now], |row| RawRecord::read(row, 0))
                    .map_err(sqlite_error)?;
                let mut sessions = Vec::new();
                for raw in rows {
                    sessions.push(raw.map_err(sqlite_error)?.decode()?.info());
                }
                Ok(sessions)
            })
            .await
    }

    async fn destroy_user_session(
        &self,
        user_id: &str,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let user_id = user_id.to_owned();
        let handle = *handle;
        let now = sql_time(now);
        self.workers
            .write(move |connection| {
                let expiries = deleted_expiries(
                    connection,
                    "DELETE FROM sessio_sessions
                     WHERE user_id = ?1 AND handle = ?2 AND moved = 0 RETURNING expires_at",
                    params![user_id, handle.as_bytes().as_slice()],
                )?;
                Ok(count_live(expiries, now) > 0)
            })
            .await
    }

    async fn destroy_user_sessions(
        &self,
        user_id: &str,
        except: Option<&SessionHandle>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let user_id = user_id.to_owned();
        let except = except.map(|handle| handle.as_bytes().to_vec());
        let now = sql_time(now);
        self.workers
            .write(move |connection| {
                let expiries = deleted_expiries(
                    connection,
                    "DELETE FROM sessio_sessions
                     WHERE user_id = ?1 AND moved = 0 AND (?2 IS NULL OR handle <> ?2)
                     RETURNING expires_at",
                    params![user_id, except],
                )?;
                Ok(count_live(expiries, now))
            })
            .await
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.workers
            .write(move |connection| purge(connection, now, limit))
            .await
    }

    async fn count(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.count_rows(
            "SELECT count(*) FROM sessio_sessions WHERE moved = 0 AND expires_at > ?1",
            now,
        )
        .await
    }

    async fn find_handle(
        &self,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        let handle = *handle;
        let now = sql_time(now);
        self.workers
            .read(move |connection| {
                connection
                    .query_row(
                        "SELECT user_id FROM sessio_sessions
                         WHERE handle = ?1 AND moved = 0 AND expires_at > ?2",
                        params![handle.as_bytes().as_slice(), now],
                        |row| row.get::<_, Option<String>>(0),
                    )
                    .optional()
                    .map(Option::flatten)
                    .map_err(sqlite_error)
            })
            .await
    }

    async fn destroy_all(&self, now: Timestamp) -> Result<u64, StoreError> {
        let now = sql_time(now);
        self.workers
            .write(move |connection| {
                let expiries = deleted_expiries(
                    connection,
                    "DELETE FROM sessio_sessions WHERE moved = 0 RETURNING expires_at",
                    [],
                )?;
                Ok(count_live(expiries, now))
            })
            .await
    }

    async fn count_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.count_rows(
            "SELECT count(*) FROM sessio_sessions WHERE expires_at <= ?1",
            now,
        )
        .await
    }

    async fn top_users(
        &self,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let now = sql_time(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.workers
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT user_id, count(*) FROM sessio_sessions
                         WHERE user_id IS NOT NULL AND moved = 0 AND expires_at > ?1
                         GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT ?2",
                    )
                    .map_err(sqlite_error)?;
                let rows = statement
                    .query_map(params![now, limit], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                    })
                    .map_err(sqlite_error)?;
                rows.map(|row| {
                    row.map(|(user, count)| (user, u64::try_from(count).unwrap_or(0)))
                        .map_err(sqlite_error)
                })
                .collect()
            })
            .await
    }

    async fn user_index_len(&self, user_id: &str) -> Result<u64, StoreError> {
        let user_id = user_id.to_owned();
        self.workers
            .read(move |connection| {
                connection
                    .query_row(
                        "SELECT count(*) FROM sessio_sessions WHERE user_id = ?1 AND moved = 0",
                        [user_id],
                        |row| row.get::<_, i64>(0),
                    )
                    .map(|count| u64::try_from(count).unwrap_or(0))
                    .map_err(sqlite_error)
            })
            .await
    }
}
