//! The tower layer: gives each request a [`Session`] and saves it when the response is ready.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::session::{Commit, Session};
use crate::sessions::Sessions;
use crate::store::BoxFuture;

/// The tower [`Layer`] that puts a [`Session`] in every request's extensions and saves it
/// after the inner service responds. Made by [`Sessions::layer`].
///
/// What it does per request:
/// - reads the session cookie and checks the id's syntax, without touching the store;
/// - nothing else, unless the handler uses the session (G9);
/// - when the response is ready and the handler used the session: saves the changes as one
///   patch ([`Session::commit`]), adds the `Set-Cookie` header if the cookie must change,
///   with `Cache-Control: no-store` (G7), and `Vary: Cookie`, because the response depends
///   on the cookie;
/// - replaces the response with `503` if the save failed in the store (G12), and with `409`
///   if the session ended during the request while the handler changed its data (G2).
#[derive(Clone, Debug)]
pub struct SessionLayer {
    sessions: Sessions,
}

impl SessionLayer {
    pub(crate) fn new(sessions: Sessions) -> Self {
        Self { sessions }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            sessions: self.sessions.clone(),
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    sessions: Sessions,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let session = self.sessions.session_for(request.headers());
        request.extensions_mut().insert(session.clone());
        ResponseFuture {
            state: State::Handling {
                future: self.inner.call(request),
                session: Some(session),
            },
        }
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F, B> {
        Handling {
            #[pin]
            future: F,
            session: Option<Session>,
        },
        Committing {
            commit: BoxFuture<'static, Commit>,
            response: Option<Response<B>>,
        },
    }
}

pin_project! {
    /// The response future of [`SessionService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProjection::Handling { future, session } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(session) = session.take().filter(Session::was_accessed) else {
                        return Poll::Ready(Ok(response));
                    };
                    let status = response.status();
                    // Most requests only read their session: no store I/O, no allocation.
                    if let Some(commit) = session.commit_without_io(status) {
                        return Poll::Ready(Ok(apply(commit, response)));
                    }
                    let commit = Box::pin(async move { session.commit(status).await });
                    this.state.set(State::Committing {
                        commit,
                        response: Some(response),
                    });
                }
                StateProjection::Committing { commit, response } => {
                    let commit = ready!(commit.as_mut().poll(cx));
                    let response = response.take().unwrap_or_default();
                    return Poll::Ready(Ok(apply(commit, response)));
                }
            }
        }
    }
}

/// Applies a commit to the response: replacement status, cookie and cache headers.
fn apply<B: Default>(commit: Commit, response: Response<B>) -> Response<B> {
    let mut response = match commit.replace_status {
        Some(status) => {
            if let Some(error) = &commit.error {
                tracing::warn!(target: "sessio", %error, status = status.as_u16(), "session save failed; response replaced");
            }
            let mut replaced = Response::new(B::default());
            *replaced.status_mut() = status;
            replaced
        }
        None => response,
    };
    let headers = response.headers_mut();
    if let Some(cookie) = commit.set_cookie {
        headers.append(SET_COOKIE, cookie);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if commit.accessed {
        add_vary_cookie(headers);
    }
    response
}

fn add_vary_cookie(headers: &mut HeaderMap) {
    let already = headers.get_all(VARY).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|name| name.trim() == "*" || name.trim().eq_ignore_ascii_case("cookie"))
        })
    });
    if !already {
        headers.append(VARY, HeaderValue::from_static("Cookie"));
    }
}
