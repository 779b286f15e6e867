//! [`RedisStore`]: the contract operations as Lua scripts over one multiplexed connection.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, RedisError, ScriptInvocation, Value};
use serde_json::value::RawValue;
use sessio::{
    Clock, CycleChange, Data, ExpiryOverrides, Flash, IdDigest, Patch, Record, SessionHandle,
    SessionInfo, SessionStore, StoreError, SystemClock, Timestamp, UserBinding, WriteOutcome,
};

use crate::scripts::{self, script};

/// Leading digest bits that pick a session's route (its hash tag): 256 routes, spread over
/// every node of a cluster.
pub(crate) const ROUTE_BITS: u8 = 8;
const ROUTES: u16 = 1 << ROUTE_BITS;
/// How far past a session's expiry its user's directory entry reaches: a directory entry is
/// raised at most once per this period of activity.
const DIRECTORY_SLACK: Duration = Duration::from_secs(7 * 24 * 60 * 60);
const FORMAT_VERSION: &str = "1";
/// The key layout this crate writes, recorded under `<prefix>:layout` on first use.
const LAYOUT_VERSION: u32 = 1;
const DEFAULT_PREFIX: &str = "sessio";
const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);
const PURGE_BATCH: usize = 1_000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A session store in Redis or Valkey, standalone or Cluster. Cheap to clone; clones share
/// the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    keys: Keys,
    scripts: Scripts,
    purge_cursor: AtomicUsize,
    purge_task: Option<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.purge_task {
            task.abort();
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.keys.prefix)
            .field(
                "cluster",
                &matches!(self.inner.connection, Connection::Cluster(_)),
            )
            .finish_non_exhaustive()
    }
}

struct Scripts {
    create: redis::Script,
    apply: redis::Script,
    cycle: redis::Script,
    destroy: redis::Script,
    take_flashes: redis::Script,
    list_route: redis::Script,
    destroy_route: redis::Script,
    directory: redis::Script,
    purge_route: redis::Script,
    count_route: redis::Script,
    find_handle: redis::Script,
    destroy_route_all: redis::Script,
    count_expired_route: redis::Script,
    users_route: redis::Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            create: script(scripts::CREATE),
            apply: script(scripts::APPLY),
            cycle: script(scripts::CYCLE),
            destroy: script(scripts::DESTROY),
            take_flashes: script(scripts::TAKE_FLASHES),
            list_route: script(scripts::LIST_ROUTE),
            destroy_route: script(scripts::DESTROY_ROUTE),
            directory: script(scripts::DIRECTORY),
            purge_route: script(scripts::PURGE_ROUTE),
            count_route: script(scripts::COUNT_ROUTE),
            find_handle: script(scripts::FIND_HANDLE),
            destroy_route_all: script(scripts::DESTROY_ROUTE_ALL),
            count_expired_route: script(scripts::COUNT_EXPIRED_ROUTE),
            users_route: script(scripts::USERS_ROUTE),
        }
    }
}

/// A standalone server through a reconnecting manager, or a cluster.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let result = match self {
            Self::Single(connection) => invocation.invoke_async(&mut connection.clone()).await,
            Self::Cluster(connection) => invocation.invoke_async(&mut connection.clone()).await,
        };
        result.map_err(redis_error)
    }

    async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let result = match self {
            Self::Single(connection) => command.query_async(&mut connection.clone()).await,
            Self::Cluster(connection) => command.query_async(&mut connection.clone()).await,
        };
        result.map_err(redis_error)
    }
}

fn redis_error(error: RedisError) -> StoreError {
    if error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_cluster_error()
    {
        StoreError::unavailable(error)
    } else {
        StoreError::backend(error)
    }
}

/// Key names. Every key of one route shares the hash tag `{rXX}`; a user's directory has its
/// own tag.
struct Keys {
    prefix: String,
}

