//! A browser without HTTP: runs requests against [`Sessions`] directly and keeps the cookie,
//! so tests can interleave requests exactly.

use http::StatusCode;
use http::header::{COOKIE, HeaderMap, HeaderValue};
use sessio::{Commit, IdDigest, Session, SessionId, Sessions};

/// One browser's cookie jar for one session cookie.
#[derive(Clone, Debug)]
pub struct Browser {
    sessions: Sessions,
    cookie: Option<String>,
}

/// What a `Set-Cookie` header did to a session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieUpdate {
    /// The browser now holds this value.
    Set(String),
    /// The browser dropped the cookie.
    Removed,
}

/// Reads a `Set-Cookie` value for the cookie called `name`.
pub fn parse_set_cookie(name: &str, header: &str) -> Option<CookieUpdate> {
    let mut parts = header.split(';');
    let (cookie_name, value) = parts.next()?.split_once('=')?;
    if cookie_name.trim() != name {
        return None;
    }
    let removed = parts.any(|attribute| {
        let attribute = attribute.trim().to_ascii_lowercase();
        attribute == "max-age=0" || attribute.starts_with("max-age=-")
    });
    Some(if removed || value.is_empty() {
        CookieUpdate::Removed
    } else {
        CookieUpdate::Set(value.trim().to_owned())
    })
}

impl Browser {
    /// A browser with no cookie yet.
    pub fn new(sessions: &Sessions) -> Self {
        Self {
            sessions: sessions.clone(),
            cookie: None,
        }
    }

    /// A browser holding `cookie` (say, a copy stolen from another).
    pub fn with_cookie(sessions: &Sessions, cookie: Option<String>) -> Self {
        Self {
            sessions: sessions.clone(),
            cookie,
        }
    }

    /// Starts a request carrying the current cookie.
    pub fn begin(&self) -> Session {
        let mut headers = HeaderMap::new();
        if let Some(cookie) = &self.cookie {
            let header = format!("{}={cookie}", self.sessions.cookie_name());
            headers.insert(
                COOKIE,
                HeaderValue::try_from(header).expect("cookie header"),
            );
        }
        self.sessions.session_for(&headers)
    }

    /// Ends a request with `status` and stores what the response did to the cookie.
    pub async fn finish(&mut self, session: &Session, status: StatusCode) -> Commit {
        let commit = session.commit(status).await;
        if let Some(header) = &commit.set_cookie {
            let header = header.to_str().expect("Set-Cookie is text");
            match parse_set_cookie(self.sessions.cookie_name(), header) {
                Some(CookieUpdate::Set(value)) => self.cookie = Some(value),
                Some(CookieUpdate::Removed) => self.cookie = None,
                None => {}
            }
        }
        commit
    }

    /// Runs one request: `handler` gets the session, the response status is 200.
    pub async fn request<F, Fut, T>(&mut self, handler: F) -> T
    where
        F: FnOnce(Session) -> Fut,
        Fut: Future<Output = T>,
    {
        let session = self.begin();
        let output = handler(session.clone()).await;
        let commit = self.finish(&session, StatusCode::OK).await;
        assert!(commit.error.is_none(), "save failed: {:?}", commit.error);
        output
    }

    /// The cookie value the browser holds.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// The digest of the browser's current id, as the store keys it.
    pub fn digest(&self) -> Option<IdDigest> {
        self.cookie
            .as_deref()
            .and_then(SessionId::parse)
            .map(|id| self.sessions.digest_of(&id))
    }
}
