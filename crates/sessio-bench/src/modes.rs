//! The session layers under test, each behind the same three routes.

use std::fmt;
use std::str::FromStr;

use axum::Router;
use sessio_bench::{bare_routes, sessio_routes, tower_routes};

use crate::Args;
use crate::floor;

/// Every mode the server can run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bare,
    Sessio(Backend),
    Tower(Backend),
    Floor(Backend),
}

/// Where a mode keeps sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Redis,
    Postgres,
    Cookie,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "bare" {
            return Ok(Self::Bare);
        }
        let (family, backend) = text
            .split_once('-')
            .ok_or_else(|| format!("unknown mode {text:?}"))?;
        let backend = match backend {
            "memory" => Backend::Memory,
            "sqlite" => Backend::Sqlite,
            "redis" => Backend::Redis,
            "postgres" => Backend::Postgres,
            "cookie" => Backend::Cookie,
            _ => return Err(format!("unknown store in mode {text:?}")),
        };
        match (family, backend) {
            ("sessio", backend) => Ok(Self::Sessio(backend)),
            ("tower", Backend::Cookie) => Err("tower-sessions has no cookie-only store".into()),
            ("tower", backend) => Ok(Self::Tower(backend)),
            ("floor", Backend::Sqlite | Backend::Redis | Backend::Postgres) => {
                Ok(Self::Floor(backend))
            }
            _ => Err(format!("unknown mode {text:?}")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = |backend: &Backend| format!("{backend:?}").to_lowercase();
        match self {
            Self::Bare => f.write_str("bare"),
            Self::Sessio(backend_) => write!(f, "sessio-{}", backend(backend_)),
            Self::Tower(backend_) => write!(f, "tower-{}", backend(backend_)),
            Self::Floor(backend_) => write!(f, "floor-{}", backend(backend_)),
        }
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The app of `args.mode`.
pub async fn app(args: &Args) -> Result<Router, Failure> {
    let name = format!("bench{}", std::process::id());
    Ok(match args.mode {
        Mode::Bare => bare_routes(),
        Mode::Sessio(backend) => sessio_app(backend, args, &name).await?,
        Mode::Tower(backend) => tower_app(backend, args, &name).await?,
        Mode::Floor(backend) => floor::app(backend, args, &name).await?,
    })
}

fn fresh_sqlite_file(path: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
}

async fn sessio_app(backend: Backend, args: &Args, name: &str) -> Result<Router, Failure> {
    use sessio::Sessions;
    let sessions = match backend {
        // Room for every session a full run creates (about 3 million): the bound is the
        // point of the capacity, but a benchmark of /new must not measure refusals.
        Backend::Memory => {
            let store = sessio::MemoryStore::builder().capacity(8_000_000).build();
            Sessions::builder(store).build()?
        }
        Backend::Sqlite => {
            fresh_sqlite_file(&args.sqlite);
            Sessions::builder(sessio_sqlite::SqliteStore::open(&args.sqlite).await?).build()?
        }
        Backend::Redis => {
            let store = sessio_redis::RedisStore::builder(&args.redis)
                .prefix(name)
                .connect()
                .await?;
            Sessions::builder(store).build()?
        }
        Backend::Postgres => {
            let store = sessio_postgres::PostgresStore::builder(&args.postgres)
                .schema(name)
                .connect()
                .await?;
            Sessions::builder(store).build()?
        }
        Backend::Cookie => {
            let key = sessio::CookieKey::new("bench", &[42u8; 32])?;
            Sessions::cookie_builder(sessio::KeyRing::single(key)).build()?
        }
    };
    Ok(sessio_routes().layer(sessions.layer()))
}

async fn tower_app(backend: Backend, args: &Args, name: &str) -> Result<Router, Failure> {
    use tower_sessions::SessionManagerLayer;
    let routes = tower_routes();
    Ok(match backend {
        Backend::Memory => routes.layer(
            SessionManagerLayer::new(tower_sessions::MemoryStore::default()).with_secure(false),
        ),
        Backend::Sqlite => {
            fresh_sqlite_file(&args.sqlite);
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&args.sqlite)
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await?;
            let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
            store.migrate().await?;
            routes.layer(SessionManagerLayer::new(store).with_secure(false))
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&args.postgres).await?;
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool)
                .with_schema_name(name)
                .map_err(|error| -> Failure { error.into() })?;
            store.migrate().await?;
            routes.layer(SessionManagerLayer::new(store).with_secure(false))
        }
        Backend::Redis => {
            use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
            let config = Config::from_url(&args.redis)?;
            let pool = Pool::new(config, None, None, None, 6)?;
            let _connection = pool.connect();
            pool.wait_for_connect().await?;
            let store = tower_sessions_redis_store::RedisStore::new(pool);
            routes.layer(SessionManagerLayer::new(store).with_secure(false))
        }
        Backend::Cookie => return Err("tower-sessions has no cookie-only store".into()),
    })
}
