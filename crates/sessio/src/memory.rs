//! The in-memory store: the embedded default for tests and for apps that run as one process.
//!
//! It is fit for production on one process: records are spread over independently locked
//! shards so that concurrent requests on different sessions do not contend, a per-user index
//! makes device lists cost work proportional to the user's sessions, a background thread
//! purges expired records, and a capacity bound keeps memory bounded under a flood of new
//! sessions (G8). Its limits are the process's: sessions end when the process does, and two
//! processes do not share them. Use a persistent store (SQLite) to survive restarts and a
//! shared one (Redis, PostgreSQL) for several processes.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::id::{IdDigest, SessionHandle};
use crate::patch::{CycleChange, Patch};
use crate::record::{Data, ExpiryOverrides, Flash, Record, SessionInfo, UserBinding};
use crate::store::{SessionStore, StoreError, WriteOutcome};
use crate::time::{Clock, SystemClock, Timestamp};

const DEFAULT_SHARDS: usize = 64;
const DEFAULT_CAPACITY: usize = 1_000_000;
const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// When the store is full, purge at most this often before refusing new sessions, so a flood
/// cannot make every create scan the whole store.
const FULL_PURGE_BACKOFF: Duration = Duration::from_secs(1);

/// Hashes an [`IdDigest`] by its first eight bytes: digests are uniformly random already, and
/// only sessio's own freshly generated ids are ever inserted, so no client can aim collisions.
#[derive(Clone, Copy, Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, byte) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(*byte) << (8 * i);
        }
    }
}

#[derive(Clone, Copy, Default)]
struct DigestState;

impl BuildHasher for DigestState {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher::default()
    }
}

/// A record as the memory store keeps it: what every session has inline (72 bytes), the
/// rest (a user, expiry overrides, flash messages) out of line and only when present, so an
/// anonymous session with a small data object costs one table entry and nothing else (G8).
struct Stored {
    handle: SessionHandle,
    created_at: Timestamp,
    last_seen_at: Timestamp,
    expires_at: Timestamp,
    data: Data,
    extra: Option<Box<Extra>>,
}

#[derive(Clone, Default)]
struct Extra {
    user: Option<UserBinding>,
    expiry: ExpiryOverrides,
    flashes: Vec<Flash>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.user.is_none() && self.expiry.is_default() && self.flashes.is_empty()
    }
}

impl Stored {
    fn from_record(record: &Record) -> Self {
        let extra = Extra {
            user: record.user.clone(),
            expiry: record.expiry,
            flashes: record.flashes.clone(),
        };
        Self {
            handle: record.handle,
            created_at: record.created_at,
            last_seen_at: record.last_seen_at,
            expires_at: record.expires_at,
            data: record.data.clone(),
            extra: (!extra.is_empty()).then(|| Box::new(extra)),
        }
    }

    fn to_record(&self) -> Record {
        let extra = self.extra.as_deref();
        Record {
            handle: self.handle,
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            expires_at: self.expires_at,
            expiry: extra.map(|extra| extra.expiry).unwrap_or_default(),
            user: extra.and_then(|extra| extra.user.clone()),
            data: self.data.clone(),
            flashes: extra.map(|extra| extra.flashes.clone()).unwrap_or_default(),
        }
    }

    fn user_id(&self) -> Option<&str> {
        self.extra
            .as_deref()
            .and_then(|extra| extra.user.as_ref())
            .map(|user| user.user_id.as_str())
    }

    fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    fn info(&self) -> SessionInfo {
        let user = self.extra.as_deref().and_then(|extra| extra.user.as_ref());
        SessionInfo {
            handle: self.handle,
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            expires_at: self.expires_at,
            user_agent: user.and_then(|user| user.user_agent.clone()),
            ip: user.and_then(|user| user.ip),
            current: false,
        }
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Applies `patch` in place; changes nothing if the data part fails.
    fn apply(&mut self, patch: &Patch) -> Result<(), serde_json::Error> {
        self.data = patch.apply_to_data(&self.data)?;
        if !patch.flashes.is_empty() {
            self.extra_mut()
                .flashes
                .extend(patch.flashes.iter().cloned());
        }
        if let Some(expiry) = patch.expiry {
            self.extra_mut().expiry = expiry;
        }
        if let Some(touch) = patch.touch {
            self.last_seen_at = touch.last_seen_at;
            self.expires_at = touch.expires_at;
        }
        if self.extra.as_deref().is_some_and(Extra::is_empty) {
            self.extra = None;
        }
        Ok(())
    }

    fn take_flashes(&mut self) -> Vec<Flash> {
        let flashes = self
            .extra
            .as_deref_mut()
            .map(|extra| std::mem::take(&mut extra.flashes))
            .unwrap_or_default();
        if self.extra.as_deref().is_some_and(Extra::is_empty) {
            self.extra = None;
        }
        flashes
    }
}

enum Slot {
    Live(Stored),
    /// The record moved to a new id; kept until `until` so late writers learn why (G3).
    Moved {
        until: Timestamp,
    },
}

struct IndexEntry {
    handle: SessionHandle,
    digest: IdDigest,
    created_at: Timestamp,
}

type RecordMap = HashMap<IdDigest, Slot, DigestState>;
type UserMap = HashMap<Box<str>, Vec<IndexEntry>>;

#[derive(Default)]
struct Shard {
    records: RecordMap,
    users: UserMap,
}

struct Shared {
    shards: Box<[Mutex<Shard>]>,
    capacity: usize,
    /// Records and moved markers held, live or not yet purged.
    len: AtomicUsize,
    user_hasher: RandomState,
    purge_cursor: AtomicUsize,
    last_full_purge: AtomicU64,
    clock: Arc<dyn Clock>,
    purger: Mutex<Option<std::thread::Thread>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(purger) = self.purger.get_mut()
            && let Some(thread) = purger.take()
        {
            thread.unpark();
        }
    }
}

/// The in-memory [`SessionStore`]. Cheap to clone; clones share the sessions.
///
/// ```
/// use std::time::Duration;
/// use sessio::MemoryStore;
///
/// let store = MemoryStore::builder()
///     .capacity(100_000)
///     .purge_interval(Duration::from_secs(30))
///     .build();
/// # drop(store);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shared.shards.len())
            .field("capacity", &self.shared.capacity)
            .field("held", &self.shared.len.load(Ordering::Relaxed))
            .finish()
    }
}

/// Settings for a [`MemoryStore`].
#[derive(Clone)]
pub struct MemoryStoreBuilder {
    shards: usize,
    capacity: usize,
    purge_interval: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStoreBuilder")
            .field("shards", &self.shards)
            .field("capacity", &self.capacity)
            .field("purge_interval", &self.purge_interval)
            .finish_non_exhaustive()
    }
}

impl MemoryStoreBuilder {
    /// Number of independently locked shards, rounded up to a power of two (default 64).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, 1 << 16).next_power_of_two();
        self
    }

    /// Most records (live or awaiting purge) the store holds; creating more fails with
    /// [`StoreError::Full`] after a purge of expired records (default 1,000,000).
    ///
    /// A full store refuses new sessions rather than evicting live ones, so a flood of
    /// anonymous visitors cannot log real users out.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How often the background thread purges expired records (default 60 s).
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.purge_interval = Some(interval.max(Duration::from_millis(10)));
        self
    }

    /// No background purge thread: purge only when full or when
    /// [`Sessions::purge_expired`](crate::Sessions::purge_expired) is called.
    pub fn without_background_purge(mut self) -> Self {
        self.purge_interval = None;
        self
    }

    /// The clock the background purge reads (the system clock by default).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Creates the store and starts its purge thread, which ends when the last clone of the
    /// store is dropped.
    pub fn build(self) -> MemoryStore {
        let shared = Arc::new(Shared {
            shards: (0..self.shards).map(|_| Mutex::default()).collect(),
            capacity: self.capacity,
            len: AtomicUsize::new(0),
            user_hasher: RandomState::new(),
            purge_cursor: AtomicUsize::new(0),
            last_full_purge: AtomicU64::new(0),
            clock: self.clock,
            purger: Mutex::new(None),
        });
        if let Some(interval) = self.purge_interval {
            spawn_purger(&shared, interval);
        }
        MemoryStore { shared }
    }
}

