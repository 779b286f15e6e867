//! `sessio`: end sessions from outside any request, during an incident or in a cron job.
//!
//! ```text
//! sessio --store sqlite://sessions.db sessions list --user alice
//! sessio sessions revoke --user alice --except 3q2-7wEjbY1CG9UsT1k5rw
//! sessio sessions revoke --handle 3q2-7wEjbY1CG9UsT1k5rw
//! sessio sessions revoke --all --yes
//! sessio stats
//! sessio purge
//! sessio migrate
//! ```
//!
//! Exit codes: 0 success; 1 nothing matched where something was asked for; 2 usage or
//! connection error. Every error is one line that says what to do. Sessions are named by
//! their handles only: nothing printed here works as a cookie.
#![forbid(unsafe_code)]

mod store;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use sessio::{Clock, SessionHandle, SessionInfo, SessionStore, StoreError, SystemClock, Timestamp};

use crate::store::{AnyStore, StoreUrl};

/// End sessions from outside any request: list, revoke, count and purge them.
///
/// Exit codes: 0 success, 1 nothing matched, 2 usage or connection error.
#[derive(Debug, Parser)]
#[command(name = "sessio", version)]
struct Cli {
    /// The session store: sqlite://PATH, postgres://USER@HOST/DB[?schema=NAME],
    /// redis://HOST:PORT/[?prefix=NAME] or redis+cluster://HOST:PORT,HOST:PORT[?prefix=NAME].
    #[arg(long, env = "SESSIO_STORE", global = true)]
    store: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List or revoke a user's sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Live sessions, sessions per user, and expired records awaiting purge.
    Stats {
        /// How many users to show, those with the most sessions first.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove expired records now.
    Purge,
    /// Create or upgrade the schema or key layout (idempotent).
    Migrate,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// A user's live sessions: handle, created, last seen, expires, user agent, IP.
    List {
        /// The user id.
        #[arg(long, allow_hyphen_values = true)]
        user: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End sessions: a user's (all, or all but one), one by handle, or every session.
    Revoke(Revoke),
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group = clap::ArgGroup::new("target").required(true).multiple(false).args(["user", "handle", "all"]))]
struct Revoke {
    /// End every session of this user.
    #[arg(long, allow_hyphen_values = true)]
    user: Option<String>,
    /// With --user: keep the session with this handle.
    #[arg(long, requires = "user", allow_hyphen_values = true)]
    except: Option<String>,
    /// End the one session with this handle. Handles are base64url, so one may start with
    /// `-`: it is still taken as the value.
    #[arg(long, allow_hyphen_values = true)]
    handle: Option<String>,
    /// End every session of every user (needs --yes).
    #[arg(long)]
    all: bool,
    /// Confirm --all.
    #[arg(long)]
    yes: bool,
}

/// How a command ended.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Nothing matched (exit 1).
    #[error("{0}")]
    NothingMatched(String),
    /// Usage or connection error (exit 2).
    #[error("{0}")]
    Usage(String),
}

impl Failure {
    fn store(error: StoreError) -> Self {
        Self::Usage(format!(
            "the store failed ({}); check that it is running",
            reason(&error)
        ))
    }
}

