//! Store URLs, and opening the store they name.

use std::path::PathBuf;
use std::str::FromStr;

use sessio::StoreError;
use sessio_postgres::PostgresStore;
use sessio_redis::RedisStore;
use sessio_sqlite::SqliteStore;

/// A store, named by URL. `?schema=` (PostgreSQL) and `?prefix=` (Redis) select where the
/// app keeps its sessions when it does not use the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres { url: String, schema: Option<String> },
    Redis { url: String, prefix: Option<String> },
}

/// Splits `?name=value` off a URL.
fn option(url: &str, name: &str) -> Result<(String, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut value = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((key, found)) if key == name && !found.is_empty() => {
                value = Some(found.to_owned())
            }
            _ => {
                return Err(format!(
                    "unknown URL option {pair:?}: only ?{name}=NAME is understood here"
                ));
            }
        }
    }
    Ok((base.to_owned(), value))
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, like sqlite://sessions.db".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (url, schema) = option(url, "schema")?;
            return Ok(Self::Postgres { url, schema });
        }
        if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
            let (url, prefix) = option(url, "prefix")?;
            return Ok(Self::Redis { url, prefix });
        }
        if url == "memory" {
            return Err("the memory store lives inside one app process; point the CLI at sqlite://, postgres:// or redis://".into());
        }
        Err(format!(
            "unknown store URL {url:?}: use sqlite://PATH, postgres://USER@HOST/DB or redis://HOST:PORT/"
        ))
    }
}

impl StoreUrl {
    /// The URL without any password, for messages.
    pub fn display(&self) -> String {
        let hide = |url: &str| match url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((credentials, host)) => match credentials.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                    None => url.to_owned(),
                },
                None => url.to_owned(),
            },
            None => url.to_owned(),
        };
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres { url, .. } | Self::Redis { url, .. } => hide(url),
        }
    }
}

/// An open store of any kind.
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
    Redis(RedisStore),
}

impl AnyStore {
    /// Opens the store (creating or upgrading its schema or key layout), without background
    /// tasks: the CLI runs one command and exits.
    pub async fn connect(url: &StoreUrl, create: bool) -> Result<Self, StoreError> {
        Ok(match url {
            StoreUrl::Sqlite(path) => {
                if !create && !path.exists() {
                    return Err(StoreError::backend(format!(
                        "no database file at {} (`sessio migrate` creates one)",
                        path.display()
                    )));
                }
                Self::Sqlite(
                    SqliteStore::builder(path)
                        .without_background_purge()
                        .open()
                        .await?,
                )
            }
            StoreUrl::Postgres { url, schema } => {
                let mut builder = PostgresStore::builder(url)
                    .pool_size(2)
                    .without_background_purge();
                if let Some(schema) = schema {
                    builder = builder.schema(schema);
                }
                Self::Postgres(builder.connect().await?)
            }
            StoreUrl::Redis { url, prefix } => {
                let mut builder = RedisStore::builder(url).without_background_purge();
                if let Some(prefix) = prefix {
                    builder = builder.prefix(prefix);
                }
                Self::Redis(builder.connect().await?)
            }
        })
    }

    /// The schema or layout version the store is at.
    pub fn schema_description(&self) -> String {
        match self {
            Self::Sqlite(store) => format!("schema version {}", store.schema_version()),
            Self::Postgres(store) => format!("schema version {}", store.schema_version()),
            Self::Redis(store) => format!("key layout version {}", store.layout_version()),
        }
    }
}
