//! The benchmark runner (`bench/run.sh` calls it): starts each server mode pinned to core 0,
//! drives it with `wrk -t1 -c32` pinned to core 1, and prints the table of medians, latencies,
//! memory per session, and the ratios that the targets are stated in.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use clap::Parser;

/// Runs the benchmark matrix.
#[derive(Debug, Parser)]
struct Args {
    /// One second per cell and one repetition: checks that the harness works, measures
    /// nothing worth reading.
    #[arg(long)]
    smoke: bool,
    /// Seconds per cell.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Repetitions per cell (the median is reported).
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// Modes to run, comma-separated (default: all).
    #[arg(long)]
    modes: Option<String>,
    /// The benchmark server binary.
    #[arg(long)]
    server: PathBuf,
    /// The directory of the express-session server (`bench/express`), with `node_modules`.
    #[arg(long)]
    express: Option<PathBuf>,
    /// Redis URL for the redis modes.
    #[arg(long)]
    redis: String,
    /// PostgreSQL URL for the postgres modes.
    #[arg(long)]
    postgres: String,
    /// Where SQLite files go.
    #[arg(long, default_value = "/tmp")]
    scratch: PathBuf,
    /// Also write the markdown tables here.
    #[arg(long)]
    out: Option<PathBuf>,
}

const ALL_MODES: &[&str] = &[
    "bare",
    "sessio-memory",
    "tower-memory",
    "sessio-cookie",
    "sessio-sqlite",
    "tower-sqlite",
    "floor-sqlite",
    "sessio-redis",
    "tower-redis",
    "floor-redis",
    "sessio-postgres",
    "tower-postgres",
    "floor-postgres",
    "express-memory",
    "express-redis",
];
const ROUTES: [&str; 3] = ["read", "write", "new"];

