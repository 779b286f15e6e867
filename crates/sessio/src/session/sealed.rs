//! The cookie-only half of [`Session`]: the session opened from its cookie, changed locally,
//! and sealed into a new cookie when the response is ready (G10).

use super::{CookieChange, Live, LiveKey, Pending, Session, State, Stored};
use crate::error::SessionError;
use crate::events::EventKind;
use crate::patch::Touch;
use crate::record::{Data, DataMap, Record, UserBinding};
use crate::sessions::{NEEDS_REVOCATION_STORE, SealedBackend};
use crate::store::StoreError;
use crate::time::Timestamp;

impl Session {
    fn backend(&self) -> Result<&SealedBackend, SessionError> {
        self.shared()
            .sealed()
            .ok_or(SessionError::NeedsServerStore("not a cookie-only session"))
    }

    /// Opens the cookie; checks expiry from the sealed payload and, with a revocation store,
    /// whether the session was revoked (one store read).
    pub(super) async fn open_sealed(
        &self,
        state: &mut State,
        value: &str,
    ) -> Result<(), SessionError> {
        let shared = self.shared();
        let backend = self.backend()?;
        let Some(opened) = backend
            .ring
            .open(&shared.cookie.name, &backend.purpose, value)
        else {
            shared.events.kind(EventKind::InvalidCookie);
            state.stored = Stored::Absent;
            return Ok(());
        };
        let now = shared.now();
        let record = opened.record;
        // The deadline travelled sealed: the browser's `Max-Age` proves nothing (G8).
        let deadline = shared.deadline(record.created_at, record.last_seen_at, &record.expiry);
        if record.is_expired(now) || deadline <= now {
            self.emit(EventKind::Expired, Some(&record));
            state.stored = Stored::Absent;
            return Ok(());
        }
        if let Some(revocations) = &backend.revocations {
            let revoked = revocations
                .is_revoked(&record, opened.issued_at, now)
                .await
                .map_err(|error| self.store_failed(error))?;
            if revoked {
                self.emit(EventKind::Revoked, Some(&record));
                state.stored = Stored::Absent;
                return Ok(());
            }
        }
        self.emit(EventKind::Loaded, Some(&record));
        // Sealed with an older key: re-issue under the newest one.
        state.reseal = opened.stale_key;
        state.stored = Stored::Present(Box::new(Live {
            key: LiveKey::Sealed {
                issued_at: opened.issued_at,
            },
            record,
        }));
        Ok(())
    }

    /// Refuses data that would not fit in a cookie, when it is inserted (G10).
    pub(super) fn check_cookie_size(
        &self,
        state: &State,
        data: &DataMap,
    ) -> Result<(), SessionError> {
        let backend = self.backend()?;
        let shared = self.shared();
        let now = shared.now();
        let mut record = match &state.stored {
            Stored::Present(live) => live.record.clone(),
            _ => Record {
                handle: crate::SessionHandle::from_bytes([0; 16]),
                created_at: now,
                last_seen_at: now,
                expires_at: now,
                expiry: state.pending.expiry.unwrap_or_default(),
                user: None,
                data: Data::empty(),
                flashes: Vec::new(),
            },
        };
        record.data = Data::from_entries(data);
        record.flashes.extend(state.pending.flashes.iter().cloned());
        backend.ring.check_size(&shared.cookie.name, &record)
    }

    /// The cookie value of `record`, sealed under the newest key.
    pub(super) fn seal(
        &self,
        record: &Record,
        issued_at: Timestamp,
    ) -> Result<String, SessionError> {
        let backend = self.backend()?;
        backend.ring.seal(
            &self.shared().cookie.name,
            &backend.purpose,
            record,
            issued_at,
        )
    }

    /// With a revocation store, writes down that this session ended, so a copy of its
    /// cookie is refused (G10). Without one, there is nothing to write: only the browser's
    /// cookie is cleared.
    pub(super) async fn revoke_sealed(&self, state: &State) -> Result<(), SessionError> {
        let (Stored::Present(live), Some(revocations)) =
            (&state.stored, &self.backend()?.revocations)
        else {
            return Ok(());
        };
        let shared = self.shared();
        let now = shared.now();
        let record = &live.record;
        let until = shared.deadline(record.created_at, now, &record.expiry);
        revocations
            .revoke_session(record, until, now)
            .await
            .map_err(|error| self.store_failed(error))
    }

