//! A small login app on the memory store: log in, see your devices, sign them out.
//!
//! ```sh
//! cargo run -p sessio --example login
//! ```
//! Then open http://localhost:3000 in two browsers (or a normal and a private window), log in
//! as `alice` / `wonderland` in both, and sign one out from the other.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sessio::{FlashLevel, LoginInfo, MemoryStore, Session, SessionError, SessionHandle, Sessions};

const USERS: [(&str, &str); 2] = [("alice", "wonderland"), ("bob", "builder")];

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn home(session: Session) -> Result<Html<String>, SessionError> {
    let flashes: String = session
        .take_flashes()
        .await?
        .iter()
        .map(|flash| format!("<p class=flash>{}</p>", escape(&flash.message)))
        .collect();
    let Some(user) = session.user_id().await? else {
        return Ok(Html(format!(
            "<h1>sessio example</h1>{flashes}
             <form method=post action=/login>
               <input name=username placeholder=alice> <input name=password type=password placeholder=wonderland>
               <button>Log in</button>
             </form>"
        )));
    };
    let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", &visits).await?;
    let devices: String = session
        .user_sessions()
        .await?
        .iter()
        .map(|device| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><form method=post action=/devices/{}/end><button>sign out</button></form></td></tr>",
                if device.current { "this device" } else { "" },
                escape(device.user_agent.as_deref().unwrap_or("?")),
                device.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                device.handle,
            )
        })
        .collect();
    Ok(Html(format!(
        "<h1>Hello, {user}</h1>{flashes}<p>{visits} page views in this session.</p>
         <h2>Your devices</h2><table>{devices}</table>
         <form method=post action=/devices/end-others><button>Sign out all other devices</button></form>
         <form method=post action=/logout-everywhere><button>Sign out everywhere</button></form>
         <form method=post action=/logout><button>Log out</button></form>",
        user = escape(&user)
    )))
}

async fn login(
    session: Session,
    info: LoginInfo,
    Form(credentials): Form<Credentials>,
) -> Result<Redirect, SessionError> {
    let valid = USERS
        .iter()
        .any(|(user, password)| *user == credentials.username && *password == credentials.password);
    if valid {
        session.login(&credentials.username, info).await?;
        session.flash(FlashLevel::Success, "Logged in.").await?;
    } else {
        session
            .flash(FlashLevel::Error, "Wrong user name or password.")
            .await?;
    }
    Ok(Redirect::to("/"))
}

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    // Awaited: the record is gone and the cookie removal is queued before the redirect.
    session.logout().await?;
    Ok(Redirect::to("/"))
}

async fn end_device(
    session: Session,
    Path(handle): Path<String>,
) -> Result<Response, SessionError> {
    if let Some(handle) = SessionHandle::parse(&handle) {
        session.destroy_session(&handle).await?;
    }
    Ok(Redirect::to("/").into_response())
}

async fn end_others(session: Session) -> Result<Redirect, SessionError> {
    let ended = session.destroy_other_sessions().await?;
    session
        .flash(
            FlashLevel::Info,
            format!(
                "Signed out {} other device(s).",
                ended.count().unwrap_or_default()
            ),
        )
        .await?;
    Ok(Redirect::to("/"))
}

async fn logout_everywhere(session: Session) -> Result<Redirect, SessionError> {
    session.destroy_all_user_sessions().await?;
    Ok(Redirect::to("/"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sessions = Sessions::builder(MemoryStore::new())
        .idle_timeout(Duration::from_secs(30 * 60))
        .build()?;
    let app = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/devices/{handle}/end", post(end_device))
        .route("/devices/end-others", post(end_others))
        .route("/logout-everywhere", post(logout_everywhere))
        .layer(sessions.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "sessio example on http://localhost:3000 (memory store); log in as alice / wonderland"
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
