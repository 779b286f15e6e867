//! Private PostgreSQL and Redis servers for tests that must kill and restart their store.
//!
//! The README's test command starts the shared servers; a test that kills its server starts
//! its own here, on a free loopback port in a temporary directory, and stops it on drop.
//! Needs the server binaries: `redis-server`, and PostgreSQL's `initdb` and `postgres` (found
//! next to `initdb` on the `PATH`, or in `SESSIO_PG_BINDIR`). As root, PostgreSQL runs as
//! `nobody`, since it refuses to run as root.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A server a test can kill and bring back.
pub trait ServerControl {
    /// Stops the server abruptly (SIGKILL): no shutdown, no goodbye to clients.
    fn kill(&mut self);
    /// Starts it again on the same port with the same data.
    fn restart(&mut self) -> Result<(), String>;
}

/// A free TCP port on loopback (free at the time of asking).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free port: {error}"))
}

/// A name no other test uses, in this process or another: `name`, the process id and a
/// counter joined by `_`. Valid as a PostgreSQL schema, a Redis key prefix and a file name.
pub fn unique_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{name}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn scratch_dir(kind: &str) -> Result<PathBuf, String> {
    let base = std::env::var_os("SESSIO_TEST_TMP").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(unique_name(&format!("sessio-{kind}")));
    std::fs::create_dir_all(&dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    Ok(dir)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not become ready in {READY_TIMEOUT:?}"))
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut process) = child.take() {
        let _ = process.kill();
        let _ = process.wait();
    }
}

/// A private PostgreSQL server.
pub struct PostgresServer {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    as_nobody: bool,
    process: Option<Child>,
}

fn postgres_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SESSIO_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let initdb = dir.join("initdb");
        if let Ok(real) = std::fs::canonicalize(&initdb)
            && let Some(bindir) = real.parent()
            && bindir.join("postgres").exists()
        {
            return Ok(bindir.to_path_buf());
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            "PostgreSQL binaries not found: install them or set SESSIO_PG_BINDIR".to_owned()
        })?
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(|| {
        "PostgreSQL binaries not found: install them or set SESSIO_PG_BINDIR".to_owned()
    })
}

impl PostgresServer {
    /// Initializes a cluster in a fresh directory and starts it.
    pub fn start() -> Result<Self, String> {
        let dir = scratch_dir("postgres")?;
        let as_nobody = is_root();
        if as_nobody {
            let status = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(&dir)
                .status()
                .map_err(|error| format!("chown: {error}"))?;
            if !status.success() {
                return Err("could not hand the data directory to nobody".into());
            }
        }
        let mut server = Self {
            dir,
            bindir: postgres_bindir()?,
            port: free_port()?,
            as_nobody,
            process: None,
        };
        let output = server
            .command("initdb")
            .arg("-D")
            .arg(server.dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|error| format!("initdb: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        server.restart()?;
        Ok(server)
    }

    fn command(&self, program: &str) -> Command {
        let binary = self.bindir.join(program);
        if self.as_nobody {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    /// A URL to the `postgres` database as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's data and log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ready(&self) -> bool {
        Command::new(self.bindir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl ServerControl for PostgresServer {
    fn kill(&mut self) {
        kill_child(&mut self.process);
    }

    fn restart(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join("postgres.log"))
            .map_err(|error| format!("postgres log: {error}"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // After a SIGKILL, the killed server's backends may hold its shared memory for a
            // moment; a start that fails on that is retried.
            let mut process = self
                .command("postgres")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-p", &self.port.to_string(), "-k"])
                .arg(&self.dir)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.try_clone().map_err(|error| error.to_string())?)
                .spawn()
                .map_err(|error| format!("postgres: {error}"))?;
            while Instant::now() < deadline {
                if self.ready() {
                    self.process = Some(process);
                    return Ok(());
                }
                if let Ok(Some(_)) = process.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if Instant::now() >= deadline {
                let _ = process.kill();
                return Err(format!(
                    "postgres did not start; see {}",
                    self.dir.join("postgres.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Redis server that fsyncs every write to its append-only file, so that a killed
/// and restarted server still holds every acknowledged write.
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    process: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port.
    pub fn start() -> Result<Self, String> {
        let mut server = Self {
            dir: scratch_dir("redis")?,
            port: free_port()?,
            process: None,
        };
        server.restart()?;
        Ok(server)
    }

    /// A `redis://` URL to it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 5];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG"
    }
}

impl ServerControl for RedisServer {
    fn kill(&mut self) {
        kill_child(&mut self.process);
    }

    fn restart(&mut self) -> Result<(), String> {
        let process = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                format!("redis-server: {error} (install it: apt-get install redis-server)")
            })?;
        self.process = Some(process);
        wait_until("redis-server", || self.ready())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
