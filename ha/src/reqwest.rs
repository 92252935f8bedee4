//! The reqwest adapter (feature `reqwest`): the standard stack in front of
//! a shared `reqwest::Client`, each endpoint addressed by rewriting the
//! request's URL.
//!
//! You send `http::Request<B>` with your own body type `B` (a `String`, a
//! `reqwest::Body`, `http_body_util::Full<Bytes>`, any `http_body::Body +
//! Send + Unpin`) and a URI whose path (and, optionally, logical host) you
//! choose; the stack picks an endpoint and the transport points the URL at
//! that endpoint's address, keeping your host in the `Host` header, then
//! has your `reqwest::Client` execute it. The answer is an
//! `http::Response<reqwest::Body>`, so the stack sees its status: 5xx and
//! 429 count as failures and are retried when the method is idempotent.
//!
//! Errors: a failure to connect (`reqwest::Error::is_connect`) counts as
//! never sent ([`NotSent`]), so any method may be retried on another
//! endpoint, and a body is kept (up to `max_replay_bytes`) while the first
//! attempt streams it, so a retry sends it intact. reqwest's own timeouts
//! (`ClientBuilder::timeout`, `is_timeout()`) come out as the reqwest error
//! itself, reachable with [`Error::find`](crate::Error::find): a failure,
//! retried when the request is idempotent, like the stack's own per-try
//! timeout ([`AttemptTimedOut`](crate::core::AttemptTimedOut)), which is
//! the one to prefer: it is configured per stack and reported by kind.
//!
//! Every endpoint shares the one client and its connection pool. With a
//! TLS-enabled client an `https` URL keeps its scheme but is addressed at
//! the endpoint's IP, so certificates must be valid for it.
//!
//! ```no_run
//! use tower::ServiceExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let client: ha::reqwest::Client<String> = ha::reqwest::builder()
//!     .endpoints(["10.0.0.1:8080".parse::<std::net::SocketAddr>()?, "10.0.0.2:8080".parse()?])
//!     .build()?;
//! let req = http::Request::post("http://inventory/items").body(String::from("{\"sku\":42}"))?;
//! let res = client.oneshot(req).await?;
//! println!("{}", res.status());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use ha_core::sync::LockExt;
use std::task::{Context, Poll};

use bytes::Bytes;
use ha_core::classify::HttpClassifier;
use ha_core::NotSent;
use ha_retry::body::ReplayBody;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tower::{BoxError, Service};

use crate::addressing::{address, authority_of};
use crate::stack::{Stack, StackBuilder};
use crate::target::{Target, Transport};

/// The standard stack over reqwest for requests with body `B`: `Clone`,
/// `Send + Sync + 'static`, a `tower::Service<http::Request<B>>` answering
/// `http::Response<reqwest::Body>` or an [`ha::Error`](crate::Error).
pub type Client<B> = Stack<ReqwestTransport, Request<B>, HttpClassifier>;

/// A builder of the standard stack over `reqwest::Client::new()`, with HTTP
/// classification in every layer.
///
/// # Panics
///
/// As `reqwest::Client::new` does: when its TLS backend or resolver cannot
/// be initialised. Use [`ReqwestTransport::with_client`] with a client from
/// `reqwest::Client::builder().build()?` to handle that as an error.
pub fn builder<B>() -> StackBuilder<ReqwestTransport, Request<B>, HttpClassifier>
where
    B: Body + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Stack::builder(ReqwestTransport::new())
}

/// A shared `reqwest::Client`, pointed at each endpoint in turn.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// A transport over `reqwest::Client::new()`.
    ///
    /// # Panics
    ///
    /// As `reqwest::Client::new` does: when its TLS backend or resolver
    /// cannot be initialised.
    pub fn new() -> Self {
        ReqwestTransport { client: reqwest::Client::new() }
    }

    /// A transport over your own client (timeouts, pool settings, TLS,
    /// default headers).
    pub fn with_client(client: reqwest::Client) -> Self {
        ReqwestTransport { client }
    }

    /// The client every endpoint shares.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The stack builder over this transport, for requests with body `B`.
    pub fn stack<B>(self) -> StackBuilder<Self, Request<B>, HttpClassifier>
    where
        B: Body + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        Stack::builder(self)
    }
}

