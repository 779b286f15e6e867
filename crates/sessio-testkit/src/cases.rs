//! The store conformance cases. Each is one guarantee, run against a fresh store.
//!
//! Time-dependent cases that only compare timestamps pass `now` explicitly; cases that rely
//! on a store's own expiry (native TTLs) wait for real time, briefly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use sessio::{
    Clock, CycleChange, Data, ExpiryOverrides, Flash, FlashLevel, IdDigest, LoginInfo, Patch,
    Record, SessionError, SessionHandle, SessionStore, Sessions, SystemClock, Timestamp, Touch,
    UserBinding, WriteOutcome,
};
use tokio::sync::Barrier;

use crate::browser::Browser;
use crate::clock::ManualClock;
use crate::faulty::{Fault, FaultyStore};

const HOUR: Duration = Duration::from_secs(3600);

fn now() -> Timestamp {
    SystemClock.now()
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// A digest no id produced: 32 random bytes.
pub fn fresh_digest() -> IdDigest {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(SessionHandle::generate().expect("random").as_bytes());
    bytes[16..].copy_from_slice(SessionHandle::generate().expect("random").as_bytes());
    IdDigest::from_bytes(bytes)
}

/// A random digest in `route` of a store partitioned by `bits` digest bits.
fn routed(route: u16, bits: u8) -> IdDigest {
    let mut bytes = *fresh_digest().as_bytes();
    if bits > 0 {
        let shift = 16 - u32::from(bits);
        let random = u16::from_be_bytes([bytes[0], bytes[1]]) & ((1u16 << shift) - 1);
        let [high, low] = ((route << shift) | random).to_be_bytes();
        bytes[0] = high;
        bytes[1] = low;
    }
    IdDigest::from_bytes(bytes)
}

/// A fresh digest in the partition `handle` names, as sessio draws them for a store with
/// [`SessionStore::route_bits`].
pub fn digest_for<S: SessionStore>(store: &S, handle: &SessionHandle) -> IdDigest {
    let bits = store.route_bits();
    routed(handle.route(bits), bits)
}

/// A fresh digest in the partition of `of`: what a cycle moves a session to.
pub fn sibling<S: SessionStore>(store: &S, of: &IdDigest) -> IdDigest {
    let bits = store.route_bits();
    routed(of.route(bits), bits)
}

/// Creates `record` in the partition of `beside` (its handle routed there), returning its
/// digest.
async fn create_beside<S: SessionStore>(
    store: &S,
    beside: &IdDigest,
    mut record: Record,
) -> IdDigest {
    let bits = store.route_bits();
    let digest = sibling(store, beside);
    record.handle = SessionHandle::generate_routed(digest.route(bits), bits).expect("random");
    let outcome = store.create(&digest, &record, None).await.expect("create");
    assert_eq!(outcome, WriteOutcome::Done);
    digest
}

/// A small record created at `now` that expires after `ttl`, bound to `user` if given.
pub fn record(now: Timestamp, ttl: Duration, user: Option<&str>) -> Record {
    Record {
        handle: SessionHandle::generate().expect("random"),
        created_at: now,
        last_seen_at: now,
        expires_at: now.saturating_add(ttl),
        expiry: ExpiryOverrides::default(),
        user: user.map(|user_id| UserBinding {
            user_id: user_id.to_owned(),
            user_agent: Some("sessio-testkit/1.0".into()),
            ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }),
        data: Data::from_json(r#"{"n":1}"#).expect("valid data"),
        flashes: Vec::new(),
    }
}

fn data(record: &Record) -> serde_json::Value {
    serde_json::from_str(record.data.as_json()).expect("record data is JSON")
}

fn set(key: &str, value: serde_json::Value) -> (String, Option<Box<serde_json::value::RawValue>>) {
    let raw = serde_json::value::to_raw_value(&value).expect("raw JSON");
    (key.to_owned(), Some(raw))
}

async fn create<S: SessionStore>(store: &S, record: &Record) -> IdDigest {
    let digest = digest_for(store, &record.handle);
    let outcome = store.create(&digest, record, None).await.expect("create");
    assert_eq!(outcome, WriteOutcome::Done);
    digest
}

fn cycle_change(now: Timestamp) -> CycleChange {
    CycleChange {
        moved_marker_until: now.saturating_add(Duration::from_secs(120)),
        ..CycleChange::default()
    }
}

/// Sessions over `store` with a clock tests can move, the defaults otherwise.
pub fn sessions_with_clock<S: SessionStore>(store: S, clock: &ManualClock) -> Sessions {
    Sessions::builder(store)
        .clock(clock.clone())
        .build()
        .expect("valid configuration")
}

async fn login(browser: &mut Browser, user: &str) {
    browser
        .request(|session| async move {
            session
                .login(
                    user,
                    LoginInfo {
                        user_agent: Some("sessio-testkit".into()),
                        ip: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                    },
                )
                .await
                .expect("login");
        })
        .await;
}

// --- Store operations -------------------------------------------------------------------

/// Every field of a record survives create and load unchanged.
pub async fn load_returns_what_create_stored<S: SessionStore>(store: S) {
    let now = now();
    let mut full = record(now, HOUR, Some("zoë@example.com"));
    full.data = Data::from_json(r#"{"cart":[1,2,{"sku":"ü-∑"}],"n":-3.5,"nil":null,"s":"a\"b"}"#)
        .expect("valid data");
    full.flashes = vec![
        Flash {
            level: FlashLevel::Success,
            message: "saved ✓".into(),
        },
        Flash {
            level: FlashLevel::Error,
            message: "second".into(),
        },
    ];
    full.expiry = ExpiryOverrides {
        idle_timeout: Some(Duration::from_secs(90)),
        absolute_lifetime: Some(Duration::from_secs(7200)),
    };
    if let Some(user) = &mut full.user {
        user.ip = Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
    }
    let digest = create(&store, &full).await;
    let loaded = store
        .load(&digest, now)
        .await
        .expect("load")
        .expect("record");
    assert_eq!(loaded.handle, full.handle);
    assert_eq!(loaded.user, full.user);
    assert_eq!(data(&loaded), data(&full));
    assert_eq!(loaded.flashes, full.flashes);
    assert_eq!(loaded.expiry, full.expiry);
    assert_eq!(
        (loaded.created_at, loaded.last_seen_at, loaded.expires_at),
        (full.created_at, full.last_seen_at, full.expires_at)
    );
    assert!(
        store
            .load(&fresh_digest(), now)
            .await
            .expect("load")
            .is_none()
    );
}

/// Create refuses a digest that is taken and leaves the first record alone.
pub async fn create_refuses_an_existing_digest<S: SessionStore>(store: S) {
    let now = now();
    let first = record(now, HOUR, None);
    let digest = create(&store, &first).await;
    let mut second = record(now, HOUR, Some("mallory"));
    second.data = Data::from_json(r#"{"n":2}"#).expect("valid data");
    let outcome = store.create(&digest, &second, None).await.expect("create");
    assert_eq!(outcome, WriteOutcome::Exists);
    let loaded = store
        .load(&digest, now)
        .await
        .expect("load")
        .expect("record");
    assert_eq!(loaded.handle, first.handle);
    assert_eq!(data(&loaded), json!({"n": 1}));
    assert_eq!(
        store.list_user("mallory", now).await.expect("list").len(),
        0
    );
}

/// A record is absent from the moment `now` reaches its `expires_at` (G8).
pub async fn load_hides_expired_records<S: SessionStore>(store: S) {
    let now = now();
    let digest = create(&store, &record(now, HOUR, None)).await;
    let deadline = now.saturating_add(HOUR);
    let before = Timestamp::from_millis(deadline.as_millis() - 1);
    assert!(store.load(&digest, before).await.expect("load").is_some());
    assert!(store.load(&digest, deadline).await.expect("load").is_none());
}

/// A patch is applied only to a live record: never to a missing, expired or destroyed one
/// (G2).
pub async fn apply_is_refused_without_a_live_record<S: SessionStore>(store: S) {
    let now = now();
    let patch = Patch {
        changes: vec![set("x", json!(1))],
        ..Patch::default()
    };
    let outcome = store
        .apply(&fresh_digest(), &patch, now)
        .await
        .expect("apply");
    assert_eq!(outcome, WriteOutcome::Gone);
    assert_eq!(store.count(now).await.expect("count"), 0);

    let digest = create(&store, &record(now, HOUR, None)).await;
    let late = now.saturating_add(HOUR);
    let outcome = store.apply(&digest, &patch, late).await.expect("apply");
    assert_eq!(
        outcome,
        WriteOutcome::Gone,
        "expired records take no writes"
    );
    let loaded = store
        .load(&digest, now)
        .await
        .expect("load")
        .expect("record");
    assert_eq!(data(&loaded), json!({"n": 1}));

    assert!(store.destroy(&digest, now).await.expect("destroy"));
    let outcome = store.apply(&digest, &patch, now).await.expect("apply");
    assert_eq!(
        outcome,
        WriteOutcome::Gone,
        "destroyed records take no writes"
    );
    assert!(store.load(&digest, now).await.expect("load").is_none());
}

/// A patch sets and removes only the keys it names, appends flashes and moves the deadline
/// (G5).
pub async fn apply_changes_only_the_named_keys<S: SessionStore>(store: S) {
    let now = now();
    let mut original = record(now, HOUR, None);
    original.data = Data::from_json(r#"{"a":1,"b":2,"keep":true}"#).expect("valid data");
    let digest = create(&store, &original).await;
    let later = now.saturating_add(ms(5000));
    let patch = Patch {
        changes: vec![
            set("a", json!(10)),
            ("b".into(), None),
            set("c", json!("x")),
        ],
        flashes: vec![Flash {
            level: FlashLevel::Info,
            message: "hi".into(),
        }],
        expiry: Some(ExpiryOverrides {
            idle_timeout: Some(Duration::from_secs(60)),
            absolute_lifetime: None,
        }),
        touch: Some(Touch {
            last_seen_at: later,
            expires_at: later.saturating_add(HOUR),
        }),
        ..Patch::default()
    };
    assert_eq!(
        store.apply(&digest, &patch, now).await.expect("apply"),
        WriteOutcome::Done
    );
    let loaded = store
        .load(&digest, now)
        .await
        .expect("load")
        .expect("record");
    assert_eq!(data(&loaded), json!({"a": 10, "c": "x", "keep": true}));
    assert_eq!(loaded.flashes.len(), 1);
    assert_eq!(loaded.last_seen_at, later);
    assert_eq!(loaded.expires_at, later.saturating_add(HOUR));
    assert_eq!(loaded.expiry.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(loaded.created_at, original.created_at);

    let clear = Patch {
        clear: true,
        changes: vec![set("d", json!([1]))],
        ..Patch::default()
    };
    assert_eq!(
        store.apply(&digest, &clear, now).await.expect("apply"),
        WriteOutcome::Done
    );
    let loaded = store
        .load(&digest, now)
        .await
        .expect("load")
        .expect("record");
    assert_eq!(data(&loaded), json!({"d": [1]}));
    assert_eq!(loaded.flashes.len(), 1, "clear removes data, not flashes");
}

/// A cycle moves the record to the new digest in one step; the old digest is dead, answers
/// `Moved` to late writers, and can never be created again (G3).
pub async fn cycle_moves_the_record_and_kills_the_old_id<S: SessionStore>(store: S) {
    let now = now();
    let original = record(now, HOUR, Some("alice"));
    let old = create(&store, &original).await;
    let new = sibling(&store, &old);
    let restarted = now.saturating_add(ms(10));
    let change = CycleChange {
        patch: Patch {
            changes: vec![set("k", json!("v"))],
            ..Patch::default()
        },
        created_at: Some(restarted),
        ..cycle_change(now)
    };
    assert_eq!(
        store.cycle(&old, &new, &change, now).await.expect("cycle"),
        WriteOutcome::Done
    );
    assert!(store.load(&old, now).await.expect("load").is_none());
    let moved = store
        .load(&new, now)
        .await
        .expect("load")
        .expect("moved record");
    assert_eq!(data(&moved), json!({"n": 1, "k": "v"}));
    assert_eq!(moved.handle, original.handle, "a device keeps its handle");
    assert_eq!(moved.created_at, restarted);
    assert_eq!(moved.user, original.user);

    let late = Patch {
        changes: vec![set("late", json!(true))],
        ..Patch::default()
    };
    assert_eq!(
        store.apply(&old, &late, now).await.expect("apply"),
        WriteOutcome::Moved
    );
    let after_marker = now.saturating_add(Duration::from_secs(121));
    assert_eq!(
        store.apply(&old, &late, after_marker).await.expect("apply"),
        WriteOutcome::Gone
    );
    assert_eq!(
        store
            .create(&old, &record(now, HOUR, None), None)
            .await
            .expect("create"),
        WriteOutcome::Exists,
        "an old id never becomes valid again"
    );
    assert!(store.load(&old, now).await.expect("load").is_none());
    let listed = store.list_user("alice", now).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].handle, original.handle);
    assert_eq!(store.user_index_len("alice").await.expect("index"), 1);
}

/// A cycle into a taken digest, or from a missing one, changes nothing.
pub async fn cycle_refuses_taken_or_missing_ids<S: SessionStore>(store: S) {
    let now = now();
    let a = create(&store, &record(now, HOUR, Some("alice"))).await;
    let b = create_beside(&store, &a, record(now, HOUR, None)).await;
    let change = CycleChange {
        patch: Patch {
            changes: vec![set("x", json!(1))],
            ..Patch::default()
        },
        ..cycle_change(now)
    };
    assert_eq!(
        store.cycle(&a, &b, &change, now).await.expect("cycle"),
        WriteOutcome::Exists
    );
    assert_eq!(
        data(&store.load(&a, now).await.expect("load").expect("a")),
        json!({"n": 1})
    );
    assert_eq!(
        data(&store.load(&b, now).await.expect("load").expect("b")),
        json!({"n": 1})
    );

    let target = sibling(&store, &a);
    let missing = sibling(&store, &a);
    assert_eq!(
        store
            .cycle(&missing, &target, &change, now)
            .await
            .expect("cycle"),
        WriteOutcome::Gone
    );
    assert!(store.load(&target, now).await.expect("load").is_none());
    let expired_at = now.saturating_add(HOUR);
    assert_eq!(
        store
            .cycle(&a, &target, &change, expired_at)
            .await
            .expect("cycle"),
        WriteOutcome::Gone,
        "an expired record cannot be cycled back to life"
    );
    assert!(store.load(&target, now).await.expect("load").is_none());
}

/// A login cycle binds the user, and a later login as someone else moves the session between
/// user indexes in the same step (G4).
pub async fn login_cycle_moves_the_user_index<S: SessionStore>(store: S) {
    let now = now();
    let anonymous = create(&store, &record(now, HOUR, None)).await;
    let bind = |user: &str| UserBinding {
        user_id: user.to_owned(),
        user_agent: Some("agent".into()),
        ip: None,
    };
    let as_alice = sibling(&store, &anonymous);
    let change = CycleChange {
        bind: Some(bind("alice")),
        ..cycle_change(now)
    };
    assert_eq!(
        store
            .cycle(&anonymous, &as_alice, &change, now)
            .await
            .expect("cycle"),
        WriteOutcome::Done
    );
    let listed = store.list_user("alice", now).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user_agent.as_deref(), Some("agent"));

    let as_bob = sibling(&store, &as_alice);
    let change = CycleChange {
        bind: Some(bind("bob")),
        ..cycle_change(now)
    };
    assert_eq!(
        store
            .cycle(&as_alice, &as_bob, &change, now)
            .await
            .expect("cycle"),
        WriteOutcome::Done
    );
    assert!(
        store
            .list_user("alice", now)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(store.user_index_len("alice").await.expect("index"), 0);
    assert_eq!(store.list_user("bob", now).await.expect("list").len(), 1);
    let loaded = store
        .load(&as_bob, now)
        .await
        .expect("load")
        .expect("record");
    assert_eq!(loaded.user_id(), Some("bob"));
}

/// Destroy deletes the record and its index entry together, once (G1, G4).
pub async fn destroy_removes_the_record_and_its_index_entry<S: SessionStore>(store: S) {
    let now = now();
    let digest = create(&store, &record(now, HOUR, Some("alice"))).await;
    assert!(store.destroy(&digest, now).await.expect("destroy"));
    assert!(store.load(&digest, now).await.expect("load").is_none());
    assert!(
        store
            .list_user("alice", now)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(store.user_index_len("alice").await.expect("index"), 0);
    assert!(!store.destroy(&digest, now).await.expect("destroy"));
    assert_eq!(
        store
            .create(&digest, &record(now, HOUR, None), None)
            .await
            .expect("create"),
        WriteOutcome::Done,
        "a destroyed digest holds nothing"
    );
}

/// Concurrent takes hand out each flash message exactly once (G13).
pub async fn take_flashes_returns_each_message_once<S: SessionStore + Clone>(store: S) {
    let now = now();
    let mut with_flashes = record(now, HOUR, None);
    with_flashes.flashes = (0..3)
        .map(|i| Flash {
            level: FlashLevel::Info,
            message: format!("message {i}"),
        })
        .collect();
    let digest = create(&store, &with_flashes).await;
    let barrier = Arc::new(Barrier::new(8));
    let takers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.take_flashes(&digest, now).await.expect("take")
            })
        })
        .collect();
    let mut seen = Vec::new();
    for taker in takers {
        seen.extend(taker.await.expect("task").expect("live record"));
    }
    seen.sort_by(|a, b| a.message.cmp(&b.message));
    assert_eq!(seen, with_flashes.flashes);
    assert_eq!(
        store.take_flashes(&digest, now).await.expect("take"),
        Some(vec![])
    );
    assert_eq!(
        store
            .take_flashes(&fresh_digest(), now)
            .await
            .expect("take"),
        None
    );
}

/// A device list shows the user's live sessions only, oldest first (G4).
pub async fn device_list_shows_only_live_sessions<S: SessionStore>(store: S) {
    let now = now();
    let first = record(now, HOUR, Some("alice"));
    let second = record(now.saturating_add(ms(1)), HOUR, Some("alice"));
    let short = record(now.saturating_add(ms(2)), ms(500), Some("alice"));
    let _ = create(&store, &record(now, HOUR, Some("bob"))).await;
    let _ = create(&store, &first).await;
    let second_digest = create(&store, &second).await;
    let _ = create(&store, &short).await;
    let listed = store.list_user("alice", now).await.expect("list");
    assert_eq!(
        listed.iter().map(|info| info.handle).collect::<Vec<_>>(),
        vec![first.handle, second.handle, short.handle]
    );
    assert!(listed.iter().all(|info| !info.current));
    let later = now.saturating_add(ms(600));
    let listed = store.list_user("alice", later).await.expect("list");
    assert_eq!(listed.len(), 2, "expired sessions are not listed");
    assert!(store.destroy(&second_digest, later).await.expect("destroy"));
    let listed = store.list_user("alice", later).await.expect("list");
    assert_eq!(
        listed.iter().map(|info| info.handle).collect::<Vec<_>>(),
        vec![first.handle]
    );
    assert_eq!(listed[0].user_agent.as_deref(), Some("sessio-testkit/1.0"));
    assert!(
        store
            .list_user("nobody", now)
            .await
            .expect("list")
            .is_empty()
    );
}

/// A handle ends a session only for the user it belongs to.
pub async fn destroy_by_handle_needs_the_owner<S: SessionStore>(store: S) {
    let now = now();
    let alices = record(now, HOUR, Some("alice"));
    let digest = create(&store, &alices).await;
    assert!(
        !store
            .destroy_user_session("bob", &alices.handle, now)
            .await
            .expect("destroy")
    );
    assert!(store.load(&digest, now).await.expect("load").is_some());
    assert!(
        store
            .destroy_user_session("alice", &alices.handle, now)
            .await
            .expect("destroy")
    );
    assert!(store.load(&digest, now).await.expect("load").is_none());
    assert_eq!(store.user_index_len("alice").await.expect("index"), 0);
    assert!(
        !store
            .destroy_user_session("alice", &alices.handle, now)
            .await
            .expect("destroy")
    );
}

/// "Sign out other devices" ends every session of the user but one; "everywhere" ends all
/// (G4).
pub async fn destroy_user_sessions_keeps_only_the_exception<S: SessionStore>(store: S) {
    let now = now();
    let records: Vec<Record> = (0..4).map(|_| record(now, HOUR, Some("alice"))).collect();
    let mut digests = Vec::new();
    for record in &records {
        digests.push(create(&store, record).await);
    }
    let bob = create(&store, &record(now, HOUR, Some("bob"))).await;
    let kept = &records[2].handle;
    assert_eq!(
        store
            .destroy_user_sessions("alice", Some(kept), now)
            .await
            .expect("destroy"),
        3
    );
    let listed = store.list_user("alice", now).await.expect("list");
    assert_eq!(
        listed.iter().map(|info| info.handle).collect::<Vec<_>>(),
        vec![*kept]
    );
    assert_eq!(store.user_index_len("alice").await.expect("index"), 1);
    assert!(store.load(&digests[0], now).await.expect("load").is_none());
    assert!(store.load(&digests[2], now).await.expect("load").is_some());
    assert_eq!(
        store
            .destroy_user_sessions("alice", None, now)
            .await
            .expect("destroy"),
        1
    );
    assert_eq!(store.user_index_len("alice").await.expect("index"), 0);
    assert!(
        store.load(&bob, now).await.expect("load").is_some(),
        "other users keep theirs"
    );
}

/// With a cap, a login beyond it ends the user's oldest sessions (G4).
pub async fn session_cap_evicts_the_oldest<S: SessionStore>(store: S) {
    let now = now();
    let cap = NonZeroU32::new(3);
    let mut handles = Vec::new();
    for i in 0..5u64 {
        let record = record(now.saturating_add(ms(i)), HOUR, Some("alice"));
        handles.push(record.handle);
        let outcome = store
            .create(&digest_for(&store, &record.handle), &record, cap)
            .await
            .expect("create");
        assert_eq!(outcome, WriteOutcome::Done);
    }
    let listed = store.list_user("alice", now).await.expect("list");
    assert_eq!(
        listed.iter().map(|info| info.handle).collect::<Vec<_>>(),
        handles[2..].to_vec()
    );
    assert_eq!(store.user_index_len("alice").await.expect("index"), 3);

    let anonymous = create(&store, &record(now, HOUR, None)).await;
    let change = CycleChange {
        bind: Some(UserBinding {
            user_id: "alice".into(),
            user_agent: None,
            ip: None,
        }),
        created_at: Some(now.saturating_add(ms(10))),
        max_sessions_per_user: cap,
        ..cycle_change(now)
    };
    let new = sibling(&store, &anonymous);
    assert_eq!(
        store
            .cycle(&anonymous, &new, &change, now)
            .await
            .expect("cycle"),
        WriteOutcome::Done
    );
    let listed = store.list_user("alice", now).await.expect("list");
    assert_eq!(listed.len(), 3);
    assert!(
        !listed.iter().any(|info| info.handle == handles[2]),
        "the oldest went"
    );
    assert!(
        store.load(&new, now).await.expect("load").is_some(),
        "the login stays"
    );
}

/// Count sees live sessions only.
pub async fn count_counts_live_sessions<S: SessionStore>(store: S) {
    let now = now();
    for _ in 0..5 {
        let _ = create(&store, &record(now, HOUR, None)).await;
    }
    for _ in 0..3 {
        let _ = create(&store, &record(now, ms(100), Some("alice"))).await;
    }
    assert_eq!(store.count(now).await.expect("count"), 8);
    assert_eq!(
        store
            .count(now.saturating_add(ms(100)))
            .await
            .expect("count"),
        5
    );
}

/// 10,000 sessions, a random subset of them expired, purged: the live ones remain, and no user
/// index keeps a dead entry (G4, G8).
pub async fn purge_removes_expired_sessions_and_their_index_entries<S: SessionStore>(store: S) {
    const SESSIONS: u64 = 10_000;
    const USERS: u64 = 200;
    let start = now();
    // A fixed xorshift sequence: a random-looking subset, the same on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut live_per_user: BTreeMap<String, u64> = BTreeMap::new();
    let mut live = 0;
    for i in 0..SESSIONS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let expires = state % 10 < 3;
        let user = (i % 4 != 0).then(|| format!("user-{}", i % USERS));
        let ttl = if expires { ms(1_000) } else { HOUR };
        let _ = create(&store, &record(start, ttl, user.as_deref())).await;
        if !expires {
            live += 1;
            if let Some(user) = user {
                *live_per_user.entry(user).or_default() += 1;
            }
        }
    }
    // Real time must pass for stores that expire records natively.
    let wait = start.saturating_add(ms(1_100)).saturating_since(now());
    tokio::time::sleep(wait).await;
    let now = now();
    loop {
        let purged = store.purge_expired(now, 1_000).await.expect("purge");
        if purged < 1_000 {
            break;
        }
    }
    assert_eq!(store.count(now).await.expect("count"), live);
    for i in 0..USERS {
        let user = format!("user-{i}");
        let expected = live_per_user.get(&user).copied().unwrap_or(0);
        let listed = store.list_user(&user, now).await.expect("list");
        assert_eq!(listed.len() as u64, expected, "{user}'s live sessions");
        assert_eq!(
            store.user_index_len(&user).await.expect("index"),
            expected,
            "{user}'s index keeps no dead entries"
        );
    }
}

