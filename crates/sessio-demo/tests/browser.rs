//! End to end in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, which the test command installs): two independent browser profiles log
//! in as alice, the first sees two devices and signs the second out, the second's reload
//! shows the login form, and a flash message appears exactly once. Saves a screenshot of the
//! devices page to `docs/demo.png`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::{Value, json};
use sessio::Sessions;
use sessio_testkit::TestClient;
use sessio_testkit::http::TestServer;
use sessio_testkit::servers::free_port;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const PATIENCE: Duration = Duration::from_secs(15);

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A chromedriver process, stopped on drop.
struct Driver {
    process: Child,
    client: TestClient,
    browser: PathBuf,
    profiles: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.profiles);
    }
}

/// One browser window with its own profile.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl Driver {
    async fn start() -> Result<Self, String> {
        let chromedriver = find_binary(&["chromedriver"])
            .ok_or("chromedriver not found (apt-get install chromium-driver)")?;
        let browser = find_binary(&["chromium", "chromium-browser", "google-chrome"])
            .ok_or("chromium not found (apt-get install chromium)")?;
        let port = free_port()?;
        let process = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("chromedriver: {error}"))?;
        let base =
            std::env::var_os("SESSIO_TEST_TMP").map_or_else(std::env::temp_dir, PathBuf::from);
        let profiles = base.join(format!("sessio-browser-{}", std::process::id()));
        std::fs::create_dir_all(&profiles).map_err(|error| error.to_string())?;
        let driver = Self {
            process,
            client: TestClient::new(SocketAddr::from(([127, 0, 0, 1], port))),
            browser,
            profiles,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                let status = driver.client.send(Method::GET, "/status", None, None).await;
                if status.json()["value"]["ready"] == json!(true) {
                    return Ok(driver);
                }
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let response = self.client.send(method, path, None, body).await;
        let value = response.json();
        assert_eq!(response.status, StatusCode::OK, "WebDriver {path}: {value}");
        value["value"].clone()
    }

    async fn open(&self, profile: &str) -> Browser<'_> {
        let profile = self.profiles.join(profile);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.browser,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1100,820",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let session = self
            .call(Method::POST, "/session", Some(capabilities))
            .await;
        let session = session["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        Browser {
            driver: self,
            session,
        }
    }
}

impl Browser<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.driver.call(method, &path, body).await
    }

    async fn go(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn reload(&self) {
        self.call(Method::POST, "/refresh", Some(json!({}))).await;
    }

    async fn find(&self, css: &str) -> String {
        let element = self
            .call(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        element[ELEMENT].as_str().expect("element id").to_owned()
    }

    async fn count(&self, css: &str) -> usize {
        let elements = self
            .call(
                Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        elements.as_array().map_or(0, Vec::len)
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn source(&self) -> String {
        self.call(Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the page contains `text` (page loads after a click are asynchronous).
    async fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {text:?}:\n{source}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn log_in(&self, base: &str) {
        self.go(base).await;
        self.type_into("input[name=username]", "alice").await;
        self.type_into("input[name=password]", "wonderland").await;
        self.click("form[action='/login'] button").await;
        self.wait_for("Hello, alice").await;
    }

    async fn screenshot(&self, path: &Path) {
        let png = self.call(Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }

    async fn close(self) {
        self.call(Method::DELETE, "", None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_one_signs_the_other_out() {
    let driver = match Driver::start().await {
        Ok(driver) => driver,
        Err(reason) => {
            let _: Option<()> =
                sessio_testkit::server_missing("Chromium with chromedriver", reason);
            return;
        }
    };
    let sessions = Sessions::builder(sessio::MemoryStore::new())
        .build()
        .expect("config");
    let users = "alice:wonderland,bob:builder".parse().expect("users");
    let server = TestServer::start(sessio_demo::app(&sessions, users)).await;
    let base = format!("http://127.0.0.1:{}/", server.addr.port());

    let first = driver.open("first").await;
    let second = driver.open("second").await;
    first.log_in(&base).await;
    let page = first.source().await;
    assert!(
        page.contains("Welcome, alice."),
        "a flash after the login redirect"
    );
    second.log_in(&base).await;

    first.reload().await;
    first.wait_for("Your devices").await;
    first.type_into("input[name=key]", "theme").await;
    first.type_into("input[name=value]", "\"dark\"").await;
    first.click("form[action='/data'] button").await;
    let page = first.wait_for("theme").await;
    assert!(
        !page.contains("Welcome, alice."),
        "the flash is shown once only"
    );
    assert_eq!(first.count("td .current").await, 1);
    assert_eq!(
        first
            .count("form[action^='/sessions/'][action$='/revoke']")
            .await,
        1
    );
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/demo.png");
    first.screenshot(&shot).await;

    first
        .click("form[action^='/sessions/'][action$='/revoke'] button")
        .await;
    first.wait_for("Signed out that device.").await;
    assert_eq!(
        first
            .count("form[action^='/sessions/'][action$='/revoke']")
            .await,
        0
    );

    second.reload().await;
    let page = second.wait_for("action=\"/login\"").await;
    assert!(
        !page.contains("Hello, alice"),
        "the signed-out browser is anonymous"
    );
    assert_eq!(
        sessions.user_sessions("alice").await.expect("list").len(),
        1
    );

    first.close().await;
    second.close().await;
}