fn spawn_purger(shared: &Arc<Shared>, interval: Duration) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("sessio-memory-purge".into())
        .spawn(move || {
            loop {
                std::thread::park_timeout(interval);
                let Some(shared) = weak.upgrade() else { return };
                let now = shared.clock.now();
                let purged = shared.purge_all(now);
                if purged > 0 {
                    tracing::debug!(target: "sessio::memory", purged, "purged expired sessions");
                }
            }
        });
    match spawned {
        Ok(handle) => {
            if let Ok(mut purger) = shared.purger.lock() {
                *purger = Some(handle.thread().clone());
            }
        }
        Err(error) => tracing::warn!(
            target: "sessio::memory",
            %error,
            "could not start the purge thread; expired sessions are purged only when the store is full"
        ),
    }
}

impl MemoryStore {
    /// A store with the default settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Settings for a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            shards: DEFAULT_SHARDS,
            capacity: DEFAULT_CAPACITY,
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
            clock: Arc::new(SystemClock),
        }
    }

    /// Records and moved markers held right now, including expired ones not yet purged.
    pub fn held(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed)
    }
}

/// A recovered lock: a panic elsewhere while holding a shard leaves maps that are still
/// consistent per operation, so later requests keep working instead of failing forever.
fn lock(mutex: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Shards locked together, always in ascending index order so that no two operations can
/// wait on each other.
struct Locked<'a> {
    guards: [Option<(usize, MutexGuard<'a, Shard>)>; 4],
}

impl<'a> Locked<'a> {
    fn new(shared: &'a Shared, indices: &[usize]) -> Self {
        let mut sorted = [usize::MAX; 4];
        for (slot, index) in sorted.iter_mut().zip(indices) {
            *slot = *index;
        }
        sorted.sort_unstable();
        let mut guards: [Option<(usize, MutexGuard<'a, Shard>)>; 4] = Default::default();
        let mut previous = usize::MAX;
        for (slot, index) in guards.iter_mut().zip(sorted) {
            if index == usize::MAX || index == previous {
                continue;
            }
            if let Some(shard) = shared.shards.get(index) {
                *slot = Some((index, lock(shard)));
            }
            previous = index;
        }
        Self { guards }
    }

    fn shard(&mut self, index: usize) -> Result<&mut Shard, StoreError> {
        self.guards
            .iter_mut()
            .flatten()
            .find(|(held, _)| *held == index)
            .map(|(_, guard)| &mut **guard)
            .ok_or_else(|| StoreError::backend("memory store: shard not locked (internal error)"))
    }
}

fn live(slot: Option<&Slot>, now: Timestamp) -> Result<&Stored, WriteOutcome> {
    match slot {
        Some(Slot::Live(record)) if !record.is_expired(now) => Ok(record),
        Some(Slot::Moved { until }) if *until > now => Err(WriteOutcome::Moved),
        _ => Err(WriteOutcome::Gone),
    }
}

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

impl Shared {
    fn record_shard(&self, digest: &IdDigest) -> usize {
        let bytes = digest.as_bytes();
        usize::from(u16::from_le_bytes([bytes[8], bytes[9]])) & (self.shards.len() - 1)
    }

    fn user_shard(&self, user_id: &str) -> usize {
        // Truncation is intended: only the low bits pick the shard.
        (self.user_hasher.hash_one(user_id) as usize) & (self.shards.len() - 1)
    }

    fn user_of(&self, digest: &IdDigest) -> Option<Box<str>> {
        let shard = lock(&self.shards[self.record_shard(digest)]);
        match shard.records.get(digest) {
            Some(Slot::Live(record)) => record.user_id().map(Into::into),
            _ => None,
        }
    }

    fn make_room(&self, now: Timestamp) -> Result<(), StoreError> {
        if self.len.load(Ordering::Relaxed) < self.capacity {
            return Ok(());
        }
        let last = self.last_full_purge.load(Ordering::Relaxed);
        let backoff = u64::try_from(FULL_PURGE_BACKOFF.as_millis()).unwrap_or(u64::MAX);
        if now.as_millis().saturating_sub(last) >= backoff
            && self
                .last_full_purge
                .compare_exchange(last, now.as_millis(), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.purge_all(now);
        }
        if self.len.load(Ordering::Relaxed) < self.capacity {
            Ok(())
        } else {
            Err(StoreError::Full {
                capacity: self.capacity,
            })
        }
    }

    /// Destroys the user's oldest sessions beyond `max`, the newest being `keep`.
    fn evict_beyond(&self, user_id: &str, max: NonZeroU32, keep: &SessionHandle) {
        let u = self.user_shard(user_id);
        let victims: Vec<IdDigest> = {
            let mut shard = lock(&self.shards[u]);
            let Some(entries) = shard.users.get_mut(user_id) else {
                return;
            };
            let limit = usize::try_from(max.get()).unwrap_or(usize::MAX);
            if entries.len() <= limit {
                return;
            }
            entries.sort_by_key(|entry| (entry.handle == *keep, entry.created_at));
            let excess = entries.len() - limit;
            entries
                .iter()
                .take(excess)
                .map(|entry| entry.digest)
                .collect()
        };
        for digest in victims {
            self.destroy_indexed(&digest, user_id);
        }
    }

    /// Removes a user's record and its index entry together; returns the removed record.
    fn destroy_indexed(&self, digest: &IdDigest, user_id: &str) -> Option<Stored> {
        let r = self.record_shard(digest);
        let u = self.user_shard(user_id);
        let mut locked = Locked::new(self, &[r, u]);
        let removed = {
            let records = &mut locked.shard(r).ok()?.records;
            match records.get(digest) {
                Some(Slot::Live(record)) if record.user_id() == Some(user_id) => {
                    match records.remove(digest) {
                        Some(Slot::Live(record)) => Some(record),
                        _ => None,
                    }
                }
                _ => None,
            }
        };
        let users = &mut locked.shard(u).ok()?.users;
        remove_index_entry(users, user_id, digest);
        if removed.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Purges every shard, one lock at a time; returns how many entries it removed.
    fn purge_all(&self, now: Timestamp) -> u64 {
        (0..self.shards.len())
            .map(|index| self.purge_shard(index, now, usize::MAX))
            .sum()
    }

    fn purge_shard(&self, index: usize, now: Timestamp, limit: usize) -> u64 {
        let mut removed = 0u64;
        let mut bound: Vec<(IdDigest, Box<str>)> = Vec::new();
        {
            let mut shard = lock(&self.shards[index]);
            let mut budget = limit;
            shard.records.retain(|digest, slot| {
                if budget == 0 {
                    return true;
                }
                let expired = match slot {
                    Slot::Live(record) => record.is_expired(now),
                    Slot::Moved { until } => *until <= now,
                };
                if !expired {
                    return true;
                }
                budget -= 1;
                if let Slot::Live(record) = slot
                    && let Some(user_id) = record.user_id()
                {
                    // Bound records go with their index entry, under both locks, below.
                    bound.push((*digest, user_id.into()));
                    return true;
                }
                removed += 1;
                false
            });
        }
        self.len
            .fetch_sub(usize::try_from(removed).unwrap_or(0), Ordering::Relaxed);
        for (digest, user_id) in bound {
            let u = self.user_shard(&user_id);
            let mut locked = Locked::new(self, &[index, u]);
            let Ok(shard) = locked.shard(index) else {
                continue;
            };
            let still_expired = matches!(
                shard.records.get(&digest),
                Some(Slot::Live(record)) if record.is_expired(now)
            );
            if !still_expired {
                continue;
            }
            shard.records.remove(&digest);
            self.len.fetch_sub(1, Ordering::Relaxed);
            removed += 1;
            if let Ok(shard) = locked.shard(u) {
                remove_index_entry(&mut shard.users, &user_id, &digest);
            }
        }
        removed
    }
}

fn remove_index_entry(users: &mut UserMap, user_id: &str, digest: &IdDigest) {
    if let Some(entries) = users.get_mut(user_id) {
        entries.retain(|entry| entry.digest != *digest);
        if entries.is_empty() {
            users.remove(user_id);
        }
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, digest: &IdDigest, now: Timestamp) -> Result<Option<Record>, StoreError> {
        let shared = &self.shared;
        let shard = lock(&shared.shards[shared.record_shard(digest)]);
        Ok(live(shard.records.get(digest), now)
            .ok()
            .map(Stored::to_record))
    }

    async fn create(
        &self,
        digest: &IdDigest,
        record: &Record,
        max_sessions_per_user: Option<NonZeroU32>,
    ) -> Result<WriteOutcome, StoreError> {
        let shared = &self.shared;
        shared.make_room(record.last_seen_at)?;
        let r = shared.record_shard(digest);
        let u = record.user_id().map(|user_id| shared.user_shard(user_id));
        {
            let mut locked = Locked::new(shared, &[r, u.unwrap_or(r)]);
            let records = &mut locked.shard(r)?.records;
            if records.contains_key(digest) {
                return Ok(WriteOutcome::Exists);
            }
            records.insert(*digest, Slot::Live(Stored::from_record(record)));
            shared.len.fetch_add(1, Ordering::Relaxed);
            if let (Some(u), Some(user_id)) = (u, record.user_id()) {
                locked
                    .shard(u)?
                    .users
                    .entry(user_id.into())
                    .or_default()
                    .push(IndexEntry {
                        handle: record.handle,
                        digest: *digest,
                        created_at: record.created_at,
                    });
            }
        }
        if let (Some(max), Some(user_id)) = (max_sessions_per_user, record.user_id()) {
            shared.evict_beyond(user_id, max, &record.handle);
        }
        Ok(WriteOutcome::Done)
    }

    async fn apply(
        &self,
        digest: &IdDigest,
        patch: &Patch,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let shared = &self.shared;
        let mut shard = lock(&shared.shards[shared.record_shard(digest)]);
        let slot = shard.records.get_mut(digest);
        if let Err(outcome) = live(slot.as_deref(), now) {
            return Ok(outcome);
        }
        if let Some(Slot::Live(record)) = slot {
            record.apply(patch).map_err(corrupt)?;
        }
        Ok(WriteOutcome::Done)
    }

    async fn cycle(
        &self,
        old: &IdDigest,
        new: &IdDigest,
        change: &CycleChange,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let shared = &self.shared;
        let r_old = shared.record_shard(old);
        let r_new = shared.record_shard(new);
        let new_user: Option<Box<str>> = change.bind.as_ref().map(|b| b.user_id.as_str().into());
        loop {
            // The old record's user decides which index shard to lock; check it again under
            // the locks and start over if a concurrent login changed it.
            let old_user = shared.user_of(old);
            let u_old = old_user.as_deref().map(|user| shared.user_shard(user));
            let u_new = new_user.as_deref().map(|user| shared.user_shard(user));
            let mut locked = Locked::new(
                shared,
                &[r_old, r_new, u_old.unwrap_or(r_old), u_new.unwrap_or(r_old)],
            );
            let shard = locked.shard(r_old)?;
            let record = match live(shard.records.get(old), now) {
                Ok(record) => record,
                Err(outcome) => return Ok(outcome),
            };
            if record.user_id() != old_user.as_deref() {
                continue;
            }
            let mut moved = record.to_record();
            change.patch.apply_to(&mut moved).map_err(corrupt)?;
            if let Some(created_at) = change.created_at {
                moved.created_at = created_at;
            }
            if let Some(bind) = &change.bind {
                moved.user = Some(bind.clone());
            }
            if locked.shard(r_new)?.records.contains_key(new) {
                return Ok(WriteOutcome::Exists);
            }
            let shard = locked.shard(r_old)?;
            if change.moved_marker_until > now {
                shard.records.insert(
                    *old,
                    Slot::Moved {
                        until: change.moved_marker_until,
                    },
                );
            } else {
                shard.records.remove(old);
                shared.len.fetch_sub(1, Ordering::Relaxed);
            }
            if let (Some(u), Some(user)) = (u_old, old_user.as_deref()) {
                remove_index_entry(&mut locked.shard(u)?.users, user, old);
            }
            let handle = moved.handle;
            if let Some(user) = moved.user_id() {
                let u = shared.user_shard(user);
                locked
                    .shard(u)?
                    .users
                    .entry(user.into())
                    .or_default()
                    .push(IndexEntry {
                        handle,
                        digest: *new,
                        created_at: moved.created_at,
                    });
            }
            locked
                .shard(r_new)?
                .records
                .insert(*new, Slot::Live(Stored::from_record(&moved)));
            shared.len.fetch_add(1, Ordering::Relaxed);
            drop(locked);
            if let (Some(max), Some(user)) = (change.max_sessions_per_user, new_user.as_deref()) {
                shared.evict_beyond(user, max, &handle);
            }
            return Ok(WriteOutcome::Done);
        }
    }

    async fn destroy(&self, digest: &IdDigest, now: Timestamp) -> Result<bool, StoreError> {
        let shared = &self.shared;
        loop {
            // Each branch gives up when a concurrent login changed the record's user under
            // it, and the loop looks again.
            match shared.user_of(digest) {
                Some(user) => {
                    if let Some(record) = shared.destroy_indexed(digest, &user) {
                        return Ok(!record.is_expired(now));
                    }
                }
                None => {
                    if let Some(was_live) = self.destroy_unbound(digest, now) {
                        return Ok(was_live);
                    }
                }
            }
        }
    }

    async fn take_flashes(
        &self,
        digest: &IdDigest,
        now: Timestamp,
    ) -> Result<Option<Vec<Flash>>, StoreError> {
        let shared = &self.shared;
        let mut shard = lock(&shared.shards[shared.record_shard(digest)]);
        match shard.records.get_mut(digest) {
            Some(Slot::Live(record)) if !record.is_expired(now) => Ok(Some(record.take_flashes())),
            _ => Ok(None),
        }
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let shared = &self.shared;
        let entries: Vec<IdDigest> = {
            let shard = lock(&shared.shards[shared.user_shard(user_id)]);
            shard
                .users
                .get(user_id)
                .map(|entries| entries.iter().map(|entry| entry.digest).collect())
                .unwrap_or_default()
        };
        let mut sessions: Vec<SessionInfo> = entries
            .iter()
            .filter_map(|digest| {
                let shard = lock(&shared.shards[shared.record_shard(digest)]);
                match live(shard.records.get(digest), now) {
                    Ok(record) if record.user_id() == Some(user_id) => Some(record.info()),
                    _ => None,
                }
            })
            .collect();
        sessions.sort_by_key(|info| (info.created_at, info.handle));
        Ok(sessions)
    }

    async fn destroy_user_session(
        &self,
        user_id: &str,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let shared = &self.shared;
        let digest = {
            let shard = lock(&shared.shards[shared.user_shard(user_id)]);
            shard.users.get(user_id).and_then(|entries| {
                entries
                    .iter()
                    .find(|entry| entry.handle == *handle)
                    .map(|entry| entry.digest)
            })
        };
        Ok(digest
            .and_then(|digest| shared.destroy_indexed(&digest, user_id))
            .is_some_and(|record| !record.is_expired(now)))
    }

    async fn destroy_user_sessions(
        &self,
        user_id: &str,
        except: Option<&SessionHandle>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let shared = &self.shared;
        let digests: Vec<IdDigest> = {
            let shard = lock(&shared.shards[shared.user_shard(user_id)]);
            shard
                .users
                .get(user_id)
                .map(|entries| {
                    entries
                        .iter()
                        .filter(|entry| Some(&entry.handle) != except)
                        .map(|entry| entry.digest)
                        .collect()
                })
                .unwrap_or_default()
        };
        let destroyed = digests
            .iter()
            .filter_map(|digest| shared.destroy_indexed(digest, user_id))
            .filter(|record| !record.is_expired(now))
            .count();
        Ok(u64::try_from(destroyed).unwrap_or(u64::MAX))
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let shared = &self.shared;
        let shards = shared.shards.len();
        let mut removed = 0u64;
        let mut budget = limit;
        // Resume where the last bounded purge stopped, so repeated calls cover every shard.
        let start = shared.purge_cursor.load(Ordering::Relaxed);
        for offset in 0..shards {
            if budget == 0 {
                break;
            }
            let index = (start + offset) % shards;
            let purged = shared.purge_shard(index, now, budget);
            removed += purged;
            budget = budget.saturating_sub(usize::try_from(purged).unwrap_or(usize::MAX));
            if budget > 0 {
                shared
                    .purge_cursor
                    .store((index + 1) % shards, Ordering::Relaxed);
            }
        }
        Ok(removed)
    }

    async fn count(&self, now: Timestamp) -> Result<u64, StoreError> {
        let live_in_shard = |shard: &Mutex<Shard>| {
            lock(shard)
                .records
                .values()
                .filter(|slot| matches!(slot, Slot::Live(record) if !record.is_expired(now)))
                .count()
        };
        let total: usize = self.shared.shards.iter().map(live_in_shard).sum();
        Ok(u64::try_from(total).unwrap_or(u64::MAX))
    }

    async fn find_handle(
        &self,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        for shard in self.shared.shards.iter() {
            let shard = lock(shard);
            let found = shard.records.values().find_map(|slot| match slot {
                Slot::Live(record) if record.handle == *handle && !record.is_expired(now) => {
                    record.user_id().map(str::to_owned)
                }
                _ => None,
            });
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    async fn destroy_all(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut destroyed = 0;
        for index in 0..self.shared.shards.len() {
            let digests: Vec<IdDigest> = lock(&self.shared.shards[index])
                .records
                .iter()
                .filter(|(_, slot)| matches!(slot, Slot::Live(_)))
                .map(|(digest, _)| *digest)
                .collect();
            for digest in digests {
                if self.destroy(&digest, now).await? {
                    destroyed += 1;
                }
            }
        }
        Ok(destroyed)
    }

    async fn count_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        let expired_in_shard = |shard: &Mutex<Shard>| {
            lock(shard)
                .records
                .values()
                .filter(|slot| match slot {
                    Slot::Live(record) => record.is_expired(now),
                    Slot::Moved { until } => *until <= now,
                })
                .count()
        };
        let total: usize = self.shared.shards.iter().map(expired_in_shard).sum();
        Ok(u64::try_from(total).unwrap_or(u64::MAX))
    }

    async fn top_users(
        &self,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for shard in self.shared.shards.iter() {
            for slot in lock(shard).records.values() {
                if let Slot::Live(record) = slot
                    && !record.is_expired(now)
                    && let Some(user_id) = record.user_id()
                {
                    *counts.entry(user_id.to_owned()).or_default() += 1;
                }
            }
        }
        Ok(crate::store::rank_top_users(counts, limit))
    }

    async fn user_index_len(&self, user_id: &str) -> Result<u64, StoreError> {
        let shared = &self.shared;
        let shard = lock(&shared.shards[shared.user_shard(user_id)]);
        let len = shard.users.get(user_id).map_or(0, Vec::len);
        Ok(u64::try_from(len).unwrap_or(u64::MAX))
    }
}

impl MemoryStore {
    /// Destroys a record with no user and returns whether it was live; `None` if the
    /// record has a user after all (the caller looks again).
    fn destroy_unbound(&self, digest: &IdDigest, now: Timestamp) -> Option<bool> {
        let shared = &self.shared;
        let mut shard = lock(&shared.shards[shared.record_shard(digest)]);
        match shard.records.get(digest) {
            Some(Slot::Live(record)) if record.user_id().is_some() => None,
            Some(Slot::Live(record)) => {
                let was_live = !record.is_expired(now);
                shard.records.remove(digest);
                shared.len.fetch_sub(1, Ordering::Relaxed);
                Some(was_live)
            }
            _ => Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Data;

    fn record(now: Timestamp, ttl: Duration) -> Record {
        Record {
            handle: SessionHandle::generate().unwrap(),
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(ttl),
            expiry: Default::default(),
            user: None,
            data: Data::empty(),
            flashes: Vec::new(),
        }
    }

    async fn put(
        store: &MemoryStore,
        i: u8,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        store.create(&digest(i), &record(now, ttl), None).await
    }

    fn digest(i: u8) -> IdDigest {
        let mut bytes = [i; 32];
        bytes[9] = i.wrapping_mul(7);
        IdDigest::from_bytes(bytes)
    }

    #[tokio::test]
    async fn a_full_store_refuses_new_sessions_until_expired_ones_are_purged() {
        let store = MemoryStore::builder()
            .capacity(10)
            .without_background_purge()
            .build();
        let now = SystemClock.now();
        for i in 0..5 {
            let outcome = put(&store, i, now, Duration::from_millis(100));
            assert_eq!(outcome.await.unwrap(), WriteOutcome::Done);
        }
        for i in 5..10 {
            let outcome = put(&store, i, now, Duration::from_secs(3600));
            assert_eq!(outcome.await.unwrap(), WriteOutcome::Done);
        }
        let full = put(&store, 10, now, Duration::from_secs(3600));
        assert!(matches!(full.await, Err(StoreError::Full { capacity: 10 })));
        assert_eq!(store.held(), 10);
        // Once the short sessions have expired, a create purges them and fits.
        let later = now.saturating_add(Duration::from_secs(2));
        let fits = put(&store, 10, later, Duration::from_secs(3600));
        assert_eq!(fits.await.unwrap(), WriteOutcome::Done);
        assert_eq!(store.held(), 6);
        assert!(
            store.load(&digest(5), later).await.unwrap().is_some(),
            "live sessions stay"
        );
    }

    #[tokio::test]
    async fn the_background_thread_purges_expired_records() {
        let store = MemoryStore::builder()
            .purge_interval(Duration::from_millis(20))
            .build();
        let now = SystemClock.now();
        for i in 0..20 {
            let outcome = put(&store, i, now, Duration::from_millis(50));
            assert_eq!(outcome.await.unwrap(), WriteOutcome::Done);
        }
        let live = put(&store, 99, now, Duration::from_secs(3600));
        assert_eq!(live.await.unwrap(), WriteOutcome::Done);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.held() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(store.held(), 1, "memory is bounded by live sessions");
    }

    #[test]
    fn the_purge_thread_ends_with_the_store() {
        let store = MemoryStore::builder()
            .purge_interval(Duration::from_secs(3600))
            .build();
        let weak = Arc::downgrade(&store.shared);
        drop(store);
        assert!(weak.upgrade().is_none());
    }
}