// --- Through the session handle ---------------------------------------------------------

/// An anonymous visitor that only reads creates nothing, and an unknown id from a client is
/// never adopted (G3, G9).
pub async fn anonymous_reads_create_nothing<S: SessionStore + Clone>(store: S) {
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let mut browser = Browser::new(&sessions);
    let session = browser.begin();
    assert_eq!(session.get::<u32>("n").await.expect("get"), None);
    assert!(session.take_flashes().await.expect("flashes").is_empty());
    let commit = browser.finish(&session, StatusCode::OK).await;
    assert!(commit.set_cookie.is_none());
    assert_eq!(store.count(now()).await.expect("count"), 0);

    let planted = sessio::SessionId::generate()
        .expect("random")
        .expose_cookie_value();
    let mut victim = Browser::with_cookie(&sessions, Some(planted.clone()));
    victim
        .request(|session| async move { session.insert("n", &1).await.expect("insert") })
        .await;
    assert_ne!(
        victim.cookie(),
        Some(planted.as_str()),
        "a client-chosen id is never adopted"
    );
    assert_eq!(store.count(now()).await.expect("count"), 1);
}

/// A: loads. B: destroys. A: saves. Nothing is written back, A is told, and A's response
/// removes the cookie (G2).
pub async fn destroy_during_a_request_is_not_resurrected<S: SessionStore + Clone>(store: S) {
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let mut browser = Browser::new(&sessions);
    login(&mut browser, "alice").await;
    browser
        .request(|session| async move { session.insert("n", &1).await.expect("insert") })
        .await;
    let digest = browser.digest().expect("logged in");

    let slow = browser.begin();
    assert_eq!(slow.get::<u32>("n").await.expect("get"), Some(1));
    slow.insert("n", &2).await.expect("insert");

    let logout = browser.begin();
    logout.logout().await.expect("logout");
    let commit = browser.finish(&logout, StatusCode::SEE_OTHER).await;
    assert!(commit.set_cookie.is_some());

    let mut slow_browser = Browser::with_cookie(&sessions, Some("x".into()));
    let commit = slow_browser.finish(&slow, StatusCode::OK).await;
    assert!(
        matches!(commit.error, Some(SessionError::Ended)),
        "the late save is refused"
    );
    assert_eq!(commit.replace_status, Some(StatusCode::CONFLICT));
    assert_eq!(
        slow_browser.cookie(),
        None,
        "the late response removes the cookie"
    );
    assert!(store.load(&digest, now()).await.expect("load").is_none());
    assert_eq!(store.count(now()).await.expect("count"), 0);
    assert_eq!(store.user_index_len("alice").await.expect("index"), 0);

    // The same from outside any request: an admin ends the session while a request runs.
    login(&mut browser, "alice").await;
    let slow = browser.begin();
    slow.insert("n", &3).await.expect("insert");
    assert_eq!(
        sessions
            .destroy_user_sessions("alice")
            .await
            .expect("revoke")
            .count(),
        Some(1)
    );
    let commit = slow_browser.finish(&slow, StatusCode::OK).await;
    assert!(matches!(commit.error, Some(SessionError::Ended)));
    assert_eq!(store.count(now()).await.expect("count"), 0);
}

