//! Micro-benchmarks of the per-request hot paths:
//! `cargo bench -p sessio-bench --bench hot_paths`.
//!
//! The `layer/*` group runs whole requests through the benchmark server's routers in process
//! (no sockets): bare, sessio's memory store and tower-sessions' memory store, side by side,
//! so a change to the per-request path shows without the kernel's TCP work and its noise.

use std::hint::black_box;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http::StatusCode;
use http::header::SET_COOKIE;
use http::header::{COOKIE, HeaderMap, HeaderValue};
use serde_json::value::to_raw_value;
use sessio::{
    Clock, CookieKey, KeyRing, MemoryStore, Patch, SessionId, SessionStore, Sessions, SystemClock,
};
use sessio_testkit::Browser;
use sessio_testkit::cases::{fresh_digest, record};
use tower::ServiceExt;

fn ids(c: &mut Criterion) {
    let sessions = Sessions::builder(MemoryStore::new())
        .build()
        .expect("config");
    let peppered = Sessions::builder(MemoryStore::new())
        .pepper(vec![7u8; 32])
        .build()
        .expect("config");
    let id = SessionId::generate().expect("random");
    c.bench_function("id/generate", |b| b.iter(SessionId::generate));
    c.bench_function("id/digest_sha256", |b| {
        b.iter(|| sessions.digest_of(black_box(&id)))
    });
    c.bench_function("id/digest_hmac", |b| {
        b.iter(|| peppered.digest_of(black_box(&id)))
    });
}

fn cookies(c: &mut Criterion) {
    let sessions = Sessions::builder(MemoryStore::new())
        .build()
        .expect("config");
    let id = SessionId::generate().expect("random");
    let value = id.expose_cookie_value();
    let mut headers = HeaderMap::new();
    let header = format!("theme=dark; _ga=GA1.2.3; __Host-sessio={value}; lang=en");
    headers.insert(COOKIE, HeaderValue::try_from(header).expect("header"));
    c.bench_function("cookie/parse_id", |b| {
        b.iter(|| SessionId::parse(black_box(&value)))
    });
    c.bench_function("cookie/encode_id", |b| {
        b.iter(|| black_box(&id).expose_cookie_value())
    });
    c.bench_function("cookie/request_session_from_headers", |b| {
        b.iter(|| sessions.session_for(black_box(&headers)))
    });
}

fn memory_store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = MemoryStore::new();
    let now = SystemClock.now();
    let digest = fresh_digest();
    runtime
        .block_on(store.create(&digest, &record(now, Duration::from_secs(3600), None), None))
        .expect("create");
    let patch = Patch {
        changes: vec![("n".into(), Some(to_raw_value(&42).expect("raw")))],
        ..Patch::default()
    };
    c.bench_function("memory/apply_patch", |b| {
        b.to_async(&runtime)
            .iter(|| async { store.apply(black_box(&digest), &patch, now).await })
    });
    c.bench_function("memory/load", |b| {
        b.to_async(&runtime)
            .iter(|| async { store.load(black_box(&digest), now).await })
    });
}

fn cookie_mode(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let key = CookieKey::new("bench", &[42u8; 32]).expect("key");
    let sessions = Sessions::cookie_builder(KeyRing::single(key))
        .build()
        .expect("config");
    let mut seeded = Browser::new(&sessions);
    let sealed = runtime.block_on(async {
        let session = seeded.begin();
        session.insert("n", &1).await.expect("insert");
        let _ = seeded.finish(&session, StatusCode::OK).await;
        seeded.cookie().expect("cookie").to_owned()
    });
    c.bench_function("cookie_mode/seal_new_session", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut browser = Browser::new(&sessions);
            let session = browser.begin();
            session.insert("n", &1).await.expect("insert");
            browser.finish(&session, StatusCode::OK).await
        })
    });
    c.bench_function("cookie_mode/open_and_read", |b| {
        b.to_async(&runtime).iter(|| async {
            let browser = Browser::with_cookie(&sessions, Some(sealed.clone()));
            browser.begin().get::<i64>("n").await.expect("get")
        })
    });
}

/// Sends `GET route` with `cookie` through `app` and returns the response's `Set-Cookie`
/// pair (`name=value`), if any.
async fn request(app: &Router, route: &str, cookie: Option<&str>) -> Option<String> {
    let mut request = Request::builder().uri(route);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert!(
        response.status().is_success(),
        "{route}: {}",
        response.status()
    );
    let set_cookie = response.headers().get(SET_COOKIE)?.to_str().ok()?;
    set_cookie.split(';').next().map(str::to_owned)
}

fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // Room for every session the /new runs create: refusals are not what is measured.
    let sessio_store = MemoryStore::builder().capacity(50_000_000).build();
    let sessions = Sessions::builder(sessio_store).build().expect("config");
    let apps = [
        ("bare", sessio_bench::bare_routes()),
        (
            "sessio-memory",
            sessio_bench::sessio_routes().layer(sessions.layer()),
        ),
        (
            "tower-memory",
            sessio_bench::tower_routes().layer(
                tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
                    .with_secure(false),
            ),
        ),
    ];
    let mut group = c.benchmark_group("layer");
    group.measurement_time(Duration::from_secs(3));
    for route in ["/read", "/write", "/new"] {
        for (mode, app) in &apps {
            let cookie = match route {
                "/new" => None,
                _ => runtime.block_on(request(app, "/new", None)),
            };
            group.bench_function(format!("{mode}{route}"), |b| {
                b.to_async(&runtime)
                    .iter(|| request(app, route, cookie.as_deref()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, ids, cookies, memory_store, cookie_mode, layer);
criterion_main!(benches);