impl Keys {
    fn tag(&self, route: u16) -> String {
        format!("{}:{{r{route:02x}}}", self.prefix)
    }

    fn record(&self, digest: &IdDigest) -> (String, String) {
        let tag = self.tag(digest.route(ROUTE_BITS));
        let hex = digest.to_hex();
        (format!("{tag}:s:{hex}"), hex)
    }

    fn index(&self, route: u16, user_id: &str) -> String {
        format!("{}:u:{user_id}", self.tag(route))
    }

    fn directory(&self, user_id: &str) -> String {
        format!("{}:{{u:{user_id}}}:routes", self.prefix)
    }
}

/// Settings for a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    nodes: Vec<String>,
    cluster: bool,
    prefix: String,
    purge_interval: Option<Duration>,
}

impl RedisStoreBuilder {
    /// Prefix of every key (default `sessio`); lets several apps share one server. It may not
    /// contain `{` or `}`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How often a background task prunes the user indexes of expired entries (default
    /// 60 s). Records themselves expire by native TTL.
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.purge_interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// No background pruning; call [`Sessions::purge_expired`](sessio::Sessions::purge_expired)
    /// yourself.
    pub fn without_background_purge(mut self) -> Self {
        self.purge_interval = None;
        self
    }

    /// Connects. Must run inside a tokio runtime.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(StoreError::backend(format!(
                "invalid key prefix {:?}: it must be non-empty and free of `{{` and `}}`",
                self.prefix
            )));
        }
        let invalid = |error: RedisError| {
            StoreError::backend(format!(
                "invalid Redis URL ({error}); expected redis://host:port/ or redis+cluster://host:port,host:port"
            ))
        };
        let connection = if self.cluster {
            let client = redis::cluster::ClusterClient::builder(self.nodes)
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .retries(2)
                .build()
                .map_err(invalid)?;
            Connection::Cluster(client.get_async_connection().await.map_err(redis_error)?)
        } else {
            let url = self.nodes.first().cloned().unwrap_or_default();
            let client = redis::Client::open(url).map_err(invalid)?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Connection::Single(
                client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(redis_error)?,
            )
        };
        check_layout(&connection, &self.prefix).await?;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
            connection,
            keys: Keys {
                prefix: self.prefix,
            },
            scripts: Scripts::new(),
            purge_cursor: AtomicUsize::new(0),
            purge_task: self
                .purge_interval
                .map(|interval| spawn_purge(weak.clone(), interval)),
        });
        Ok(RedisStore { inner })
    }
}

/// Records the key layout version on first use, and refuses a keyspace laid out by a newer
/// sessio-redis. Layout changes come with a migration from every older version.
async fn check_layout(connection: &Connection, prefix: &str) -> Result<(), StoreError> {
    let key = format!("{prefix}:layout");
    let _: Option<String> = connection
        .query(redis::cmd("SET").arg(&key).arg(LAYOUT_VERSION).arg("NX"))
        .await?;
    let found: Option<u32> = connection.query(redis::cmd("GET").arg(&key)).await?;
    match found {
        Some(version) if version > LAYOUT_VERSION => Err(StoreError::backend(format!(
            "the keys under `{prefix}` use layout version {version}, newer than this sessio-redis understands ({LAYOUT_VERSION}); upgrade sessio-redis"
        ))),
        _ => Ok(()),
    }
}

fn spawn_purge(store: Weak<Inner>, interval: Duration) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(inner) = store.upgrade() else { return };
            let store = RedisStore { inner };
            let now = SystemClock.now();
            loop {
                match store.purge_expired(now, PURGE_BATCH).await {
                    Ok(purged) if purged >= PURGE_BATCH as u64 => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(target: "sessio::redis", %error, "pruning expired index entries failed; retrying next interval");
                        break;
                    }
                }
            }
        }
    })
    .abort_handle()
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("redis record: {what}"))
}

fn millis(time: Timestamp) -> u64 {
    time.as_millis()
}