/// A request that loaded a session before it expired cannot save it after (G2, G8).
pub async fn expiry_during_a_request_is_not_resurrected<S: SessionStore + Clone>(store: S) {
    let clock = ManualClock::new();
    let sessions = Sessions::builder(store.clone())
        .clock(clock.clone())
        .idle_timeout(Duration::from_secs(60))
        .build()
        .expect("config");
    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move { session.insert("n", &1).await.expect("insert") })
        .await;
    let copy = Browser::with_cookie(&sessions, browser.cookie().map(str::to_owned));
    let slow = browser.begin();
    assert_eq!(slow.get::<u32>("n").await.expect("get"), Some(1));
    slow.insert("n", &2).await.expect("insert");
    clock.advance(Duration::from_secs(61));
    let commit = browser.finish(&slow, StatusCode::OK).await;
    assert!(matches!(commit.error, Some(SessionError::Ended)));
    assert_eq!(
        browser.cookie(),
        None,
        "the late response removes the cookie"
    );
    let replay = copy.begin();
    assert_eq!(replay.get::<u32>("n").await.expect("get"), None);
    assert_eq!(store.count(clock.now()).await.expect("count"), 0);
}

/// A: loads. B: cycles the id. A: saves. A is told its changes were dropped, and A's response
/// leaves the browser's new cookie alone; the new id has B's state only (G3).
pub async fn cycle_during_a_request_drops_the_late_save<S: SessionStore + Clone>(store: S) {
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move { session.insert("n", &1).await.expect("insert") })
        .await;
    let slow = browser.begin();
    assert_eq!(slow.get::<u32>("n").await.expect("get"), Some(1));
    slow.insert("late", &true).await.expect("insert");

    let cycler = browser.begin();
    cycler.cycle_id().await.expect("cycle");
    let _ = browser.finish(&cycler, StatusCode::OK).await;
    let new_cookie = browser.cookie().map(str::to_owned);

    let commit = browser.finish(&slow, StatusCode::OK).await;
    assert!(matches!(commit.error, Some(SessionError::Ended)));
    assert!(
        commit.set_cookie.is_none(),
        "the late response must not clear the new cookie"
    );
    assert_eq!(browser.cookie().map(str::to_owned), new_cookie);
    let check = browser.begin();
    assert_eq!(check.get::<u32>("n").await.expect("get"), Some(1));
    assert_eq!(check.get::<bool>("late").await.expect("get"), None);
}

