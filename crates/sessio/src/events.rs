//! Session events: counters, tracing events and listeners, none of which ever see an id (G14).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::id::SessionHandle;

/// Something that happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A new record was stored.
    Created,
    /// A record was loaded for a request.
    Loaded,
    /// A session moved to a new id (`cycle_id`, `regenerate`, `login`).
    Cycled,
    /// A session was destroyed by its own request (`destroy`, `logout`).
    Destroyed,
    /// A cookie named a session that had expired.
    Expired,
    /// A session was ended from elsewhere: another device, or an admin.
    Revoked,
    /// A cookie failed the id syntax check.
    InvalidCookie,
    /// A save was refused because the session ended or moved while the request ran (G2).
    SaveRefused,
    /// A store operation failed.
    StoreFailed,
}

impl EventKind {
    const ALL: [Self; 9] = [
        Self::Created,
        Self::Loaded,
        Self::Cycled,
        Self::Destroyed,
        Self::Expired,
        Self::Revoked,
        Self::InvalidCookie,
        Self::SaveRefused,
        Self::StoreFailed,
    ];

    /// A stable lower-case name, for metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Loaded => "loaded",
            Self::Cycled => "cycled",
            Self::Destroyed => "destroyed",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::InvalidCookie => "invalid_cookie",
            Self::SaveRefused => "save_refused",
            Self::StoreFailed => "store_failed",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One event, as a listener sees it. Carries the user id and the public handle when they are
/// known, never the session id or its digest.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// What happened.
    pub kind: EventKind,
    /// The user the session belongs to, if any.
    pub user_id: Option<&'a str>,
    /// The session's public handle, if known.
    pub handle: Option<SessionHandle>,
    /// For `Revoked`: how many sessions were ended.
    pub count: u64,
}

/// Receives every [`Event`], for audit logs or metrics exporters.
///
/// A listener runs after the operation it reports has completed in the store; if it panics,
/// the panic is caught and logged, and the operation's result stands (G14).
pub trait EventListener: Send + Sync + 'static {
    /// Called once per event.
    fn on_event(&self, event: &Event<'_>);
}

impl<F: Fn(&Event<'_>) + Send + Sync + 'static> EventListener for F {
    fn on_event(&self, event: &Event<'_>) {
        self(event);
    }
}

/// Counts of every [`EventKind`] since start, read with [`Sessions::metrics`](crate::Sessions::metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Records created.
    pub created: u64,
    /// Records loaded.
    pub loaded: u64,
    /// Ids cycled.
    pub cycled: u64,
    /// Sessions destroyed by their own request.
    pub destroyed: u64,
    /// Expired sessions presented by a cookie.
    pub expired: u64,
    /// Sessions ended from elsewhere.
    pub revoked: u64,
    /// Cookies that failed the syntax check.
    pub invalid_cookie: u64,
    /// Saves refused because the session ended or moved.
    pub save_refused: u64,
    /// Store operations that failed.
    pub store_failed: u64,
}

impl Metrics {
    /// The count for one kind.
    pub fn get(&self, kind: EventKind) -> u64 {
        match kind {
            EventKind::Created => self.created,
            EventKind::Loaded => self.loaded,
            EventKind::Cycled => self.cycled,
            EventKind::Destroyed => self.destroyed,
            EventKind::Expired => self.expired,
            EventKind::Revoked => self.revoked,
            EventKind::InvalidCookie => self.invalid_cookie,
            EventKind::SaveRefused => self.save_refused,
            EventKind::StoreFailed => self.store_failed,
        }
    }
}

#[derive(Default)]
pub(crate) struct Events {
    counters: [AtomicU64; EventKind::ALL.len()],
    listeners: Vec<Arc<dyn EventListener>>,
}

impl Events {
    pub(crate) fn new(listeners: Vec<Arc<dyn EventListener>>) -> Self {
        Self {
            counters: Default::default(),
            listeners,
        }
    }

    pub(crate) fn emit(&self, event: Event<'_>) {
        let increment = if event.kind == EventKind::Revoked {
            event.count
        } else {
            1
        };
        self.counters[event.kind.index()].fetch_add(increment, Ordering::Relaxed);
        tracing::debug!(
            target: "sessio",
            event = event.kind.as_str(),
            user = event.user_id,
            handle = event.handle.map(tracing::field::display),
            count = event.count,
        );
        for listener in &self.listeners {
            if catch_unwind(AssertUnwindSafe(|| listener.on_event(&event))).is_err() {
                tracing::error!(
                    target: "sessio",
                    event = event.kind.as_str(),
                    "a session event listener panicked; the operation it reported stands"
                );
            }
        }
    }

    pub(crate) fn kind(&self, kind: EventKind) {
        self.emit(Event {
            kind,
            user_id: None,
            handle: None,
            count: 1,
        });
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        let read = |kind: EventKind| self.counters[kind.index()].load(Ordering::Relaxed);
        Metrics {
            created: read(EventKind::Created),
            loaded: read(EventKind::Loaded),
            cycled: read(EventKind::Cycled),
            destroyed: read(EventKind::Destroyed),
            expired: read(EventKind::Expired),
            revoked: read(EventKind::Revoked),
            invalid_cookie: read(EventKind::InvalidCookie),
            save_refused: read(EventKind::SaveRefused),
            store_failed: read(EventKind::StoreFailed),
        }
    }
}