fn duration_millis(duration: Option<Duration>) -> String {
    duration.map_or_else(String::new, |duration| duration.as_millis().to_string())
}

fn directory_deadline(expires_at: Timestamp) -> u64 {
    millis(expires_at.saturating_add(DIRECTORY_SLACK))
}

/// The HSET field/value pairs of a new record.
fn record_fields(record: &Record, dd: u64) -> Result<Vec<String>, StoreError> {
    let mut fields = vec![
        "v".to_owned(),
        FORMAT_VERSION.to_owned(),
        "h".to_owned(),
        record.handle.to_string(),
        "c".to_owned(),
        millis(record.created_at).to_string(),
        "l".to_owned(),
        millis(record.last_seen_at).to_string(),
        "e".to_owned(),
        millis(record.expires_at).to_string(),
    ];
    if let Some(user) = &record.user {
        fields.extend([
            "u".to_owned(),
            user.user_id.clone(),
            "dd".to_owned(),
            dd.to_string(),
        ]);
        if let Some(agent) = &user.user_agent {
            fields.extend(["ua".to_owned(), agent.clone()]);
        }
        if let Some(ip) = user.ip {
            fields.extend(["ip".to_owned(), ip.to_string()]);
        }
    }
    if let Some(idle) = record.expiry.idle_timeout {
        fields.extend(["i".to_owned(), idle.as_millis().to_string()]);
    }
    if let Some(absolute) = record.expiry.absolute_lifetime {
        fields.extend(["a".to_owned(), absolute.as_millis().to_string()]);
    }
    if !record.flashes.is_empty() {
        let flashes = serde_json::to_string(&record.flashes).map_err(corrupt)?;
        fields.extend(["f".to_owned(), flashes]);
    }
    for (key, value) in record.data.entries().map_err(corrupt)? {
        fields.push(format!("d:{key}"));
        fields.push(value.get().to_owned());
    }
    Ok(fields)
}

/// A record's hash as `HGETALL` returns it: a handful of fields, searched in order, whose
/// values move into the record without copies.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|(field, _)| field == name)?;
        Some(self.0.swap_remove(at).1)
    }

    fn number(&self, name: &str) -> Result<u64, StoreError> {
        self.get(name)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| corrupt(format!("field `{name}` is missing or not a number")))
    }

    fn optional_millis(&self, name: &str) -> Result<Option<Duration>, StoreError> {
        self.get(name)
            .map(|_| self.number(name).map(Duration::from_millis))
            .transpose()
    }
}

/// Rebuilds a record from its hash; `None` for a moved marker or an expired record.
fn record_from(mut fields: Fields, now: Timestamp) -> Result<Option<Record>, StoreError> {
    if fields.0.is_empty() || fields.get("mv").is_some() {
        return Ok(None);
    }
    match fields.get("v") {
        Some(FORMAT_VERSION) => {}
        Some(other) => {
            return Err(corrupt(format!(
                "format version {other} is newer than this sessio-redis understands; upgrade sessio-redis"
            )));
        }
        None => return Err(corrupt("no format version")),
    }
    let expires_at = Timestamp::from_millis(fields.number("e")?);
    if expires_at <= now {
        return Ok(None);
    }
    let handle = fields
        .get("h")
        .and_then(SessionHandle::parse)
        .ok_or_else(|| corrupt("bad handle"))?;
    let flashes = match fields.get("f") {
        Some(json) => serde_json::from_str(json).map_err(corrupt)?,
        None => Vec::new(),
    };
    let created_at = Timestamp::from_millis(fields.number("c")?);
    let last_seen_at = Timestamp::from_millis(fields.number("l")?);
    let expiry = ExpiryOverrides {
        idle_timeout: fields.optional_millis("i")?,
        absolute_lifetime: fields.optional_millis("a")?,
    };
    let user = fields.take("u").map(|user_id| UserBinding {
        user_id,
        user_agent: fields.take("ua"),
        ip: fields.get("ip").and_then(|ip| ip.parse::<IpAddr>().ok()),
    });
    let mut data = BTreeMap::new();
    for (name, value) in fields.0 {
        if let Some(key) = name.strip_prefix("d:") {
            let value = RawValue::from_string(value).map_err(corrupt)?;
            data.insert(key.to_owned(), value);
        }
    }
    Ok(Some(Record {
        handle,
        created_at,
        last_seen_at,
        expires_at,
        expiry,
        user,
        data: Data::from_entries(&data),
        flashes,
    }))
}