/// 64 concurrent requests on one session, each setting its own key: all 64 keys persist
/// (G5).
pub async fn concurrent_patches_to_distinct_keys_all_persist<S: SessionStore + Clone>(store: S) {
    const WRITERS: usize = 64;
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move { session.insert("base", &0).await.expect("insert") })
        .await;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let mut browser = browser.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let session = browser.begin();
                assert_eq!(session.get::<u32>("base").await.expect("get"), Some(0));
                // Every writer has loaded the same state before anyone saves.
                barrier.wait().await;
                session
                    .insert(&format!("key-{i}"), &i)
                    .await
                    .expect("insert");
                let commit = browser.finish(&session, StatusCode::OK).await;
                assert!(
                    commit.error.is_none(),
                    "save {i} failed: {:?}",
                    commit.error
                );
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let check = browser.begin();
    let entries = check.entries().await.expect("entries");
    for i in 0..WRITERS {
        assert_eq!(
            entries.get(&format!("key-{i}")),
            Some(&json!(i)),
            "key-{i} lost"
        );
    }
    assert_eq!(entries.len(), WRITERS + 1);
}

/// Login binds the user and moves the session to a new id with its data; the id from before
/// the login is dead (G3, G4).
pub async fn login_cycles_the_id_and_binds_the_user<S: SessionStore + Clone>(store: S) {
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move { session.insert("cart", &[1, 2]).await.expect("insert") })
        .await;
    let before = browser.cookie().expect("cookie").to_owned();
    login(&mut browser, "alice").await;
    assert_ne!(browser.cookie(), Some(before.as_str()));
    let check = browser.begin();
    assert_eq!(check.user_id().await.expect("user"), Some("alice".into()));
    assert_eq!(
        check.get::<Vec<u8>>("cart").await.expect("get"),
        Some(vec![1, 2])
    );
    let devices = check.user_sessions().await.expect("devices");
    assert_eq!(devices.len(), 1);
    assert!(devices[0].current);
    assert_eq!(devices[0].ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));

    let replay = Browser::with_cookie(&sessions, Some(before));
    let replayed = replay.begin();
    assert_eq!(replayed.user_id().await.expect("user"), None);
    assert_eq!(replayed.get::<Vec<u8>>("cart").await.expect("get"), None);
}

