//! [`PostgresStore`]: the contract operations as SQL over a connection pool.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use serde_json::value::RawValue;
use sessio::codec::{self, RecordColumns};
use sessio::{
    Clock, CycleChange, Flash, IdDigest, Patch, Record, SessionHandle, SessionInfo, SessionStore,
    StoreError, SystemClock, Timestamp, WriteOutcome,
};
use tokio_postgres::{NoTls, Row};

use crate::queries::{Queries, SCHEMA_VERSION};

const DEFAULT_POOL_SIZE: usize = 16;
const DEFAULT_SCHEMA: &str = "public";
const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);
const PURGE_BATCH: usize = 1_000;
const TIMEOUT: Duration = Duration::from_secs(5);
/// Serializes concurrent migrations from several app instances.
const MIGRATION_LOCK: i64 = 0x5e55_1000;

/// A session store in PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    queries: Queries,
    purge_task: Option<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.purge_task {
            task.abort();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.queries.schema)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    schema: String,
    pool_size: usize,
    purge_interval: Option<Duration>,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(error.to_string())
}

fn pg_error(error: tokio_postgres::Error) -> StoreError {
    // A closed connection or an I/O failure means the server is unreachable: the caller may
    // retry; a SQL error is a real backend failure.
    if error.is_closed() || error.as_db_error().is_none() {
        StoreError::unavailable(error)
    } else {
        StoreError::backend(error)
    }
}

fn pool_error(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => pg_error(error),
        other => unavailable(other),
    }
}

impl PostgresStoreBuilder {
    /// Keep the table in this schema, created if missing (default `public`).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Most connections the pool opens (default 16).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How often a background task deletes expired rows (default 60 s).
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.purge_interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// No background purge; call [`Sessions::purge_expired`](sessio::Sessions::purge_expired)
    /// yourself (say, from a cron job running `sessio purge`).
    pub fn without_background_purge(mut self) -> Self {
        self.purge_interval = None;
        self
    }

    /// Connects, creates or upgrades the schema, and starts the purge task. Must run inside a
    /// tokio runtime.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        let mut config = tokio_postgres::Config::from_str(&self.url).map_err(|error| {
            StoreError::backend(format!("invalid PostgreSQL URL ({error}); expected postgres://user:password@host:port/database"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .recycle_timeout(Some(TIMEOUT))
            .build()
            .map_err(StoreError::backend)?;
        let queries = Queries::new(&self.schema);
        migrate(&pool, &queries).await?;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            pool,
            queries,
            purge_task: self
                .purge_interval
                .map(|interval| spawn_purge(weak.clone(), interval)),
        });
        Ok(PostgresStore { inner })
    }
}

fn spawn_purge(store: Weak<Inner>, interval: Duration) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(inner) = store.upgrade() else { return };
            let store = PostgresStore { inner };
            let now = SystemClock.now();
            loop {
                match store.purge_expired(now, PURGE_BATCH).await {
                    Ok(purged) if purged == PURGE_BATCH as u64 => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(target: "sessio::postgres", %error, "purging expired sessions failed; retrying next interval");
                        break;
                    }
                }
            }
        }
    })
    .abort_handle()
}

async fn migrate(pool: &Pool, queries: &Queries) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let transaction = client.transaction().await.map_err(pg_error)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    let schema = &queries.schema;
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.sessio_schema (version integer NOT NULL);"
        ))
        .await
        .map_err(pg_error)?;
    let current: i32 = transaction
        .query_opt(&format!("SELECT version FROM {schema}.sessio_schema"), &[])
        .await
        .map_err(pg_error)?
        .map(|row| row.get(0))
        .unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::backend(format!(
            "the session tables have schema version {current}, newer than this sessio-postgres understands ({SCHEMA_VERSION}); upgrade sessio-postgres"
        )));
    }
    for migration in queries.migrations_from(current) {
        transaction
            .batch_execute(&migration)
            .await
            .map_err(pg_error)?;
    }
    transaction
        .batch_execute(&format!(
            "DELETE FROM {schema}.sessio_schema; INSERT INTO {schema}.sessio_schema (version) VALUES ({SCHEMA_VERSION});"
        ))
        .await
        .map_err(pg_error)?;
    transaction.commit().await.map_err(pg_error)
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

/// Decodes the columns selected as `COLUMNS`, starting at `first`.
fn record_from(row: &Row, first: usize) -> Result<Record, StoreError> {
    let handle: Vec<u8> = row.try_get(first).map_err(pg_error)?;
    let body: String = row.try_get(first + 5).map_err(pg_error)?;
    let columns = RecordColumns {
        handle: handle_from(&handle)?,
        user_id: row.try_get(first + 1).map_err(pg_error)?,
        created_at: timestamp(row.try_get(first + 2).map_err(pg_error)?),
        last_seen_at: timestamp(row.try_get(first + 3).map_err(pg_error)?),
        expires_at: timestamp(row.try_get(first + 4).map_err(pg_error)?),
    };
    codec::decode_record(columns, &body)
}

