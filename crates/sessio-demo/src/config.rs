//! Command-line flags (each with an environment variable), and what they parse into.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use sessio::Sessions;

use crate::users::Users;

/// The sessio demo: log in, see your devices, sign them out.
#[derive(Debug, Parser)]
#[command(name = "sessio-demo", version, about)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "SESSIO_DEMO_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Session store: sqlite://PATH, memory, redis://HOST:PORT/,
    /// redis+cluster://HOST:PORT,HOST:PORT, postgres://USER@HOST/DB, or cookie.
    #[arg(
        long,
        env = "SESSIO_DEMO_STORE",
        default_value = "sqlite://sessio-demo.db"
    )]
    pub store: StoreUrl,

    /// End sessions unused for this long, like 30m or 2s.
    #[arg(long, env = "SESSIO_DEMO_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "30m")]
    pub idle_timeout: Duration,

    /// End sessions this long after login, however active, like 12h.
    #[arg(long, env = "SESSIO_DEMO_ABSOLUTE_TIMEOUT", value_parser = parse_duration, default_value = "12h")]
    pub absolute_timeout: Duration,

    /// Who may log in, as name:password pairs separated by commas.
    #[arg(
        long,
        env = "SESSIO_DEMO_USERS",
        default_value = "alice:wonderland,bob:builder"
    )]
    pub users: Users,

    /// Name of the session cookie [default: __Host-sessio, or sessio with --insecure-cookie].
    #[arg(long, env = "SESSIO_DEMO_COOKIE_NAME")]
    pub cookie_name: Option<String>,

    /// Drop `Secure` from the cookie, for plain-http hosts other than localhost.
    #[arg(long, env = "SESSIO_DEMO_INSECURE_COOKIE")]
    pub insecure_cookie: bool,

    /// With --store cookie: the AES-256 key sealing the cookies, 32 bytes in base64.
    /// Without it, a random key is drawn at start-up, and sessions end when the demo stops.
    #[arg(long, env = "SESSIO_DEMO_COOKIE_KEY", hide_env_values = true)]
    pub cookie_key: Option<String>,
}

/// Where sessions live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// One SQLite file.
    Sqlite(PathBuf),
    /// Process memory.
    Memory,
    /// A Redis server or cluster (`redis://` or `redis+cluster://`).
    Redis(String),
    /// A PostgreSQL database.
    Postgres(String),
    /// Cookie-only sessions.
    Cookie,
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
        if url == "memory" {
            return Ok(Self::Memory);
        }
        if url == "cookie" {
            return Ok(Self::Cookie);
        }
        if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
            return Ok(Self::Redis(url.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        Err(format!(
            "unknown store {url:?}: use sqlite://PATH, memory, redis://..., postgres://... or cookie"
        ))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "SQLite file {}", path.display()),
            Self::Memory => f.write_str("memory"),
            Self::Redis(url) => write!(f, "Redis at {}", without_password(url)),
            Self::Postgres(url) => write!(f, "PostgreSQL at {}", without_password(url)),
            Self::Cookie => {
                f.write_str("cookie-only sessions (AES-256-GCM, revocations in memory)")
            }
        }
    }
}

/// The URL with any password replaced, for printing.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Parses humane durations: `500ms`, `2s`, `30m`, `12h`, `7d`, or sums like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid =
        || format!("invalid duration {text:?}: use forms like 500ms, 2s, 30m, 12h or 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            _ => return Err(invalid()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit..];
    }
    if total.is_zero() {
        return Err(format!("duration {text:?} must be longer than zero"));
    }
    Ok(total)
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The cookie key is unusable.
    #[error("--cookie-key: {0}")]
    CookieKey(sessio::ConfigError),
    /// The store could not be opened.
    #[error("could not open the session store ({store}): {source}")]
    Store {
        /// Which store.
        store: String,
        /// Why.
        source: sessio::StoreError,
    },
    /// The session settings are invalid.
    #[error("invalid session settings: {0}")]
    Config(#[from] sessio::ConfigError),
}

impl Args {
    /// Opens the store and configures sessions as the flags say.
    pub async fn sessions(&self) -> Result<Sessions, StartError> {
        let failed = |source| StartError::Store {
            store: self.store.to_string(),
            source,
        };
        let builder = match &self.store {
            StoreUrl::Sqlite(path) => Sessions::builder(
                sessio_sqlite::SqliteStore::open(path)
                    .await
                    .map_err(failed)?,
            ),
            StoreUrl::Memory => Sessions::builder(sessio::MemoryStore::new()),
            StoreUrl::Redis(url) => Sessions::builder(
                sessio_redis::RedisStore::connect(url)
                    .await
                    .map_err(failed)?,
            ),
            StoreUrl::Postgres(url) => Sessions::builder(
                sessio_postgres::PostgresStore::connect(url)
                    .await
                    .map_err(failed)?,
            ),
            StoreUrl::Cookie => self.cookie_sessions()?,
        };
        let cookie_name = self.cookie_name.clone().unwrap_or_else(|| {
            if self.insecure_cookie {
                "sessio"
            } else {
                "__Host-sessio"
            }
            .to_owned()
        });
        Ok(builder
            .cookie_name(cookie_name)
            .secure(!self.insecure_cookie)
            .idle_timeout(self.idle_timeout)
            .absolute_lifetime(self.absolute_timeout)
            .build()?)
    }
}

impl Args {
    /// Cookie-only sessions under the given key (or a random one), revocable through an
    /// in-process store: revocations, like a random key, last until the demo stops.
    fn cookie_sessions(&self) -> Result<sessio::SessionsBuilder, StartError> {
        let key = match &self.cookie_key {
            Some(encoded) => sessio::CookieKey::from_base64("demo", encoded),
            None => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|_| {
                    StartError::CookieKey(sessio::ConfigError::WeakCookieKey(
                        "no randomness for a cookie key",
                    ))
                })?;
                sessio::CookieKey::new("demo", &secret)
            }
        }
        .map_err(StartError::CookieKey)?;
        Ok(Sessions::cookie_builder(sessio::KeyRing::single(key))
            .revocation_store(sessio::MemoryStore::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "m", "30", "3x", "-1s", "0s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_urls_parse_and_print_without_passwords() {
        assert_eq!("memory".parse(), Ok(StoreUrl::Memory));
        assert_eq!(
            "sqlite://a/b.db".parse(),
            Ok(StoreUrl::Sqlite("a/b.db".into()))
        );
        assert!("sqlite://".parse::<StoreUrl>().is_err());
        assert!("mysql://x".parse::<StoreUrl>().is_err());
        let url: StoreUrl = "postgres://app:secret@db/app".parse().unwrap();
        assert_eq!(url.to_string(), "PostgreSQL at postgres://app:***@db/app");
    }
}
