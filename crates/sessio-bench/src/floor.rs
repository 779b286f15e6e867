//! The floor: per request, only the store round trips a session request cannot avoid (one
//! read; one read and one write for `/write`; one write for `/new`), with the client crates
//! sessio uses and no session logic: no digest, no expiry, no patch, no checks.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use rusqlite::{Connection, OptionalExtension};

use crate::Args;
use crate::modes::Backend;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
enum Floor {
    Redis(ConnectionManager),
    Sqlite(Arc<SqliteFloor>),
    Postgres(Pool),
}

struct SqliteFloor {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

fn error(error: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
}

fn id_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(COOKIE)?
        .to_str()
        .ok()?
        .split(';')
        .find_map(|pair| pair.trim().strip_prefix("floor="))
        .map(str::to_owned)
}

fn fresh_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Floor {
    async fn read(&self, id: String) -> Result<Option<i64>, Failure> {
        Ok(match self {
            Self::Redis(connection) => connection.clone().hget(format!("floor:{id}"), "n").await?,
            Self::Sqlite(floor) => {
                let floor = floor.clone();
                tokio::task::spawn_blocking(move || -> Result<Option<i64>, Failure> {
                    let index = floor.next.fetch_add(1, Ordering::Relaxed) % floor.readers.len();
                    let reader = floor.readers[index].lock().map_err(|_| "poisoned")?;
                    let mut statement =
                        reader.prepare_cached("SELECT n FROM floor WHERE id = ?1")?;
                    Ok(statement.query_row([id], |row| row.get(0)).optional()?)
                })
                .await??
            }
            Self::Postgres(pool) => {
                let client = pool.get().await?;
                let statement = client
                    .prepare_cached("SELECT n FROM floor WHERE id = $1")
                    .await?;
                client
                    .query_opt(&statement, &[&id])
                    .await?
                    .map(|row| row.get(0))
            }
        })
    }

    async fn write(&self, id: String, n: i64) -> Result<(), Failure> {
        match self {
            Self::Redis(connection) => {
                let () = connection
                    .clone()
                    .hset(format!("floor:{id}"), "n", n)
                    .await?;
            }
            Self::Sqlite(floor) => {
                let floor = floor.clone();
                tokio::task::spawn_blocking(move || -> Result<(), Failure> {
                    let writer = floor.writer.lock().map_err(|_| "poisoned")?;
                    let mut statement = writer.prepare_cached(
                        "INSERT INTO floor (id, n) VALUES (?1, ?2)
                         ON CONFLICT (id) DO UPDATE SET n = excluded.n",
                    )?;
                    statement.execute(rusqlite::params![id, n])?;
                    Ok(())
                })
                .await??;
            }
            Self::Postgres(pool) => {
                let client = pool.get().await?;
                let statement = client
                    .prepare_cached(
                        "INSERT INTO floor (id, n) VALUES ($1, $2)
                         ON CONFLICT (id) DO UPDATE SET n = excluded.n",
                    )
                    .await?;
                client.execute(&statement, &[&id, &n]).await?;
            }
        }
        Ok(())
    }
}

async fn read(State(floor): State<Floor>, headers: HeaderMap) -> Response {
    let Some(id) = id_of(&headers) else {
        return "-1".into_response();
    };
    match floor.read(id).await {
        Ok(n) => n.unwrap_or(-1).to_string().into_response(),
        Err(failure) => error(failure),
    }
}

async fn write(State(floor): State<Floor>, headers: HeaderMap) -> Response {
    let Some(id) = id_of(&headers) else {
        return (StatusCode::BAD_REQUEST, "no cookie").into_response();
    };
    let n = match floor.read(id.clone()).await {
        Ok(n) => n.unwrap_or(0) + 1,
        Err(failure) => return error(failure),
    };
    match floor.write(id, n).await {
        Ok(()) => n.to_string().into_response(),
        Err(failure) => error(failure),
    }
}

async fn new(State(floor): State<Floor>) -> Response {
    let id = fresh_id();
    let cookie = HeaderValue::from_str(&format!("floor={id}; HttpOnly; Path=/"));
    match (floor.write(id, 0).await, cookie) {
        (Ok(()), Ok(cookie)) => ([(SET_COOKIE, cookie)], "0").into_response(),
        (Err(failure), _) => error(failure),
        (_, Err(failure)) => error(failure),
    }
}

/// The floor app for `backend`.
pub async fn app(backend: Backend, args: &Args, name: &str) -> Result<Router, Failure> {
    let floor = match backend {
        Backend::Redis => {
            let client = redis::Client::open(args.redis.as_str())?;
            Floor::Redis(client.get_connection_manager().await?)
        }
        Backend::Sqlite => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", args.sqlite));
            }
            let writer = Connection::open(&args.sqlite)?;
            writer.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                 CREATE TABLE floor (id TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;",
            )?;
            let readers = (0..2)
                .map(|_| Connection::open(&args.sqlite).map(Mutex::new))
                .collect::<Result<Vec<_>, _>>()?;
            Floor::Sqlite(Arc::new(SqliteFloor {
                writer: Mutex::new(writer),
                readers,
                next: AtomicUsize::new(0),
            }))
        }
        Backend::Postgres => {
            let config = tokio_postgres::Config::from_str(&args.postgres)?;
            let manager = Manager::from_config(
                config,
                tokio_postgres::NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let pool = Pool::builder(manager).max_size(16).build()?;
            let client = pool.get().await?;
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {name}; SET search_path TO {name};
                     CREATE TABLE IF NOT EXISTS {name}.floor (id text PRIMARY KEY, n bigint NOT NULL);"
                ))
                .await?;
            drop(client);
            let pool = Pool::builder(Manager::from_config(
                format!(
                    "{} options=-csearch_path={name}",
                    postgres_keywords(&args.postgres)
                )
                .parse()?,
                tokio_postgres::NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ))
            .max_size(16)
            .build()?;
            Floor::Postgres(pool)
        }
        Backend::Memory | Backend::Cookie => return Err("no floor for this store".into()),
    };
    Ok(Router::new()
        .route("/read", get(read))
        .route("/write", get(write))
        .route("/new", get(new))
        .with_state(floor))
}

/// `postgres://user@host:port/db` as `key=value` words, so an option can be added.
fn postgres_keywords(url: &str) -> String {
    let rest = url
        .trim_start_matches("postgresql://")
        .trim_start_matches("postgres://");
    let (credentials, location) = rest.rsplit_once('@').unwrap_or(("", rest));
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let (host_port, database) = location.split_once('/').unwrap_or((location, "postgres"));
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
    let mut words = format!("host={host} port={port} dbname={database}");
    if !user.is_empty() {
        words.push_str(&format!(" user={user}"));
    }
    if !password.is_empty() {
        words.push_str(&format!(" password={password}"));
    }
    words
}