/// A flash set before a redirect is shown once, and requests that do not read it leave it
/// alone (G13).
pub async fn flash_is_shown_once_and_survives_other_requests<S: SessionStore + Clone>(store: S) {
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move {
            session
                .flash(FlashLevel::Success, "saved")
                .await
                .expect("flash");
        })
        .await;
    browser
        .request(|session| async move { session.insert("other", &1).await.expect("insert") })
        .await;
    let shown = browser
        .request(|session| async move { session.take_flashes().await.expect("take") })
        .await;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].message, "saved");
    assert_eq!(shown[0].level, FlashLevel::Success);
    let again = browser
        .request(|session| async move { session.take_flashes().await.expect("take") })
        .await;
    assert!(again.is_empty());
}

/// A user signs out one device, all other devices, then everywhere; every ended device's next
/// request is anonymous (G4).
pub async fn devices_can_be_signed_out<S: SessionStore + Clone>(store: S) {
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let mut devices: Vec<Browser> = (0..4).map(|_| Browser::new(&sessions)).collect();
    for device in &mut devices {
        login(device, "alice").await;
    }
    let mut bob = Browser::new(&sessions);
    login(&mut bob, "bob").await;

    let listed = devices[0]
        .request(|session| async move { session.user_sessions().await.expect("list") })
        .await;
    assert_eq!(listed.len(), 4);
    assert_eq!(listed.iter().filter(|info| info.current).count(), 1);
    let victim = listed
        .iter()
        .find(|info| !info.current)
        .expect("another device")
        .handle;
    let ended = devices[0]
        .request(|session| async move { session.destroy_session(&victim).await.expect("end") })
        .await;
    assert!(ended);

    let others = devices[0]
        .request(|session| async move { session.destroy_other_sessions().await.expect("end") })
        .await;
    assert_eq!(others.count(), Some(2));
    for device in &devices[1..] {
        let session = device.begin();
        assert_eq!(
            session.user_id().await.expect("user"),
            None,
            "ended device is anonymous"
        );
    }
    let everywhere = devices[0]
        .request(|session| async move { session.destroy_all_user_sessions().await.expect("end") })
        .await;
    assert_eq!(everywhere.count(), Some(1));
    assert_eq!(
        devices[0].cookie(),
        None,
        "the current device's cookie is removed"
    );
    assert_eq!(store.user_index_len("alice").await.expect("index"), 0);
    let bob_session = bob.begin();
    assert_eq!(
        bob_session.user_id().await.expect("user"),
        Some("bob".into())
    );
}