fn count_live(rows: &[Row], now: i64) -> u64 {
    rows.iter()
        .filter(|row| row.try_get::<_, i64>(0).is_ok_and(|expires| expires > now))
        .count() as u64
}

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

/// The patch's data changes as SQL parameters: an object of set keys and a list of removed
/// keys.
fn data_changes(patch: &Patch) -> Result<(String, Vec<String>), StoreError> {
    let set: BTreeMap<&str, &RawValue> = patch
        .changes
        .iter()
        .filter_map(|(key, value)| value.as_deref().map(|value| (key.as_str(), value)))
        .collect();
    let removed = patch
        .changes
        .iter()
        .filter(|(_, value)| value.is_none())
        .map(|(key, _)| key.clone())
        .collect();
    Ok((serde_json::to_string(&set).map_err(corrupt)?, removed))
}

/// The values of the insert statement, owned so their references can be the parameters.
struct InsertRow<'a> {
    digest: &'a [u8],
    handle: &'a [u8],
    user_id: Option<&'a str>,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    body: String,
}

impl<'a> InsertRow<'a> {
    fn new(digest: &'a IdDigest, record: &'a Record) -> Self {
        Self {
            digest: digest.as_bytes().as_slice(),
            handle: record.handle.as_bytes().as_slice(),
            user_id: record.user_id(),
            created_at: sql_time(record.created_at),
            last_seen_at: sql_time(record.last_seen_at),
            expires_at: sql_time(record.expires_at),
            body: codec::encode_body(record),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.digest,
            &self.handle,
            &self.user_id,
            &self.created_at,
            &self.last_seen_at,
            &self.expires_at,
            &self.body,
        ]
    }
}