/// One measured cell: a mode on a route.
#[derive(Debug, Clone, Default)]
struct Cell {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Bytes of server RSS per session created (`/new` only).
    rss_per_session: Option<f64>,
    /// Largest SQLite WAL file seen while the cell ran (SQLite modes).
    max_wal_bytes: Option<u64>,
    errors: u64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or(18_080)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// A started server, stopped on drop.
struct Server {
    child: Child,
    address: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(mode: &str, args: &Args) -> Result<Server, String> {
    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new("taskset");
    command.args(["-c", "0"]);
    if let Some(express_mode) = mode.strip_prefix("express-") {
        let dir = args
            .express
            .as_ref()
            .ok_or("express modes need --express")?;
        let dir =
            std::fs::canonicalize(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        command
            .arg("node")
            .arg(dir.join("server.js"))
            .args([
                "--mode",
                express_mode,
                "--port",
                &port.to_string(),
                "--redis",
                &args.redis,
            ])
            .current_dir(dir);
    } else {
        let sqlite = args.scratch.join(format!("bench-{mode}.db"));
        command
            .arg(&args.server)
            .args(["--mode", mode, "--listen", &address.to_string()])
            .args(["--redis", &args.redis, "--postgres", &args.postgres])
            .arg("--sqlite")
            .arg(sqlite);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|error| format!("{mode}: cannot start: {error}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(line)) if line.starts_with("ready") => {}
        other => {
            let _ = child.kill();
            return Err(format!("{mode}: did not start: {other:?}"));
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Server { child, address })
}

/// `GET /new` on a fresh connection; the first `Set-Cookie` as `name=value`, or `None` for
/// a server without sessions.
fn new_session(address: SocketAddr) -> Result<Option<String>, String> {
    let mut stream = TcpStream::connect(address).map_err(|error| error.to_string())?;
    stream
        .write_all(b"GET /new HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|error| error.to_string())?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "/new failed: {}",
            response.lines().next().unwrap_or("")
        ));
    }
    Ok(response.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("set-cookie").then(|| {
            value
                .trim()
                .split(';')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    }))
}

fn milliseconds(value: &str) -> Option<f64> {
    let (number, factor) = if let Some(number) = value.strip_suffix("us") {
        (number, 0.001)
    } else if let Some(number) = value.strip_suffix("ms") {
        (number, 1.0)
    } else if let Some(number) = value.strip_suffix('s') {
        (number, 1000.0)
    } else {
        (value, 1.0)
    };
    number.parse::<f64>().ok().map(|number| number * factor)
}

struct WrkRun {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

fn wrk(
    address: SocketAddr,
    route: &str,
    cookie: Option<&str>,
    seconds: u64,
) -> Result<WrkRun, String> {
    let mut command = Command::new("taskset");
    command
        .args(["-c", "1", "wrk", "-t1", "-c32", "--latency"])
        .arg(format!("-d{seconds}s"));
    if let Some(cookie) = cookie {
        command.arg("-H").arg(format!("Cookie: {cookie}"));
    }
    let output = command
        .arg(format!("http://{address}/{route}"))
        .output()
        .map_err(|error| format!("wrk: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut run = WrkRun {
        requests_per_second: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        errors: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => run.requests_per_second = value.parse().unwrap_or(0.0),
            ["50%", value] => run.p50_ms = milliseconds(value).unwrap_or(f64::NAN),
            ["99%", value] => run.p99_ms = milliseconds(value).unwrap_or(f64::NAN),
            [count, "requests", "in", ..] => run.requests = count.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                run.errors += count.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", ..] => run.errors += 1,
            _ => {}
        }
    }
    if run.requests == 0 {
        return Err(format!("wrk measured nothing: {text}"));
    }
    Ok(run)
}

/// Polls a WAL file's size every 50 ms and keeps the largest.
struct WalWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl WalWatch {
    fn start(path: PathBuf) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut largest = 0;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(metadata) = std::fs::metadata(&path) {
                    largest = largest.max(metadata.len());
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            largest
        });
        Self { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn measure(mode: &str, args: &Args) -> Result<BTreeMap<&'static str, Cell>, String> {
    let (seconds, repetitions, warm_up) = if args.smoke {
        (1, 1, 0)
    } else {
        (args.duration, args.repetitions.max(1), 3)
    };
    let server = start(mode, args)?;
    let mut cells = BTreeMap::new();
    for route in ROUTES {
        let cookie = if route == "new" {
            None
        } else {
            new_session(server.address)?
        };
        if warm_up > 0 {
            wrk(server.address, route, cookie.as_deref(), warm_up)?;
        }
        let before = rss_kib(server.child.id());
        let wal = mode
            .ends_with("sqlite")
            .then(|| WalWatch::start(args.scratch.join(format!("bench-{mode}.db-wal"))));
        let mut runs = Vec::new();
        for _ in 0..repetitions {
            runs.push(wrk(server.address, route, cookie.as_deref(), seconds)?);
        }
        let max_wal_bytes = wal.map(WalWatch::stop);
        let after = rss_kib(server.child.id());
        let created: u64 = runs.iter().map(|run| run.requests).sum();
        let mut rates: Vec<f64> = runs.iter().map(|run| run.requests_per_second).collect();
        let mut p50s: Vec<f64> = runs.iter().map(|run| run.p50_ms).collect();
        let mut p99s: Vec<f64> = runs.iter().map(|run| run.p99_ms).collect();
        let rss_per_session = match (route, before, after) {
            ("new", Some(before), Some(after)) if created > 0 => {
                Some(after.saturating_sub(before) as f64 * 1024.0 / created as f64)
            }
            _ => None,
        };
        cells.insert(
            route,
            Cell {
                requests_per_second: median(&mut rates),
                p50_ms: median(&mut p50s),
                p99_ms: median(&mut p99s),
                rss_per_session,
                max_wal_bytes,
                errors: runs.iter().map(|run| run.errors).sum(),
            },
        );
    }
    Ok(cells)
}

fn ratio(
    results: &BTreeMap<String, BTreeMap<&'static str, Cell>>,
    a: &str,
    b: &str,
    route: &str,
) -> String {
    match (
        results.get(a).and_then(|cells| cells.get(route)),
        results.get(b).and_then(|cells| cells.get(route)),
    ) {
        (Some(a), Some(b)) if b.requests_per_second > 0.0 => {
            format!("{:.2}", a.requests_per_second / b.requests_per_second)
        }
        _ => "-".into(),
    }
}

fn report(results: &BTreeMap<String, BTreeMap<&'static str, Cell>>, order: &[&str]) -> String {
    let mut out = String::new();
    out.push_str("| mode | route | req/s (median) | p50 ms | p99 ms | RSS bytes per session | max WAL MiB | errors |\n");
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for mode in order {
        let Some(cells) = results.get(*mode) else {
            continue;
        };
        for route in ROUTES {
            let Some(cell) = cells.get(route) else {
                continue;
            };
            let rss = cell
                .rss_per_session
                .map_or_else(String::new, |bytes| format!("{bytes:.0}"));
            let wal = cell.max_wal_bytes.map_or_else(String::new, |bytes| {
                format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
            });
            out.push_str(&format!(
                "| {mode} | /{route} | {:.0} | {:.2} | {:.2} | {rss} | {wal} | {} |\n",
                cell.requests_per_second, cell.p50_ms, cell.p99_ms, cell.errors
            ));
        }
    }
    out.push_str("\n| store | route | sessio / tower-sessions | sessio / floor | sessio / bare | sessio / express |\n");
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: |\n");
    for store in ["memory", "cookie", "sqlite", "redis", "postgres"] {
        let sessio = format!("sessio-{store}");
        if !results.contains_key(&sessio) {
            continue;
        }
        for route in ROUTES {
            out.push_str(&format!(
                "| {store} | /{route} | {} | {} | {} | {} |\n",
                ratio(results, &sessio, &format!("tower-{store}"), route),
                ratio(results, &sessio, &format!("floor-{store}"), route),
                ratio(results, &sessio, "bare", route),
                ratio(results, &sessio, &format!("express-{store}"), route),
            ));
        }
    }
    out
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let modes: Vec<String> = match &args.modes {
        Some(list) => list.split(',').map(|mode| mode.trim().to_owned()).collect(),
        None => ALL_MODES.iter().map(|mode| (*mode).to_owned()).collect(),
    };
    let started = Instant::now();
    let mut results = BTreeMap::new();
    let mut failed = false;
    for mode in &modes {
        eprintln!("[bench] {mode}");
        match measure(mode, &args) {
            Ok(cells) => {
                results.insert(mode.clone(), cells);
            }
            Err(error) => {
                eprintln!("[bench] {mode} failed: {error}");
                failed = true;
            }
        }
    }
    let order: Vec<&str> = modes.iter().map(String::as_str).collect();
    let table = report(&results, &order);
    println!("{table}");
    eprintln!("[bench] {} modes in {:?}", results.len(), started.elapsed());
    if let Some(out) = &args.out
        && let Err(error) = std::fs::write(out, &table)
    {
        eprintln!("[bench] cannot write {}: {error}", out.display());
        failed = true;
    }

    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
