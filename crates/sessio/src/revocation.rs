//! Revocation for cookie-only sessions, kept in any sessio store (G10).
//!
//! A cookie-only session lives in its cookie, so ending it clears that one cookie; a copy
//! stays valid until it expires. With a revocation store, sessio also writes down what ended:
//! - per user, a record with a "not before" time (`nb`) that "log out everywhere" moves to
//!   now, and one `r:<session>` entry per session destroyed, until that session would have
//!   expired anyway;
//! - per anonymous session, a record whose existence means "destroyed".
//!
//! Every request that uses a cookie-only session reads the one record that applies to it:
//! one small store read per request, the price of revocable cookies.

use std::time::Duration;

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::id::{IdDigest, SessionHandle};
use crate::patch::{Patch, Touch};
use crate::record::{Data, DataMap, ExpiryOverrides, Record};
use crate::store::{DynStore, StoreError, WriteOutcome};
use crate::time::Timestamp;

const NOT_BEFORE: &str = "nb";
const ATTEMPTS: usize = 3;

/// Where revocations are written, and for how long they matter.
pub(crate) struct Revocations {
    pub(crate) store: Box<dyn DynStore>,
    /// No session lives longer than this after its creation: revocation records last this
    /// long after their last write.
    pub(crate) horizon: Duration,
}

fn digest(kind: &str, name: &str) -> IdDigest {
    let mut hasher = Sha256::new();
    for part in ["sessio-revocation", kind, name] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    IdDigest::from_bytes(hasher.finalize().into())
}

fn user_digest(user_id: &str) -> IdDigest {
    digest("user", user_id)
}

fn session_digest(session: &SessionHandle) -> IdDigest {
    digest("session", &session.to_string())
}

fn entry(session: &SessionHandle) -> String {
    format!("r:{session}")
}

fn raw(millis: u64) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(millis.to_string())
        .map_err(|error| StoreError::Corrupt(error.to_string()))
}

fn entries(record: &Record) -> Result<DataMap, StoreError> {
    record
        .data
        .entries()
        .map_err(|error| StoreError::Corrupt(format!("revocation record: {error}")))
}

fn millis_of(value: &RawValue) -> Option<u64> {
    value.get().parse().ok()
}

impl Revocations {
    /// Whether the session `record`, issued at `issued_at`, was revoked. One store read.
    pub(crate) async fn is_revoked(
        &self,
        record: &Record,
        issued_at: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        match record.user_id() {
            Some(user_id) => {
                let Some(revocations) = self.store.load(&user_digest(user_id), now).await? else {
                    return Ok(false);
                };
                let entries = entries(&revocations)?;
                let not_before = entries.get(NOT_BEFORE).and_then(|value| millis_of(value));
                Ok(
                    not_before.is_some_and(|not_before| issued_at.as_millis() < not_before)
                        || entries.contains_key(&entry(&record.handle)),
                )
            }
            None => Ok(self
                .store
                .load(&session_digest(&record.handle), now)
                .await?
                .is_some()),
        }
    }

    /// Revokes one session until `until` (when it would have expired anyway).
    pub(crate) async fn revoke_session(
        &self,
        record: &Record,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        match record.user_id() {
            Some(user_id) => {
                let change = (entry(&record.handle), raw(until.as_millis())?);
                self.upsert(&user_digest(user_id), change, until, now).await
            }
            None => {
                let digest = session_digest(&record.handle);
                let marker = self.record(Data::empty(), now, until.max(now))?;
                match self.store.create(&digest, &marker, None).await? {
                    WriteOutcome::Done | WriteOutcome::Exists => Ok(()),
                    WriteOutcome::Gone | WriteOutcome::Moved => Ok(()),
                }
            }
        }
    }

    /// Revokes every session of `user_id` issued at or before `now`; returns the "not
    /// before" time a session must be issued at to survive.
    pub(crate) async fn revoke_user(
        &self,
        user_id: &str,
        now: Timestamp,
    ) -> Result<Timestamp, StoreError> {
        // Strictly after now: a session issued in this very millisecond is revoked too.
        let not_before = now.saturating_add(Duration::from_millis(1));
        let change = (NOT_BEFORE.to_owned(), raw(not_before.as_millis())?);
        self.upsert(&user_digest(user_id), change, now, now).await?;
        Ok(not_before)
    }

    fn record(&self, data: Data, now: Timestamp, until: Timestamp) -> Result<Record, StoreError> {
        Ok(Record {
            handle: SessionHandle::generate()
                .map_err(|error| StoreError::backend(error.to_string()))?,
            created_at: now,
            last_seen_at: now,
            expires_at: until.max(now.saturating_add(self.horizon)),
            expiry: ExpiryOverrides::default(),
            user: None,
            data,
            flashes: Vec::new(),
        })
    }

    /// Sets one key of a user's revocation record, creating it if needed, and drops the
    /// entries of sessions that have expired by now, so the record stays small.
    async fn upsert(
        &self,
        digest: &IdDigest,
        change: (String, Box<RawValue>),
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let expires_at = until.max(now.saturating_add(self.horizon));
        for _ in 0..ATTEMPTS {
            let existing = self.store.load(digest, now).await?;
            let Some(existing) = existing else {
                let mut data = DataMap::new();
                data.insert(change.0.clone(), change.1.clone());
                let fresh = self.record(Data::from_entries(&data), now, until)?;
                match self.store.create(digest, &fresh, None).await? {
                    WriteOutcome::Done => return Ok(()),
                    _ => continue,
                }
            };
            let mut changes: Vec<(String, Option<Box<RawValue>>)> = entries(&existing)?
                .into_iter()
                .filter(|(key, value)| {
                    key.starts_with("r:")
                        && *key != change.0
                        && millis_of(value).is_some_and(|until| until <= now.as_millis())
                })
                .map(|(key, _)| (key, None))
                .collect();
            changes.push((change.0.clone(), Some(change.1.clone())));
            let patch = Patch {
                changes,
                touch: Some(Touch {
                    last_seen_at: now,
                    expires_at: expires_at.max(existing.expires_at),
                }),
                ..Patch::default()
            };
            if self.store.apply(digest, &patch, now).await? == WriteOutcome::Done {
                return Ok(());
            }
        }
        Err(StoreError::backend(
            "the revocation record kept changing under the write; try again",
        ))
    }
}