/// Idle timeout and absolute lifetime together: activity extends the first, never the second;
/// per-session settings override the layer's (G8).
pub async fn idle_and_absolute_expiry_are_enforced<S: SessionStore + Clone>(store: S) {
    let clock = ManualClock::new();
    let sessions = Sessions::builder(store.clone())
        .clock(clock.clone())
        .idle_timeout(Duration::from_secs(600))
        .absolute_lifetime(Duration::from_secs(3600))
        .build()
        .expect("config");
    let mut browser = Browser::new(&sessions);
    browser
        .request(|session| async move { session.insert("n", &1).await.expect("insert") })
        .await;
    for _ in 0..6 {
        clock.advance(Duration::from_secs(540));
        let n = browser
            .request(|session| async move { session.get::<u32>("n").await.expect("get") })
            .await;
        assert_eq!(n, Some(1), "activity keeps the session alive");
    }
    clock.advance(Duration::from_secs(540));
    let n = browser
        .request(|session| async move { session.get::<u32>("n").await.expect("get") })
        .await;
    assert_eq!(n, None, "the absolute lifetime ends an active session");

    let mut idle = Browser::new(&sessions);
    idle.request(|session| async move {
        session.insert("n", &1).await.expect("insert");
        session
            .set_idle_timeout(Duration::from_secs(60))
            .await
            .expect("override");
    })
    .await;
    clock.advance(Duration::from_secs(61));
    let n = idle
        .request(|session| async move { session.get::<u32>("n").await.expect("get") })
        .await;
    assert_eq!(n, None, "a per-session idle timeout applies");
}

