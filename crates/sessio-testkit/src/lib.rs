//! The sessio store conformance suite.
//!
//! One macro runs every guarantee of the store contract that can be checked at store level
//! against your store, each as its own named test: store operations one by one, interleaved
//! requests (a destroy or a cycle while another request holds the session), 64 concurrent
//! patches, a 10,000-session purge, injected faults at every step of `cycle_id` and
//! `destroy`, and HTTP tests through the layer on a real loopback server.
//!
//! ```no_run
//! // tests/conformance.rs of a store crate; needs `tokio` as a dev-dependency.
//! // The memory store stands in for yours, e.g. `MyStore::connect(url).await`.
//! sessio_testkit::store_conformance!(async { Some(sessio::MemoryStore::default()) });
//! # fn main() {}
//! ```
//!
//! The expression runs once per test and must give a fresh, empty store (a new key prefix, a
//! new schema), or `None` to skip when the store's server is missing, which
//! [`server_missing`] turns into a failure under `CI=true`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod browser;
pub mod cases;
mod client;
mod clock;
mod faulty;
pub mod http;
pub mod outage;
pub mod servers;

pub use crate::browser::{Browser, CookieUpdate, parse_set_cookie};
pub use crate::client::{Agent, TestClient, TestResponse};
pub use crate::clock::ManualClock;
pub use crate::faulty::{Fault, FaultyStore};

/// Reports a missing store server: panics under `CI=true` (where the test command must have
/// started it), otherwise prints why the test is skipped and returns `None`.
pub fn server_missing<T>(store: &str, reason: impl std::fmt::Display) -> Option<T> {
    if std::env::var("CI").is_ok_and(|value| value == "true" || value == "1") {
        panic!("{store} is required under CI=true but unavailable: {reason}");
    }
    eprintln!("skipping: {store} unavailable ({reason}); the README's test command starts it");
    None
}

/// Defines one `#[tokio::test]` per conformance case, each on a fresh store from `$make`, an
/// expression evaluating to a future of `Option<S>` where `S: SessionStore + Clone`.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::__conformance_cases! { $make;
            cases::load_returns_what_create_stored,
            cases::create_refuses_an_existing_digest,
            cases::load_hides_expired_records,
            cases::apply_is_refused_without_a_live_record,
            cases::apply_changes_only_the_named_keys,
            cases::cycle_moves_the_record_and_kills_the_old_id,
            cases::cycle_refuses_taken_or_missing_ids,
            cases::login_cycle_moves_the_user_index,
            cases::destroy_removes_the_record_and_its_index_entry,
            cases::take_flashes_returns_each_message_once,
            cases::device_list_shows_only_live_sessions,
            cases::destroy_by_handle_needs_the_owner,
            cases::destroy_user_sessions_keeps_only_the_exception,
            cases::session_cap_evicts_the_oldest,
            cases::count_counts_live_sessions,
            cases::purge_removes_expired_sessions_and_their_index_entries,
            cases::anonymous_reads_create_nothing,
            cases::destroy_during_a_request_is_not_resurrected,
            cases::expiry_during_a_request_is_not_resurrected,
            cases::cycle_during_a_request_drops_the_late_save,
            cases::concurrent_patches_to_distinct_keys_all_persist,
            cases::login_cycles_the_id_and_binds_the_user,
            cases::flash_is_shown_once_and_survives_other_requests,
            cases::devices_can_be_signed_out,
            cases::idle_and_absolute_expiry_are_enforced,
            cases::expiry_settings_apply_to_existing_sessions,
            cases::cycle_id_survives_a_fault_at_every_step,
            cases::destroy_survives_a_fault_at_every_step,
            cases::handles_never_work_as_cookies,
            cases::admin_operations_find_count_and_end_everything,
            http::http_cookie_has_secure_attributes,
            http::http_logout_removes_the_cookie_and_the_record,
            http::http_replay_after_login_is_anonymous,
            http::http_bad_cookies_are_anonymous,
            http::http_untouched_requests_cost_nothing,
            http::http_flash_is_shown_once,
            http::http_store_outage_gives_503_then_recovers,
            http::http_slow_request_cannot_resurrect_a_logout,
            http::http_server_error_discards_pending_changes,
            http::http_devices_can_be_listed_and_ended,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($make:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(store) = ($make).await else { return };
                $crate::$module::$case(store).await;
            }
        )*
    };
}