/// The content part of a patch, as script arguments (see `apply_patch` in the scripts).
fn patch_args(patch: &Patch) -> Result<Vec<String>, StoreError> {
    let expiry = patch.expiry.unwrap_or_default();
    let flashes = if patch.flashes.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&patch.flashes).map_err(corrupt)?
    };
    let mut args = vec![
        if patch.clear { "1" } else { "0" }.to_owned(),
        if patch.expiry.is_some() { "1" } else { "0" }.to_owned(),
        duration_millis(expiry.idle_timeout),
        duration_millis(expiry.absolute_lifetime),
        flashes,
    ];
    let set: Vec<_> = patch
        .changes
        .iter()
        .filter_map(|(key, value)| value.as_ref().map(|value| (key, value)))
        .collect();
    args.push(set.len().to_string());
    for (key, value) in set {
        args.push(key.clone());
        args.push(value.get().to_owned());
    }
    let removed: Vec<_> = patch
        .changes
        .iter()
        .filter(|(_, value)| value.is_none())
        .map(|(key, _)| key.clone())
        .collect();
    args.push(removed.len().to_string());
    args.extend(removed);
    Ok(args)
}

/// What a writing script answered.
enum Reply {
    Outcome(WriteOutcome),
    /// The user's directory must reach past this expiry before this write may happen.
    Bump(String, u64),
}

fn reply(value: Value) -> Result<Reply, StoreError> {
    let text = |value: &Value| String::from_redis_value(value.clone()).ok();
    if let Value::Array(items) = &value
        && items.len() == 3
        && text(&items[0]).as_deref() == Some("bump")
    {
        let user = text(&items[1]);
        let expiry = text(&items[2]).and_then(|expiry| expiry.parse().ok());
        return user
            .zip(expiry)
            .map(|(user, expiry)| Reply::Bump(user, expiry))
            .ok_or_else(|| corrupt("bad bump reply"));
    }
    match text(&value).as_deref() {
        Some("done") => Ok(Reply::Outcome(WriteOutcome::Done)),
        Some("gone") => Ok(Reply::Outcome(WriteOutcome::Gone)),
        Some("moved") => Ok(Reply::Outcome(WriteOutcome::Moved)),
        Some("exists") => Ok(Reply::Outcome(WriteOutcome::Exists)),
        _ => Err(corrupt(format!("unexpected script reply {value:?}"))),
    }
}

impl RedisStore {
    /// Connects to a standalone server (`redis://host:port/db`) or, with
    /// `redis+cluster://host:port,host:port`, to a cluster, with the default settings.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Settings for a store at `url` (see [`RedisStore::connect`]).
    pub fn builder(url: &str) -> RedisStoreBuilder {
        let (nodes, cluster) = match url.strip_prefix("redis+cluster://") {
            Some(hosts) => (
                hosts
                    .trim_end_matches('/')
                    .split(',')
                    .map(|host| format!("redis://{}", host.trim()))
                    .collect(),
                true,
            ),
            None => (vec![url.to_owned()], false),
        };
        RedisStoreBuilder {
            nodes,
            cluster,
            prefix: DEFAULT_PREFIX.to_owned(),
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
        }
    }