/// Shorter settings after a restart apply to sessions written under the old ones (G8).
pub async fn expiry_settings_apply_to_existing_sessions<S: SessionStore + Clone>(store: S) {
    let clock = ManualClock::new();
    let lenient = sessions_with_clock(store.clone(), &clock);
    let mut browser = Browser::new(&lenient);
    browser
        .request(|session| async move { session.insert("n", &1).await.expect("insert") })
        .await;
    let strict = Sessions::builder(store.clone())
        .clock(clock.clone())
        .idle_timeout(Duration::from_secs(60))
        .build()
        .expect("config");
    clock.advance(Duration::from_secs(120));
    let session = Browser::with_cookie(&strict, browser.cookie().map(str::to_owned)).begin();
    assert_eq!(session.get::<u32>("n").await.expect("get"), None);
}

async fn faulty_login(store: &FaultyStore<impl SessionStore + Clone>, user: &str) -> Browser {
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let mut browser = Browser::new(&sessions);
    login(&mut browser, user).await;
    browser
        .request(|session| async move { session.insert("n", &7).await.expect("insert") })
        .await;
    browser
}

/// A cycle whose k-th store call fails, for every k, before or after reaching the store:
/// exactly one of the two ids stays valid, with the data, and the browser holds it unless the
/// error was surfaced (G3, G12).
pub async fn cycle_id_survives_a_fault_at_every_step<S: SessionStore + Clone>(store: S) {
    let store = FaultyStore::new(store);
    let probe = faulty_login(&store, "probe").await;
    let before = store.calls();
    let session = probe.begin();
    session.cycle_id().await.expect("cycle");
    let _ = session.commit(StatusCode::OK).await;
    let steps = store.calls() - before;
    assert!(steps >= 1);

    for fault in [Fault::Before, Fault::After] {
        for k in 1..=steps + 1 {
            let user = format!("cycle-{fault:?}-{k}");
            let mut browser = faulty_login(&store, &user).await;
            let old = browser.digest().expect("cookie");
            store.fail_call(k, fault);
            let session = browser.begin();
            let result = session.cycle_id().await;
            let status = if result.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let _ = browser.finish(&session, status).await;
            store.disarm();
            let inner = store.inner();
            let now = now();
            let live = inner.list_user(&user, now).await.expect("list");
            assert_eq!(
                live.len(),
                1,
                "{fault:?} at call {k}: exactly one id is valid"
            );
            let current = browser.digest().expect("cookie");
            let record = inner.load(&current, now).await.expect("load");
            let record = record.unwrap_or_else(|| {
                panic!("{fault:?} at call {k}: the browser's id must be the valid one ({result:?})")
            });
            assert_eq!(
                data(&record),
                json!({"n": 7}),
                "{fault:?} at call {k}: data kept"
            );
            match result {
                Ok(()) => assert!(
                    inner.load(&old, now).await.expect("load").is_none(),
                    "{fault:?} at call {k}: the old id is dead after a cycle"
                ),
                Err(error) => assert!(error.is_store_error(), "{fault:?} at call {k}: {error}"),
            }
        }
    }
}