fn millis(duration: Option<Duration>) -> Option<i64> {
    duration.map(|duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) with the default
    /// settings.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Settings for a store at `url`.
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.to_owned(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
        }
    }

    /// The schema version the tables have after connecting.
    pub fn schema_version(&self) -> i32 {
        SCHEMA_VERSION
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(pool_error)
    }

    fn queries(&self) -> &Queries {
        &self.inner.queries
    }

    /// Runs a `count(*)` query whose one parameter is `now`.
    async fn count_rows(&self, sql: &str, now: Timestamp) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
        let row = client
            .query_one(&statement, &[&sql_time(now)])
            .await
            .map_err(pg_error)?;
        let count: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Inserts, then evicts beyond the cap, in one transaction.
    async fn insert_in(
        transaction: &deadpool_postgres::Transaction<'_>,
        queries: &Queries,
        digest: &IdDigest,
        record: &Record,
    ) -> Result<bool, StoreError> {
        let statement = transaction
            .prepare_cached(&queries.insert)
            .await
            .map_err(pg_error)?;
        let inserted = transaction
            .execute(
                &statement,
                &[
                    &digest.as_bytes().as_slice(),
                    &record.handle.as_bytes().as_slice(),
                    &record.user_id(),
                    &sql_time(record.created_at),
                    &sql_time(record.last_seen_at),
                    &sql_time(record.expires_at),
                    &codec::encode_body(record),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(inserted == 1)
    }

    async fn evict_in(
        transaction: &deadpool_postgres::Transaction<'_>,
        queries: &Queries,
        user_id: &str,
        max: NonZeroU32,
        keep: &SessionHandle,
        now: i64,
    ) -> Result<(), StoreError> {
        let statement = transaction
            .prepare_cached(&queries.evict)
            .await
            .map_err(pg_error)?;
        transaction
            .execute(
                &statement,
                &[
                    &user_id,
                    &now,
                    &keep.as_bytes().as_slice(),
                    &i64::from(max.get()),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }
}

impl SessionStore for PostgresStore {
    async fn load(&self, digest: &IdDigest, now: Timestamp) -> Result<Option<Record>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().load)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(&statement, &[&digest.as_bytes().as_slice(), &sql_time(now)])
            .await
            .map_err(pg_error)?;
        row.map(|row| record_from(&row, 0)).transpose()
    }

    async fn create(
        &self,
        digest: &IdDigest,
        record: &Record,
        max_sessions_per_user: Option<NonZeroU32>,
    ) -> Result<WriteOutcome, StoreError> {
        let queries = self.queries();
        let mut client = self.client().await?;
        let cap = max_sessions_per_user.zip(record.user_id());
        let Some((max, user_id)) = cap else {
            // One statement: the insert is atomic on its own.
            let statement = client
                .prepare_cached(&queries.insert)
                .await
                .map_err(pg_error)?;
            let inserted = client
                .execute(&statement, &InsertRow::new(digest, record).params())
                .await
                .map_err(pg_error)?;
            return Ok(if inserted == 1 {
                WriteOutcome::Done
            } else {
                WriteOutcome::Exists
            });
        };
        let transaction = client.transaction().await.map_err(pg_error)?;
        if !Self::insert_in(&transaction, queries, digest, record).await? {
            return Ok(WriteOutcome::Exists);
        }
        let now = sql_time(record.last_seen_at);
        Self::evict_in(&transaction, queries, user_id, max, &record.handle, now).await?;
        transaction.commit().await.map_err(pg_error)?;
        Ok(WriteOutcome::Done)
    }

    async fn apply(
        &self,
        digest: &IdDigest,
        patch: &Patch,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let queries = self.queries();
        let key = digest.as_bytes().as_slice();
        let now_sql = sql_time(now);
        let last_seen = patch.touch.map(|touch| sql_time(touch.last_seen_at));
        let expires = patch.touch.map(|touch| sql_time(touch.expires_at));
        let client = self.client().await?;
        let updated = if !patch.changes_content() && patch.expiry.is_none() {
            let statement = client
                .prepare_cached(&queries.apply_touch)
                .await
                .map_err(pg_error)?;
            let (Some(last_seen), Some(expires)) = (last_seen, expires) else {
                return Ok(WriteOutcome::Done);
            };
            client
                .execute(&statement, &[&key, &now_sql, &last_seen, &expires])
                .await
                .map_err(pg_error)?
        } else if !patch.clear && patch.flashes.is_empty() && patch.expiry.is_none() {
            let (set, removed) = data_changes(patch)?;
            let statement = client
                .prepare_cached(&queries.apply_data)
                .await
                .map_err(pg_error)?;
            client
                .execute(
                    &statement,
                    &[&key, &now_sql, &removed, &set, &last_seen, &expires],
                )
                .await
                .map_err(pg_error)?
        } else {
            let (set, removed) = data_changes(patch)?;
            let flashes = if patch.flashes.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&patch.flashes).map_err(corrupt)?)
            };
            let expiry = patch.expiry.unwrap_or_default();
            let statement = client
                .prepare_cached(&queries.apply_full)
                .await
                .map_err(pg_error)?;
            client
                .execute(
                    &statement,
                    &[
                        &key,
                        &now_sql,
                        &patch.clear,
                        &set,
                        &removed,
                        &flashes,
                        &last_seen,
                        &expires,
                        &patch.expiry.is_some(),
                        &millis(expiry.idle_timeout),
                        &millis(expiry.absolute_lifetime),
                    ],
                )
                .await
                .map_err(pg_error)?
        };
        if updated > 0 {
            return Ok(WriteOutcome::Done);
        }
        // Nothing live was there: tell a moved session from an ended one.
        let statement = client
            .prepare_cached(&queries.moved)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_one(&statement, &[&key, &now_sql])
            .await
            .map_err(pg_error)?;
        let moved: bool = row.try_get(0).map_err(pg_error)?;
        Ok(if moved {
            WriteOutcome::Moved
        } else {
            WriteOutcome::Gone
        })
    }

    async fn cycle(
        &self,
        old: &IdDigest,
        new: &IdDigest,
        change: &CycleChange,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let now = sql_time(now);
        let mut client = self.client().await?;
        let queries = self.queries();
        let transaction = client.transaction().await.map_err(pg_error)?;
        let lock = transaction
            .prepare_cached(&queries.lock_for_cycle)
            .await
            .map_err(pg_error)?;
        let Some(row) = transaction
            .query_opt(&lock, &[&old.as_bytes().as_slice()])
            .await
            .map_err(pg_error)?
        else {
            return Ok(WriteOutcome::Gone);
        };
        let moved: bool = row.try_get(0).map_err(pg_error)?;
        let expires_at: i64 = row.try_get(5).map_err(pg_error)?;
        if expires_at <= now {
            return Ok(WriteOutcome::Gone);
        }
        if moved {
            return Ok(WriteOutcome::Moved);
        }
        let mut record = record_from(&row, 1)?;
        change.patch.apply_to(&mut record).map_err(corrupt)?;
        if let Some(created_at) = change.created_at {
            record.created_at = created_at;
        }
        if let Some(bind) = &change.bind {
            record.user = Some(bind.clone());
        }
        if !Self::insert_in(&transaction, queries, new, &record).await? {
            return Ok(WriteOutcome::Exists);
        }
        let until = sql_time(change.moved_marker_until);
        if until > now {
            let mark = transaction
                .prepare_cached(&queries.mark_moved)
                .await
                .map_err(pg_error)?;
            transaction
                .execute(&mark, &[&old.as_bytes().as_slice(), &until])
                .await
                .map_err(pg_error)?;
        } else {
            let delete = transaction
                .prepare_cached(&queries.delete_one)
                .await
                .map_err(pg_error)?;
            transaction
                .execute(&delete, &[&old.as_bytes().as_slice()])
                .await
                .map_err(pg_error)?;
        }
        if let (Some(max), Some(bind)) = (change.max_sessions_per_user, &change.bind) {
            Self::evict_in(
                &transaction,
                queries,
                &bind.user_id,
                max,
                &record.handle,
                now,
            )
            .await?;
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(WriteOutcome::Done)
    }

    async fn destroy(&self, digest: &IdDigest, now: Timestamp) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().delete_one)
            .await
            .map_err(pg_error)?;
        let rows = client
            .query(&statement, &[&digest.as_bytes().as_slice()])
            .await
            .map_err(pg_error)?;
        Ok(count_live(&rows, sql_time(now)) > 0)
    }

    async fn take_flashes(
        &self,
        digest: &IdDigest,
        now: Timestamp,
    ) -> Result<Option<Vec<Flash>>, StoreError> {
        let mut client = self.client().await?;
        let queries = self.queries();
        let transaction = client.transaction().await.map_err(pg_error)?;
        let lock = transaction
            .prepare_cached(&queries.lock_flashes)
            .await
            .map_err(pg_error)?;
        let Some(row) = transaction
            .query_opt(&lock, &[&digest.as_bytes().as_slice(), &sql_time(now)])
            .await
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let flashes: String = row.try_get(0).map_err(pg_error)?;
        let flashes: Vec<Flash> = serde_json::from_str(&flashes).map_err(corrupt)?;
        if !flashes.is_empty() {
            let clear = transaction
                .prepare_cached(&queries.clear_flashes)
                .await
                .map_err(pg_error)?;
            transaction
                .execute(&clear, &[&digest.as_bytes().as_slice()])
                .await
                .map_err(pg_error)?;
        }
        transaction.commit().await.map_err(pg_error)?;
        Ok(Some(flashes))
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().list_user)
            .await
            .map_err(pg_error)?;
        let rows = client
            .query(&statement, &[&user_id, &sql_time(now)])
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| record_from(row, 0).map(|record| record.info()))
            .collect()
    }

    async fn destroy_user_session(
        &self,
        user_id: &str,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().destroy_user_session)
            .await
            .map_err(pg_error)?;
        let rows = client
            .query(&statement, &[&user_id, &handle.as_bytes().as_slice()])
            .await
            .map_err(pg_error)?;
        Ok(count_live(&rows, sql_time(now)) > 0)
    }

    async fn destroy_user_sessions(
        &self,
        user_id: &str,
        except: Option<&SessionHandle>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().destroy_user_sessions)
            .await
            .map_err(pg_error)?;
        let except = except.map(|handle| handle.as_bytes().as_slice());
        let rows = client
            .query(&statement, &[&user_id, &except])
            .await
            .map_err(pg_error)?;
        Ok(count_live(&rows, sql_time(now)))
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().purge)
            .await
            .map_err(pg_error)?;
        client
            .execute(
                &statement,
                &[&sql_time(now), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(pg_error)
    }

    async fn count(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.count_rows(&self.queries().count, now).await
    }

    async fn find_handle(
        &self,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().find_handle)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(&statement, &[&handle.as_bytes().as_slice(), &sql_time(now)])
            .await
            .map_err(pg_error)?;
        match row {
            Some(row) => row.try_get::<_, Option<String>>(0).map_err(pg_error),
            None => Ok(None),
        }
    }

    async fn destroy_all(&self, now: Timestamp) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().destroy_all)
            .await
            .map_err(pg_error)?;
        let rows = client.query(&statement, &[]).await.map_err(pg_error)?;
        Ok(count_live(&rows, sql_time(now)))
    }

    async fn count_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.count_rows(&self.queries().count_expired, now).await
    }

    async fn top_users(
        &self,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().top_users)
            .await
            .map_err(pg_error)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&sql_time(now), &limit])
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                let user: String = row.try_get(0).map_err(pg_error)?;
                let count: i64 = row.try_get(1).map_err(pg_error)?;
                Ok((user, u64::try_from(count).unwrap_or(0)))
            })
            .collect()
    }

    async fn user_index_len(&self, user_id: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.queries().index_len)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_one(&statement, &[&user_id])
            .await
            .map_err(pg_error)?;
        let count: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
