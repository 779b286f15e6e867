//! A minimal HTTP/1.1 client for tests against a real listening server: one connection per
//! request, headers kept exactly as the server sent them.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::browser::{CookieUpdate, parse_set_cookie};

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// The status.
    pub status: StatusCode,
    /// Every header.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl TestResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", self.text()))
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|value| value.to_str().expect("Set-Cookie is text").to_owned())
            .collect()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("header is text").to_owned())
    }
}

/// Sends requests to one server.
#[derive(Debug, Clone, Copy)]
pub struct TestClient {
    addr: SocketAddr,
}

impl TestClient {
    /// A client for the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// Sends a request with the given `Cookie` header (if any) and JSON body (if any).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> TestResponse {
        let mut headers = Vec::new();
        if let Some(cookie) = cookie {
            headers.push(("cookie", cookie));
        }
        let body = match body {
            Some(json) => {
                headers.push(("content-type", "application/json"));
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        self.send_raw(method, path, &headers, body).await
    }

    /// Sends a request with exactly these headers (plus `Host` and `User-Agent` unless
    /// given) and body.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the test server");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path);
        let has = |name: &str| {
            headers
                .iter()
                .any(|(key, _)| key.eq_ignore_ascii_case(name))
        };
        if !has("host") {
            request = request.header("host", self.addr.to_string());
        }
        if !has("user-agent") {
            request = request.header("user-agent", "sessio-testkit");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).expect("valid request");
        let response = sender.send_request(request).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// A client with a one-cookie jar, like a browser for one site: it sends the session cookie
/// it holds and keeps what `Set-Cookie` tells it.
#[derive(Debug, Clone)]
pub struct Agent {
    client: TestClient,
    name: String,
    cookie: Option<String>,
}

impl Agent {
    /// An agent with an empty jar for the cookie called `cookie_name`.
    pub fn new(client: TestClient, cookie_name: &str) -> Self {
        Self {
            client,
            name: cookie_name.to_owned(),
            cookie: None,
        }
    }

    /// The session cookie value held.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// Replaces the held cookie value (a copied or planted cookie).
    pub fn set_cookie(&mut self, value: Option<String>) {
        self.cookie = value;
    }

    /// The `Cookie` header this agent sends.
    pub fn cookie_header(&self) -> Option<String> {
        self.cookie
            .as_ref()
            .map(|value| format!("{}={value}", self.name))
    }

    /// Sends a request with the agent's cookie and a JSON body (if any).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> TestResponse {
        let response = self
            .client
            .send(method, path, self.cookie_header().as_deref(), body)
            .await;
        self.keep(&response);
        response
    }

    /// Sends a request with the agent's cookie plus these headers and body.
    pub async fn send_raw(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let cookie = self.cookie_header();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(cookie) = &cookie {
            all.push(("cookie", cookie));
        }
        let response = self.client.send_raw(method, path, &all, body).await;
        self.keep(&response);
        response
    }

    fn keep(&mut self, response: &TestResponse) {
        for header in response.set_cookies() {
            match parse_set_cookie(&self.name, &header) {
                Some(CookieUpdate::Set(value)) => self.cookie = Some(value),
                Some(CookieUpdate::Removed) => self.cookie = None,
                None => {}
            }
        }
    }
}
