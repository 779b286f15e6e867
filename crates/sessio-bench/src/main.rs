//! The benchmark server: one axum 0.8 app, one tokio worker thread, and a session layer
//! chosen by `--mode`, all serving the same three routes:
//!
//! - `GET /read`: reads the integer `n` from the session;
//! - `GET /write`: increments `n`;
//! - `GET /new`: a visitor without a cookie sets `n = 0`, creating a session.
//!
//! Modes: `bare` (no sessions: the ceiling); `sessio-{memory,sqlite,redis,postgres,cookie}`;
//! `tower-{memory,sqlite,redis,postgres}` (tower-sessions 0.14 with its memory store, its
//! sqlx SQLite and PostgreSQL stores and its fred Redis store); and
//! `floor-{sqlite,redis,postgres}`: only the store round trips a session request cannot
//! avoid (one read; one write for `/write`; one write for `/new`), with the client crates
//! sessio uses, and no session logic at all.

mod floor;
mod modes;

use std::net::SocketAddr;

use clap::Parser;

/// Serves the benchmark routes in one mode.
#[derive(Debug, Parser)]
struct Args {
    /// What handles sessions: bare, sessio-*, tower-*, floor-* (see the crate docs).
    #[arg(long)]
    mode: modes::Mode,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Redis for the redis modes.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    /// PostgreSQL for the postgres modes.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// SQLite file for the sqlite modes (created; emptied first).
    #[arg(long, default_value = "bench.db")]
    sqlite: String,
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = modes::app(&args).await?;
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("ready {} on {}", args.mode, listener.local_addr()?);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        Ok(())
    })
}
