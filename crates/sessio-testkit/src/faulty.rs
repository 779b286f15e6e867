//! A store wrapper that fails on command, to check what sessio does when a store call fails.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use sessio::{
    CycleChange, Flash, IdDigest, Patch, Record, SessionHandle, SessionInfo, SessionStore,
    StoreError, Timestamp, WriteOutcome,
};

/// How an injected fault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails without reaching the store: nothing changes.
    Before,
    /// The call reaches the store, then its reply is lost: the change happened, the caller
    /// sees an error.
    After,
}

#[derive(Default)]
struct FaultState {
    calls: AtomicU64,
    fail_at: AtomicU64,
    after: AtomicU8,
    fail_all: AtomicBool,
}

/// Wraps a store and fails the k-th call from now, or every call, on command. Clones share
/// the fault plan and the call count.
#[derive(Clone)]
pub struct FaultyStore<S> {
    inner: S,
    state: Arc<FaultState>,
}

impl<S> FaultyStore<S> {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Store calls made through the wrapper so far.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Fails call number `k` from now (1 is the next call), once.
    pub fn fail_call(&self, k: u64, fault: Fault) {
        let state = &self.state;
        state
            .after
            .store(u8::from(fault == Fault::After), Ordering::SeqCst);
        state.fail_at.store(self.calls() + k, Ordering::SeqCst);
    }

    /// Cancels a planned fault that has not fired yet.
    pub fn disarm(&self) {
        self.state.fail_at.store(0, Ordering::SeqCst);
    }

    /// Fails every call (`Fault::Before`) until turned off: the store is down.
    pub fn fail_all(&self, down: bool) {
        self.state.fail_all.store(down, Ordering::SeqCst);
    }

    fn plan(&self) -> Option<Fault> {
        let state = &self.state;
        let call = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if state.fail_all.load(Ordering::SeqCst) {
            return Some(Fault::Before);
        }
        if state.fail_at.load(Ordering::SeqCst) == call {
            state.fail_at.store(0, Ordering::SeqCst);
            return Some(if state.after.load(Ordering::SeqCst) == 1 {
                Fault::After
            } else {
                Fault::Before
            });
        }
        None
    }

    async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let injected = || StoreError::unavailable("fault injected by sessio-testkit");
        match self.plan() {
            Some(Fault::Before) => Err(injected()),
            Some(Fault::After) => {
                let _ = call.await;
                Err(injected())
            }
            None => call.await,
        }
    }
}

impl<S: SessionStore> SessionStore for FaultyStore<S> {
    fn route_bits(&self) -> u8 {
        self.inner.route_bits()
    }

    async fn load(&self, digest: &IdDigest, now: Timestamp) -> Result<Option<Record>, StoreError> {
        self.run(self.inner.load(digest, now)).await
    }

    async fn create(
        &self,
        digest: &IdDigest,
        record: &Record,
        max_sessions_per_user: Option<NonZeroU32>,
    ) -> Result<WriteOutcome, StoreError> {
        self.run(self.inner.create(digest, record, max_sessions_per_user))
            .await
    }

    async fn apply(
        &self,
        digest: &IdDigest,
        patch: &Patch,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        self.run(self.inner.apply(digest, patch, now)).await
    }

    async fn cycle(
        &self,
        old: &IdDigest,
        new: &IdDigest,
        change: &CycleChange,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        self.run(self.inner.cycle(old, new, change, now)).await
    }

    async fn destroy(&self, digest: &IdDigest, now: Timestamp) -> Result<bool, StoreError> {
        self.run(self.inner.destroy(digest, now)).await
    }

    async fn take_flashes(
        &self,
        digest: &IdDigest,
        now: Timestamp,
    ) -> Result<Option<Vec<Flash>>, StoreError> {
        self.run(self.inner.take_flashes(digest, now)).await
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.run(self.inner.list_user(user_id, now)).await
    }

    async fn destroy_user_session(
        &self,
        user_id: &str,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.run(self.inner.destroy_user_session(user_id, handle, now))
            .await
    }

    async fn destroy_user_sessions(
        &self,
        user_id: &str,
        except: Option<&SessionHandle>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.run(self.inner.destroy_user_sessions(user_id, except, now))
            .await
    }

    async fn purge_expired(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.run(self.inner.purge_expired(now, limit)).await
    }

    async fn count(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.run(self.inner.count(now)).await
    }

    async fn user_index_len(&self, user_id: &str) -> Result<u64, StoreError> {
        self.run(self.inner.user_index_len(user_id)).await
    }

    async fn find_handle(
        &self,
        handle: &SessionHandle,
        now: Timestamp,
    ) -> Result<Option<String>, StoreError> {
        self.run(self.inner.find_handle(handle, now)).await
    }

    async fn destroy_all(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.run(self.inner.destroy_all(now)).await
    }

    async fn count_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.run(self.inner.count_expired(now)).await
    }

    async fn top_users(
        &self,
        limit: usize,
        now: Timestamp,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.run(self.inner.top_users(limit, now)).await
    }
}