    /// Settings for a store on a cluster reached through any of `nodes` (`redis://host:port`).
    pub fn cluster_builder<S: AsRef<str>>(nodes: &[S]) -> RedisStoreBuilder {
        RedisStoreBuilder {
            nodes: nodes.iter().map(|node| node.as_ref().to_owned()).collect(),
            cluster: true,
            prefix: DEFAULT_PREFIX.to_owned(),
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
        }
    }

    /// The version of the key layout this store reads and writes.
    pub fn layout_version(&self) -> u32 {
        LAYOUT_VERSION
    }

    /// The key holding the record of `digest`, for inspection and tests.
    pub fn record_key(&self, digest: &IdDigest) -> String {
        self.inner.keys.record(digest).0
    }

    fn connection(&self) -> &Connection {
        &self.inner.connection
    }

    fn scripts(&self) -> &Scripts {
        &self.inner.scripts
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Raises the user's directory so `route` is listed until at least `deadline`, and
    /// returns the routes listed at `now`.
    async fn directory(
        &self,
        user_id: &str,
        now: Timestamp,
        raise: Option<(u16, u64)>,
    ) -> Result<Vec<u16>, StoreError> {
        let mut invocation = self.scripts().directory.prepare_invoke();
        invocation
            .key(self.keys().directory(user_id))
            .arg(millis(now));
        if let Some((route, deadline)) = raise {
            invocation.arg(deadline).arg(route);
        }
        let routes: Vec<String> = self.connection().invoke(&invocation).await?;
        Ok(routes
            .iter()
            .filter_map(|route| route.parse().ok())
            .collect())
    }

    /// Raises the directory when a writing script asked for it (`Bump`): returns the new
    /// deadline to run the script again with, or the script's outcome.
    async fn settle(
        &self,
        value: Value,
        route: u16,
        now: Timestamp,
        raised: &mut Option<u64>,
    ) -> Result<Option<WriteOutcome>, StoreError> {
        match reply(value)? {
            Reply::Outcome(outcome) => Ok(Some(outcome)),
            Reply::Bump(..) if raised.is_some() => Err(StoreError::backend(
                "the user's directory could not be raised past the session's expiry",
            )),
            Reply::Bump(user_id, expiry) => {
                let deadline = directory_deadline(Timestamp::from_millis(expiry));
                self.directory(&user_id, now, Some((route, deadline)))
                    .await?;
                *raised = Some(deadline);
                Ok(None)
            }
        }
    }

    async fn destroy_in_route(
        &self,
        route: u16,
        user_id: &str,
        only: Option<&SessionHandle>,
        except: Option<&SessionHandle>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut invocation = self.scripts().destroy_route.prepare_invoke();
        invocation
            .key(self.keys().index(route, user_id))
            .arg(millis(now))
            .arg(self.keys().tag(route))
            .arg(user_id)
            .arg(only.map(ToString::to_string).unwrap_or_default())
            .arg(except.map(ToString::to_string).unwrap_or_default());
        self.connection().invoke(&invocation).await
    }

    /// Runs `script` (KEYS: a route's set of records; ARGV: now) on every route and adds up
    /// its answers: counting, which the admin needs across the whole store.
    async fn sum_over_routes(
        &self,
        script: &redis::Script,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for route in 0..ROUTES {
            let mut invocation = script.prepare_invoke();
            invocation
                .key(format!("{}:all", self.keys().tag(route)))
                .arg(millis(now));
            let count: u64 = self.connection().invoke(&invocation).await?;
            total += count;
        }
        Ok(total)
    }

    /// Ends the user's oldest live sessions beyond `max`, never `keep`.
    async fn evict_beyond(
        &self,
        user_id: &str,
        max: NonZeroU32,
        keep: &SessionHandle,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut sessions = self.list_user(user_id, now).await?;
        let limit = usize::try_from(max.get()).unwrap_or(usize::MAX);
        if sessions.len() <= limit {
            return Ok(());
        }
        sessions.sort_by_key(|info| (info.handle == *keep, info.created_at));
        let excess = sessions.len() - limit;
        for info in sessions.iter().take(excess) {
            let route = info.handle.route(ROUTE_BITS);
            self.destroy_in_route(route, user_id, Some(&info.handle), None, now)
                .await?;
        }
        Ok(())
    }
}

impl SessionStore for RedisStore {
    fn route_bits(&self) -> u8 {
        ROUTE_BITS
    }

