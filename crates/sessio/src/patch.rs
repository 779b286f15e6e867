//! The change a request makes to a session, saved as a patch rather than a rewrite (G5).

use serde_json::value::RawValue;

use crate::record::{Data, ExpiryOverrides, Flash, Record, UserBinding};
use crate::time::Timestamp;

/// A new idle deadline and last-seen time (G8, G9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// The new `last_seen_at`.
    pub last_seen_at: Timestamp,
    /// The new `expires_at`; never later than the absolute deadline.
    pub expires_at: Timestamp,
}

/// The changes one request made to one session.
///
/// Stores apply a patch atomically and only to a live record, so concurrent requests that
/// change different keys all persist, and a request cannot write back a session that was
/// destroyed while it ran (G2, G5). Order of application: `clear`, then `changes` in order,
/// then `flashes` appended, then `expiry` and `touch`.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    /// Remove every key before applying `changes`.
    pub clear: bool,
    /// Keys set (`Some`, raw JSON) or removed (`None`); each key appears at most once.
    pub changes: Vec<(String, Option<Box<RawValue>>)>,
    /// Flash messages to append.
    pub flashes: Vec<Flash>,
    /// New per-session expiry settings.
    pub expiry: Option<ExpiryOverrides>,
    /// New last-seen time and deadline.
    pub touch: Option<Touch>,
}

impl Patch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.clear
            && self.changes.is_empty()
            && self.flashes.is_empty()
            && self.expiry.is_none()
            && self.touch.is_none()
    }

    /// Whether the patch changes data or flashes, as opposed to only expiry: losing it would
    /// lose something a handler wrote.
    pub fn changes_content(&self) -> bool {
        self.clear || !self.changes.is_empty() || !self.flashes.is_empty()
    }

    /// Whether the patch changes the data keys (not flashes or expiry).
    pub fn changes_data(&self) -> bool {
        self.clear || !self.changes.is_empty()
    }

    /// Applies the data part of the patch to `data`.
    ///
    /// # Errors
    /// If `data` is not a JSON object, which means the store returned a corrupt record.
    pub fn apply_to_data(&self, data: &Data) -> Result<Data, serde_json::Error> {
        if !self.changes_data() {
            return Ok(data.clone());
        }
        let mut entries = if self.clear {
            Default::default()
        } else {
            data.entries()?
        };
        for (key, value) in &self.changes {
            match value {
                Some(value) => {
                    entries.insert(key.clone(), value.clone());
                }
                None => {
                    entries.remove(key);
                }
            }
        }
        Ok(Data::from_entries(&entries))
    }

    /// Applies the whole patch to `record`: what a store does inside its atomic update when
    /// it keeps records whole (memory, SQL).
    ///
    /// # Errors
    /// If the record's data is not a JSON object.
    pub fn apply_to(&self, record: &mut Record) -> Result<(), serde_json::Error> {
        record.data = self.apply_to_data(&record.data)?;
        record.flashes.extend(self.flashes.iter().cloned());
        if let Some(expiry) = self.expiry {
            record.expiry = expiry;
        }
        if let Some(touch) = self.touch {
            record.last_seen_at = touch.last_seen_at;
            record.expires_at = touch.expires_at;
        }
        Ok(())
    }
}

/// Everything a [`SessionStore::cycle`](crate::SessionStore::cycle) does besides moving the
/// record: the request's pending changes, and for a login the new user binding.
#[derive(Debug, Clone, Default)]
pub struct CycleChange {
    /// Pending changes to apply to the moved record, in the same atomic step.
    pub patch: Patch,
    /// Bind the session to this user (login). `None` keeps the current binding.
    pub bind: Option<UserBinding>,
    /// Restart the absolute lifetime at this time (login and regenerate do).
    pub created_at: Option<Timestamp>,
    /// Keep a "moved" marker under the old digest until this time, so that a request still
    /// holding the old id learns its session moved rather than ended, and does not clear the
    /// browser's new cookie. Never later than the old record's expiry.
    pub moved_marker_until: Timestamp,
    /// With `bind`: evict the user's oldest sessions beyond this many.
    pub max_sessions_per_user: Option<std::num::NonZeroU32>,
}