/// What went wrong in the store, without the advice meant for apps.
fn reason(error: &StoreError) -> String {
    match error {
        StoreError::Unavailable(source) | StoreError::Backend(source) => source.to_string(),
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sessio: cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::NothingMatched(message)) => {
            eprintln!("sessio: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("sessio: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let url = cli.store.as_deref().ok_or_else(|| {
        Failure::Usage("no store given: pass --store URL or set SESSIO_STORE (sqlite://, postgres://, redis://)".into())
    })?;
    let url: StoreUrl = url.parse().map_err(Failure::Usage)?;
    let create = matches!(cli.command, Command::Migrate);
    let store = AnyStore::connect(&url, create).await.map_err(|error| {
        Failure::Usage(format!(
            "cannot open the store at {} ({}); check the URL and that the server runs",
            url.display(),
            reason(&error)
        ))
    })?;
    if let Command::Migrate = cli.command {
        println!("{} is at {}", url.display(), store.schema_description());
        return Ok(());
    }
    match store {
        AnyStore::Sqlite(store) => execute(&store, cli.command).await,
        AnyStore::Postgres(store) => execute(&store, cli.command).await,
        AnyStore::Redis(store) => execute(&store, cli.command).await,
    }
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// RFC 3339 to the second, in UTC.
fn time(at: Timestamp) -> String {
    let seconds = i64::try_from(at.as_millis() / 1000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn execute<S: SessionStore>(store: &S, command: Command) -> Result<(), Failure> {
    match command {
        Command::Sessions(SessionsCommand::List { user, json }) => list(store, &user, json).await,
        Command::Sessions(SessionsCommand::Revoke(revoke)) => revoke_sessions(store, revoke).await,
        Command::Stats { top, json } => stats(store, top, json).await,
        Command::Purge => purge(store).await,
        Command::Migrate => Ok(()),
    }
}

async fn list<S: SessionStore>(store: &S, user: &str, json: bool) -> Result<(), Failure> {
    let sessions = store.list_user(user, now()).await.map_err(Failure::store)?;
    if json {
        let rows: Vec<_> = sessions.iter().map(session_json).collect();
        println!("{}", serde_json::Value::Array(rows));
    } else if !sessions.is_empty() {
        print_table(&sessions);
    }
    if sessions.is_empty() {
        return Err(Failure::NothingMatched(format!(
            "no live sessions for user {user:?}"
        )));
    }
    Ok(())
}

fn session_json(info: &SessionInfo) -> serde_json::Value {
    json!({
        "handle": info.handle.to_string(),
        "created_at": time(info.created_at),
        "last_seen_at": time(info.last_seen_at),
        "expires_at": time(info.expires_at),
        "user_agent": info.user_agent,
        "ip": info.ip.map(|ip| ip.to_string()),
    })
}

fn print_table(sessions: &[SessionInfo]) {
    let rows: Vec<[String; 6]> = sessions
        .iter()
        .map(|info| {
            [
                info.handle.to_string(),
                time(info.created_at),
                time(info.last_seen_at),
                time(info.expires_at),
                info.user_agent.clone().unwrap_or_else(|| "-".into()),
                info.ip.map_or_else(|| "-".into(), |ip| ip.to_string()),
            ]
        })
        .collect();
    let header = [
        "HANDLE",
        "CREATED",
        "LAST SEEN",
        "EXPIRES",
        "USER AGENT",
        "IP",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|title| title.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}

fn parse_handle(text: &str) -> Result<SessionHandle, Failure> {
    SessionHandle::parse(text).ok_or_else(|| {
        Failure::Usage(format!(
            "{text:?} is not a session handle: copy one from `sessio sessions list --user USER`"
        ))
    })
}

async fn revoke_sessions<S: SessionStore>(store: &S, revoke: Revoke) -> Result<(), Failure> {
    let now = now();
    if let Some(user) = revoke.user {
        let except = revoke.except.as_deref().map(parse_handle).transpose()?;
        let ended = store
            .destroy_user_sessions(&user, except.as_ref(), now)
            .await
            .map_err(Failure::store)?;
        if ended == 0 {
            return Err(Failure::NothingMatched(format!(
                "no live sessions to revoke for user {user:?}"
            )));
        }
        println!("revoked {ended} session(s) of {user:?}");
        return Ok(());
    }
    if let Some(handle) = revoke.handle {
        let handle = parse_handle(&handle)?;
        let missing = || Failure::NothingMatched(format!("no live session with handle {handle}"));
        let user = store
            .find_handle(&handle, now)
            .await
            .map_err(Failure::store)?
            .ok_or_else(missing)?;
        if !store
            .destroy_user_session(&user, &handle, now)
            .await
            .map_err(Failure::store)?
        {
            return Err(missing());
        }
        println!("revoked session {handle} of {user:?}");
        return Ok(());
    }
    if !revoke.yes {
        return Err(Failure::Usage(
            "refusing to end every session of every user without --yes".into(),
        ));
    }
    let ended = store.destroy_all(now).await.map_err(Failure::store)?;
    println!("revoked all {ended} live session(s)");
    Ok(())
}

async fn stats<S: SessionStore>(store: &S, top: usize, json: bool) -> Result<(), Failure> {
    let now = now();
    let live = store.count(now).await.map_err(Failure::store)?;
    let expired = store.count_expired(now).await.map_err(Failure::store)?;
    let users = store.top_users(top, now).await.map_err(Failure::store)?;
    if json {
        let users: Vec<_> = users
            .iter()
            .map(|(user, sessions)| json!({"user": user, "sessions": sessions}))
            .collect();
        println!(
            "{}",
            json!({"live_sessions": live, "expired_awaiting_purge": expired, "top_users": users})
        );
        return Ok(());
    }
    println!("live sessions: {live}");
    println!("expired, awaiting purge: {expired}");
    if !users.is_empty() {
        println!("sessions per user (top {top}):");
        let width = users
            .iter()
            .map(|(user, _)| user.chars().count())
            .max()
            .unwrap_or(0);
        for (user, sessions) in users {
            println!("  {user:width$}  {sessions}");
        }
    }
    Ok(())
}

async fn purge<S: SessionStore>(store: &S) -> Result<(), Failure> {
    const BATCH: usize = 1_000;
    let now = now();
    let expected = store.count_expired(now).await.map_err(Failure::store)?;
    let terminal = std::io::stderr().is_terminal();
    let mut purged = 0u64;
    loop {
        let batch = store
            .purge_expired(now, BATCH)
            .await
            .map_err(Failure::store)?;
        purged += batch;
        if terminal {
            let total = expected.max(purged).max(1);
            let filled = usize::try_from(purged * 30 / total).unwrap_or(30);
            eprint!(
                "\r[{}{}] {purged}/{total}",
                "#".repeat(filled),
                " ".repeat(30 - filled.min(30))
            );
        }
        if batch < BATCH as u64 {
            break;
        }
    }
    if terminal {
        eprintln!();
    }
    println!("purged {purged} expired record(s)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    /// A handle or user id may start with `-` (base64url has it): the value after the flag is
    /// taken as the value, never as another flag.
    #[test]
    fn values_starting_with_a_hyphen_are_values() {
        for args in [
            &[
                "sessio",
                "sessions",
                "revoke",
                "--handle",
                "-JtZ0nZlq3YDXVkMxXhQ5A",
            ][..],
            &[
                "sessio", "sessions", "revoke", "--user", "-u", "--except", "-Jt",
            ],
            &["sessio", "sessions", "list", "--user", "-u"],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
    }
}