    async fn load(&self, digest: &IdDigest, now: Timestamp) -> Result<Option<Record>, StoreError> {
        let (key, _) = self.keys().record(digest);
        let fields: Vec<(String, String)> = self
            .connection()
            .query(redis::cmd("HGETALL").arg(key))
            .await?;
        record_from(Fields(fields), now)
    }

    async fn create(
        &self,
        digest: &IdDigest,
        record: &Record,
        max_sessions_per_user: Option<NonZeroU32>,
    ) -> Result<WriteOutcome, StoreError> {
        let route = digest.route(ROUTE_BITS);
        let now = record.last_seen_at;
        let deadline = directory_deadline(record.expires_at);
        if let Some(user_id) = record.user_id() {
            // The directory first: it may list a route with no session, never miss one.
            self.directory(user_id, now, Some((route, deadline)))
                .await?;
        }
        let (key, hex) = self.keys().record(digest);
        let mut invocation = self.scripts().create.prepare_invoke();
        invocation
            .key(key)
            .arg(millis(now))
            .arg(self.keys().tag(route))
            .arg(hex)
            .arg(record.user_id().unwrap_or_default())
            .arg(millis(record.expires_at))
            .arg(deadline)
            .arg(record_fields(record, deadline)?);
        let created: i64 = self.connection().invoke(&invocation).await?;
        if created == 0 {
            return Ok(WriteOutcome::Exists);
        }
        if let (Some(max), Some(user_id)) = (max_sessions_per_user, record.user_id()) {
            self.evict_beyond(user_id, max, &record.handle, now).await?;
        }
        Ok(WriteOutcome::Done)
    }

    async fn apply(
        &self,
        digest: &IdDigest,
        patch: &Patch,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let route = digest.route(ROUTE_BITS);
        let (key, hex) = self.keys().record(digest);
        let tag = self.keys().tag(route);
        let content = patch_args(patch)?;
        let mut raised = None;
        loop {
            let mut invocation = self.scripts().apply.prepare_invoke();
            invocation
                .key(&key)
                .arg(millis(now))
                .arg(&tag)
                .arg(&hex)
                .arg(
                    patch
                        .touch
                        .map(|touch| millis(touch.last_seen_at).to_string())
                        .unwrap_or_default(),
                )
                .arg(
                    patch
                        .touch
                        .map(|touch| millis(touch.expires_at).to_string())
                        .unwrap_or_default(),
                )
                .arg(
                    raised
                        .map(|deadline: u64| deadline.to_string())
                        .unwrap_or_default(),
                )
                .arg(&content);
            let value: Value = self.connection().invoke(&invocation).await?;
            if let Some(outcome) = self.settle(value, route, now, &mut raised).await? {
                return Ok(outcome);
            }
        }
    }