/// A destroy whose k-th store call fails, for every k: either the session is gone and the
/// response removes the cookie, or the error is surfaced and the session is intact (G1, G12).
pub async fn destroy_survives_a_fault_at_every_step<S: SessionStore + Clone>(store: S) {
    let store = FaultyStore::new(store);
    let probe = faulty_login(&store, "probe").await;
    let before = store.calls();
    let session = probe.begin();
    session.destroy().await.expect("destroy");
    let steps = store.calls() - before;
    assert!(steps >= 1);

    for fault in [Fault::Before, Fault::After] {
        for k in 1..=steps + 1 {
            let user = format!("destroy-{fault:?}-{k}");
            let mut browser = faulty_login(&store, &user).await;
            let old = browser.digest().expect("cookie");
            store.fail_call(k, fault);
            let session = browser.begin();
            let result = session.destroy().await;
            let commit = browser.finish(&session, StatusCode::OK).await;
            store.disarm();
            let inner = store.inner();
            let now = now();
            let record = inner.load(&old, now).await.expect("load");
            match result {
                Ok(()) => {
                    assert!(record.is_none(), "{fault:?} at call {k}: destroyed");
                    assert!(
                        commit.set_cookie.is_some(),
                        "{fault:?} at call {k}: removal cookie"
                    );
                    assert_eq!(browser.cookie(), None);
                    assert_eq!(inner.user_index_len(&user).await.expect("index"), 0);
                }
                Err(error) => {
                    assert!(error.is_store_error(), "{fault:?} at call {k}: {error}");
                    assert!(
                        record.is_some(),
                        "{fault:?} at call {k}: intact after a surfaced error"
                    );
                    assert_eq!(inner.list_user(&user, now).await.expect("list").len(), 1);
                }
            }
        }
    }
}

/// Every handle of a listing is distinct and none of them works as a cookie (G4, G6).
pub async fn handles_never_work_as_cookies<S: SessionStore + Clone>(store: S) {
    let sessions = Sessions::builder(store.clone()).build().expect("config");
    let mut browsers: Vec<Browser> = (0..3).map(|_| Browser::new(&sessions)).collect();
    for browser in &mut browsers {
        login(browser, "alice").await;
    }
    let listed = sessions.user_sessions("alice").await.expect("list");
    let handles: BTreeSet<String> = listed.iter().map(|info| info.handle.to_string()).collect();
    assert_eq!(handles.len(), 3);
    for handle in handles {
        let attacker = Browser::with_cookie(&sessions, Some(handle));
        let session = attacker.begin();
        assert_eq!(session.user_id().await.expect("user"), None);
    }
}

/// The operator's operations: find a session by handle alone, sessions per user, expired
/// records awaiting purge, and ending every session, each a contract operation.
pub async fn admin_operations_find_count_and_end_everything<S: SessionStore>(store: S) {
    let now = now();
    let later = now.saturating_add(Duration::from_secs(2));
    let mut alice = Vec::new();
    for _ in 0..3 {
        let record = record(now, HOUR, Some("alice"));
        let _ = create(&store, &record).await;
        alice.push(record.handle);
    }
    let short = record(now, ms(1_000), Some("alice"));
    let _ = create(&store, &short).await;
    let _ = create(&store, &record(now, HOUR, Some("bob"))).await;
    for _ in 0..2 {
        let _ = create(&store, &record(now, HOUR, None)).await;
    }
    assert_eq!(
        store.top_users(10, later).await.expect("top"),
        vec![("alice".to_owned(), 3), ("bob".to_owned(), 1)]
    );
    assert_eq!(store.top_users(1, later).await.expect("top").len(), 1);
    assert_eq!(
        store.find_handle(&alice[1], later).await.expect("find"),
        Some("alice".into())
    );
    assert_eq!(
        store.find_handle(&short.handle, later).await.expect("find"),
        None,
        "expired"
    );
    let stranger = SessionHandle::generate().expect("random");
    assert_eq!(
        store.find_handle(&stranger, later).await.expect("find"),
        None
    );
    assert_eq!(store.count_expired(later).await.expect("expired"), 1);
    assert_eq!(store.destroy_all(later).await.expect("destroy all"), 6);
    assert_eq!(store.count(now).await.expect("count"), 0);
    assert!(
        store
            .list_user("alice", now)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(store.user_index_len("alice").await.expect("index"), 0);
}

/// Two visitors each store data, then log in (as alice and bob): returns the four cookie
/// values they held, before and after login, for tests that search a store's raw contents for
/// them (G6).
pub async fn cookies_of_two_logins(sessions: &Sessions) -> Vec<String> {
    let mut cookies = Vec::new();
    for user in ["alice", "bob"] {
        let mut browser = Browser::new(sessions);
        browser
            .request(|session| async move { session.insert("before", &1).await.expect("insert") })
            .await;
        cookies.push(browser.cookie().expect("cookie").to_owned());
        login(&mut browser, user).await;
        cookies.push(browser.cookie().expect("cookie").to_owned());
    }
    cookies
}
