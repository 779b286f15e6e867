//! A store outage in the middle of requests through the layer (G12).

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use sessio::{SessionStore, Sessions};

use crate::client::TestClient;
use crate::http::{TestServer, app};
use crate::servers::ServerControl;

const CLIENTS: usize = 8;

async fn put(client: TestClient, cookie: &str, n: u64) -> StatusCode {
    client
        .send(Method::PUT, "/data/n", Some(cookie), Some(json!(n)))
        .await
        .status
}

async fn stored(client: TestClient, cookie: &str) -> Option<u64> {
    let response = client
        .send(Method::GET, "/data/n", Some(cookie), None)
        .await;
    (response.status == StatusCode::OK)
        .then(|| response.json().as_u64())
        .flatten()
}

/// Kills the store's server while eight clients write through the layer, then restarts it:
/// - every write answered during the outage is `204` (and persisted) or `503`, never another
///   status and never a success that was lost;
/// - writes while the server is down get `503`;
/// - after the restart, the same app (no restart) serves every client again, with every
///   acknowledged write in place.
pub async fn outage_through_the_layer<S, C>(store: S, server: &mut C)
where
    S: SessionStore + Clone,
    C: ServerControl,
{
    let sessions = Sessions::builder(store).build().expect("config");
    let http = TestServer::start(app(&sessions)).await;
    let client = http.client();
    let name = sessions.cookie_name().to_owned();
    let mut cookies = Vec::new();
    for _ in 0..CLIENTS {
        let response = client
            .send(Method::PUT, "/data/n", None, Some(json!(0)))
            .await;
        assert_eq!(response.status, StatusCode::NO_CONTENT);
        let set = response.set_cookies();
        let value = crate::browser::parse_set_cookie(&name, &set[0]);
        let Some(crate::browser::CookieUpdate::Set(value)) = value else {
            panic!("no session cookie: {set:?}");
        };
        cookies.push(format!("{name}={value}"));
    }

    // Writers run while the server dies under them.
    let mut acknowledged = [0u64; CLIENTS];
    let writers: Vec<_> = cookies
        .iter()
        .cloned()
        .map(|cookie| {
            tokio::spawn(async move {
                let mut results = Vec::new();
                for n in 1..=40u64 {
                    let status = put(client, &cookie, n).await;
                    results.push((n, status));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                results
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    server.kill();
    let mut outcomes = Vec::new();
    for (i, writer) in writers.into_iter().enumerate() {
        for (n, status) in writer.await.expect("writer") {
            assert!(
                status == StatusCode::NO_CONTENT || status == StatusCode::SERVICE_UNAVAILABLE,
                "client {i}, write {n}: {status} during an outage"
            );
            if status == StatusCode::NO_CONTENT {
                acknowledged[i] = acknowledged[i].max(n);
            }
            outcomes.push(status);
        }
    }
    assert!(
        outcomes.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "the outage was noticed"
    );

    // Down: every write is refused, none pretends to succeed.
    for cookie in &cookies {
        assert_eq!(
            put(client, cookie, 1_000).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    server.restart().expect("restart the store server");
    for (i, cookie) in cookies.iter().enumerate() {
        let mut recovered = None;
        for _ in 0..50 {
            if let Some(n) = stored(client, cookie).await {
                recovered = Some(n);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let n = recovered.unwrap_or_else(|| panic!("client {i}: no service after the restart"));
        assert!(
            n >= acknowledged[i],
            "client {i}: write {} was acknowledged but the store holds {n}",
            acknowledged[i]
        );
        assert_ne!(n, 1_000, "client {i}: a refused write was stored");
        assert_eq!(put(client, cookie, 2_000).await, StatusCode::NO_CONTENT);
        assert_eq!(stored(client, cookie).await, Some(2_000));
    }
}