    async fn cycle(
        &self,
        old: &IdDigest,
        new: &IdDigest,
        change: &CycleChange,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let route = old.route(ROUTE_BITS);
        if new.route(ROUTE_BITS) != route {
            return Err(StoreError::backend(
                "a cycle must keep the session's route; sessio draws such ids when route_bits() is set",
            ));
        }
        let touch = change.patch.touch;
        let (old_key, old_hex) = self.keys().record(old);
        let (new_key, new_hex) = self.keys().record(new);
        let tag = self.keys().tag(route);
        let content = patch_args(&change.patch)?;
        let bind_deadline = match &change.bind {
            Some(bind) => {
                // Without a touch the old expiry stays, which the absolute lifetime bounds by
                // the old record's; a week of slack past either is plenty.
                let expires_at = touch.map_or(now, |touch| touch.expires_at);
                let deadline = directory_deadline(expires_at.max(now));
                self.directory(&bind.user_id, now, Some((route, deadline)))
                    .await?;
                Some(deadline)
            }
            None => None,
        };
        let bind = change.bind.as_ref();
        let mut raised = bind_deadline;
        let outcome = loop {
            let mut invocation = self.scripts().cycle.prepare_invoke();
            invocation
                .key(&old_key)
                .key(&new_key)
                .arg(millis(now))
                .arg(&tag)
                .arg(&old_hex)
                .arg(&new_hex)
                .arg(millis(change.moved_marker_until))
                .arg(if bind.is_some() { "1" } else { "0" })
                .arg(bind.map(|bind| bind.user_id.clone()).unwrap_or_default())
                .arg(
                    bind.and_then(|bind| bind.user_agent.clone())
                        .unwrap_or_default(),
                )
                .arg(
                    bind.and_then(|bind| bind.ip)
                        .map(|ip| ip.to_string())
                        .unwrap_or_default(),
                )
                .arg(
                    change
                        .created_at
                        .map(|created| millis(created).to_string())
                        .unwrap_or_default(),
                )
                .arg(
                    raised
                        .map(|deadline| deadline.to_string())
                        .unwrap_or_default(),
                )
                .arg(
                    touch
                        .map(|touch| millis(touch.last_seen_at).to_string())
                        .unwrap_or_default(),
                )
                .arg(
                    touch
                        .map(|touch| millis(touch.expires_at).to_string())
                        .unwrap_or_default(),
                )
                .arg(&content);
            let value: Value = self.connection().invoke(&invocation).await?;
            if let Some(outcome) = self.settle(value, route, now, &mut raised).await? {
                break outcome;
            }
        };
        if outcome == WriteOutcome::Done
            && let (Some(max), Some(bind)) = (change.max_sessions_per_user, &change.bind)
        {
            let handle = self
                .load(new, now)
                .await?
                .map(|record| record.handle)
                .ok_or_else(|| StoreError::backend("the cycled session vanished"))?;
            self.evict_beyond(&bind.user_id, max, &handle, now).await?;
        }
        Ok(outcome)
    }

    async fn destroy(&self, digest: &IdDigest, now: Timestamp) -> Result<bool, StoreError> {
        let route = digest.route(ROUTE_BITS);
        let (key, hex) = self.keys().record(digest);
        let mut invocation = self.scripts().destroy.prepare_invoke();
        invocation
            .key(key)
            .arg(millis(now))
            .arg(self.keys().tag(route))
            .arg(hex);
        let destroyed: i64 = self.connection().invoke(&invocation).await?;
        Ok(destroyed == 1)
    }

    async fn take_flashes(
        &self,
        digest: &IdDigest,
        now: Timestamp,
    ) -> Result<Option<Vec<Flash>>, StoreError> {
        let (key, _) = self.keys().record(digest);
        let mut invocation = self.scripts().take_flashes.prepare_invoke();
        invocation.key(key).arg(millis(now));
        let flashes: Option<String> = self.connection().invoke(&invocation).await?;
        flashes
            .map(|json| serde_json::from_str(&json).map_err(corrupt))
            .transpose()
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let mut sessions = Vec::new();
        for route in self.directory(user_id, now, None).await? {
            let mut invocation = self.scripts().list_route.prepare_invoke();
            invocation
                .key(self.keys().index(route, user_id))
                .arg(millis(now))
                .arg(self.keys().tag(route));
            let fields: Vec<String> = self.connection().invoke(&invocation).await?;
            for row in fields.chunks_exact(6) {
                let [handle, created, seen, agent, ip, expires] = row else {
                    continue;
                };
                let parse = |text: &str| {
                    text.parse::<u64>()
                        .map(Timestamp::from_millis)
                        .map_err(|_| corrupt("bad time in a listing"))
                };
                sessions.push(SessionInfo {
                    handle: SessionHandle::parse(handle).ok_or_else(|| corrupt("bad handle"))?,
                    created_at: parse(created)?,
                    last_seen_at: parse(seen)?,
                    expires_at: parse(expires)?,
                    user_agent: (!agent.is_empty()).then(|| agent.clone()),
                    ip: ip.parse().ok(),
                    current: false,
                });
            }
        }
        sessions.sort_by_key(|info| (info.created_at, info.handle));
        Ok(sessions)
    }