    /// A new identity for the session (`cycle_id`, `regenerate`, `login`): a new session id
    /// inside a new cookie; with a revocation store, the old cookie is revoked (G3).
    pub(super) async fn move_sealed(
        &self,
        state: &mut State,
        bind: Option<UserBinding>,
        restart_lifetime: bool,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        self.revoke_sealed(state).await?;
        let shared = self.shared();
        let Stored::Present(live) = &mut state.stored else {
            return Ok(());
        };
        let mut patch = std::mem::take(&mut state.pending).take_patch_owned();
        let record = &mut live.record;
        if restart_lifetime {
            record.created_at = now;
        }
        if let Some(bind) = bind {
            record.user = Some(bind);
        }
        let expiry = patch.expiry.unwrap_or(record.expiry);
        patch.touch = Some(Touch {
            last_seen_at: now,
            expires_at: shared.deadline(record.created_at, now, &expiry),
        });
        patch
            .apply_to(record)
            .map_err(|error| self.store_failed(StoreError::Corrupt(error.to_string())))?;
        record.handle = crate::SessionHandle::generate()?;
        live.key = LiveKey::Sealed { issued_at: now };
        state.cookie = CookieChange::Set;
        state.reseal = true;
        self.emit(EventKind::Cycled, Some(&live.record));
        Ok(())
    }

    /// "Log out everywhere" for cookie-only sessions: moves the user's "not before" time to
    /// now. With `keep_current`, this session gets a new identity issued now, and survives.
    pub(super) async fn revoke_user_sealed(
        &self,
        state: &mut State,
        user_id: &str,
        keep_current: bool,
    ) -> Result<(), SessionError> {
        let revocations = self
            .backend()?
            .revocations
            .as_ref()
            .ok_or(SessionError::NeedsServerStore(NEEDS_REVOCATION_STORE))?;
        let now = self.shared().now();
        let not_before = revocations
            .revoke_user(user_id, now)
            .await
            .map_err(|error| self.store_failed(error))?;
        self.shared().events.emit(crate::Event {
            kind: EventKind::Revoked,
            user_id: Some(user_id),
            handle: None,
            count: 1,
        });
        if keep_current && let Stored::Present(live) = &mut state.stored {
            live.record.handle = crate::SessionHandle::generate()?;
            live.key = LiveKey::Sealed {
                issued_at: not_before,
            };
            state.cookie = CookieChange::Set;
            state.reseal = true;
        }
        Ok(())
    }

    /// The end-of-request save: pending changes applied to this request's copy, and a new
    /// cookie when anything changed.
    ///
    /// With a revocation store, a save that changes content first checks that the session
    /// was not revoked while the request ran (one more read), so a slow request cannot
    /// re-issue a logged-out session's cookie (G2): it gets `Ended` and a removal cookie.
    pub(super) async fn save_sealed(
        &self,
        state: &mut State,
        now: Timestamp,
    ) -> Result<(), SessionError> {
        let shared = self.shared();
        if let (Stored::Present(live), Some(revocations)) =
            (&state.stored, &self.backend()?.revocations)
            && let LiveKey::Sealed { issued_at } = live.key
            && !state.pending.is_empty()
        {
            let revoked = revocations
                .is_revoked(&live.record, issued_at, now)
                .await
                .map_err(|error| self.store_failed(error))?;
            if revoked {
                self.emit(EventKind::SaveRefused, Some(&live.record));
                state.stored = Stored::Absent;
                state.pending = Pending::default();
                state.cookie = CookieChange::Remove;
                return Err(SessionError::Ended);
            }
        }
        let Stored::Present(live) = &mut state.stored else {
            return Ok(());
        };
        let record = &mut live.record;
        let touch_due = now.saturating_since(record.last_seen_at) >= shared.touch_interval;
        if state.pending.is_empty() && !touch_due && !state.reseal {
            return Ok(());
        }
        let expiry = state.pending.expiry.unwrap_or(record.expiry);
        let mut patch = std::mem::take(&mut state.pending).take_patch_owned();
        if touch_due || patch.expiry.is_some() {
            patch.touch = Some(Touch {
                last_seen_at: now,
                expires_at: shared.deadline(record.created_at, now, &expiry),
            });
        }
        patch
            .apply_to(record)
            .map_err(|error| self.store_failed(StoreError::Corrupt(error.to_string())))?;
        if state.cookie != CookieChange::Remove {
            state.cookie = CookieChange::Set;
        }
        state.reseal = false;
        Ok(())
    }
}

impl Pending {
    /// [`Pending::take_patch`] for a value already taken out of the state.
    fn take_patch_owned(mut self) -> crate::patch::Patch {
        self.take_patch()
    }
}