impl Default for ReqwestTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl From<reqwest::Client> for ReqwestTransport {
    fn from(client: reqwest::Client) -> Self {
        Self::with_client(client)
    }
}

impl<B> Transport<Request<ReplayBody<B>>> for ReqwestTransport
where
    B: Body + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<reqwest::Body>;
    type Service = ReqwestEndpoint;
    type Future = ResponseFuture;

    fn connect(&self, target: &Target) -> ReqwestEndpoint {
        ReqwestEndpoint { client: self.client.clone(), authority: authority_of(target.addr) }
    }
}

/// The client of one endpoint: the shared client, addressed at it.
#[derive(Clone, Debug)]
pub struct ReqwestEndpoint {
    client: reqwest::Client,
    authority: Authority,
}

impl ReqwestEndpoint {
    /// The `host:port` requests are sent to.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }
}

impl<B> Service<Request<ReplayBody<B>>> for ReqwestEndpoint
where
    B: Body + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<reqwest::Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReplayBody<B>>) -> ResponseFuture {
        address(&mut req, &self.authority);
        let req = req.map(|body| reqwest::Body::wrap(SyncBody(Mutex::new(body))));
        let state = match reqwest::Request::try_from(req) {
            Ok(req) => State::Sent(self.client.call(req)),
            Err(e) => State::Invalid(Some(e)),
        };
        ResponseFuture { state }
    }
}

type Pending = <reqwest::Client as Service<reqwest::Request>>::Future;

/// The response future of a [`ReqwestEndpoint`]: connection failures come
/// out as [`NotSent`], other errors as the `reqwest::Error`.
#[pin_project]
pub struct ResponseFuture {
    #[pin]
    state: State,
}

#[pin_project(project = StateProj)]
enum State {
    Sent(#[pin] Pending),
    // The request could not be made into a reqwest request (its URL).
    Invalid(Option<reqwest::Error>),
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<reqwest::Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sent(pending) => pending.poll(cx).map(|r| r.map(Response::from).map_err(sent_error)),
            StateProj::Invalid(err) => Poll::Ready(Err(match err.take() {
                Some(e) => e.into(),
                None => "ha::reqwest::ResponseFuture polled after completion".into(),
            })),
        }
    }
}

/// A connection failure is proof the request was never sent; anything else
/// (a timeout, a reset after sending) may have reached the server.
fn sent_error(err: reqwest::Error) -> BoxError {
    if err.is_connect() {
        NotSent::new(err.into()).into()
    } else {
        err.into()
    }
}

/// The stack's replayable body, made `Sync` as `reqwest::Body::wrap`
/// requires without requiring it of `B`: the body is only polled through
/// `&mut`, so the lock is never contended.
struct SyncBody<B>(Mutex<ReplayBody<B>>);

impl<B> Body for SyncBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let body = self.get_mut().0.get_mut().unwrap_or_else(PoisonError::into_inner);
        Pin::new(body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock_or_recover().is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock_or_recover().size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connections_are_never_sent() {
        // Bind then drop a listener: its port refuses connections.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let transport = ReqwestTransport::with_client(reqwest::Client::builder().no_proxy().build().unwrap());
        let mut endpoint =
            <ReqwestTransport as Transport<Request<ReplayBody<String>>>>::connect(&transport, &Target::new(addr));
        let req = Request::post("http://orders/new").body(ReplayBody::new(String::from("x"), 1024)).unwrap();
        let err = endpoint.call(req).await.unwrap_err();
        assert!(ha_core::error::never_sent(&*err), "{err}");
        assert!(err.is::<NotSent>());
    }

    #[tokio::test]
    async fn bodies_pass_through() {
        let replay = ReplayBody::new(String::from("hello"), 1024);
        let body = SyncBody(Mutex::new(replay.clone()));
        assert_eq!(body.size_hint().exact(), replay.size_hint().exact());
        assert!(!body.is_end_stream());
        let bytes = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
        assert_eq!(bytes, "hello");
    }
}