    async fn destroy_user_session(
        &self,
        user_id: &str,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let route = handle.route(ROUTE_BITS);
        let destroyed = self
            .destroy_in_route(route, user_id, Some(handle), None, now)
            .await?;
        Ok(destroyed > 0)
    }

    async fn destroy_user_sessions(
        &self,
        user_id: &str,
        except: Option<&SessionHandle>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut destroyed = 0;
        for route in self.directory(user_id, now, None).await? {
            destroyed += self
                .destroy_in_route(route, user_id, None, except, now)
                .await?;
        }
        Ok(destroyed)
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let start = self.inner.purge_cursor.load(Ordering::Relaxed);
        let mut removed = 0u64;
        for offset in 0..usize::from(ROUTES) {
            let route = u16::try_from((start + offset) % usize::from(ROUTES)).unwrap_or(0);
            let tag = self.keys().tag(route);
            let mut invocation = self.scripts().purge_route.prepare_invoke();
            invocation
                .key(format!("{tag}:all"))
                .key(format!("{tag}:users"))
                .arg(millis(now))
                .arg(&tag);
            let purged: u64 = self.connection().invoke(&invocation).await?;
            removed += purged;
            self.inner
                .purge_cursor
                .store(usize::from(route) + 1, Ordering::Relaxed);
            if removed >= limit as u64 {
                break;
            }
        }
        Ok(removed)
    }

    async fn count(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.sum_over_routes(&self.scripts().count_route, now).await
    }

    async fn find_handle(
        &self,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        let route = handle.route(ROUTE_BITS);
        let tag = self.keys().tag(route);
        let mut invocation = self.scripts().find_handle.prepare_invoke();
        invocation
            .key(format!("{tag}:users"))
            .arg(millis(now))
            .arg(&tag)
            .arg(handle.to_string());
        self.connection().invoke(&invocation).await
    }

    async fn destroy_all(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut destroyed = 0u64;
        for route in 0..ROUTES {
            let tag = self.keys().tag(route);
            let mut invocation = self.scripts().destroy_route_all.prepare_invoke();
            invocation
                .key(format!("{tag}:all"))
                .key(format!("{tag}:users"))
                .arg(millis(now))
                .arg(&tag);
            let live: u64 = self.connection().invoke(&invocation).await?;
            destroyed += live;
        }
        Ok(destroyed)
    }

    async fn count_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.sum_over_routes(&self.scripts().count_expired_route, now)
            .await
    }

    async fn top_users(
        &self,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for route in 0..ROUTES {
            let tag = self.keys().tag(route);
            let mut invocation = self.scripts().users_route.prepare_invoke();
            invocation
                .key(format!("{tag}:users"))
                .arg(millis(now))
                .arg(&tag);
            let rows: Vec<(String, u64)> = self.connection().invoke(&invocation).await?;
            for (user, live) in rows {
                *counts.entry(user).or_default() += live;
            }
        }
        Ok(sessio::rank_top_users(counts, limit))
    }

    async fn user_index_len(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for route in self.directory(user_id, SystemClock.now(), None).await? {
            let len: u64 = self
                .connection()
                .query(redis::cmd("ZCARD").arg(self.keys().index(route, user_id)))
                .await?;
            total += len;
        }
        Ok(total)
    }
}
