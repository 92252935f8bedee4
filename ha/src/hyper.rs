//! The hyper adapter (feature `hyper`): the standard stack in front of a
//! shared `hyper_util` client, each endpoint addressed by rewriting the
//! request's authority.
//!
//! You send `http::Request<B>` with your own body type `B` and a URI whose
//! path (and, optionally, logical host) you choose; the stack picks an
//! endpoint and the transport rewrites the URI's authority to that
//! endpoint's address, keeping your host in the `Host` header. A failure to
//! connect counts as never sent, so any method may be retried on another
//! endpoint; a body is kept (up to `max_replay_bytes`) while the first
//! attempt streams it, so a retry sends it intact.
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let client = ha::hyper::builder::<Full<Bytes>>()
//!     .endpoints(["10.0.0.1:8080".parse::<std::net::SocketAddr>()?, "10.0.0.2:8080".parse()?])
//!     .build()?;
//! let req = http::Request::get("http://inventory/items").body(Full::new(Bytes::new()))?;
//! let res = client.oneshot(req).await?;
//! println!("{}", res.status());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ha_core::classify::HttpClassifier;
use ha_core::NotSent;
use ha_retry::body::ReplayBody;
use http::uri::Authority;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::{Builder, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use pin_project::pin_project;
use tower::{BoxError, Service};

use crate::addressing::{address, authority_of};
use crate::stack::{Stack, StackBuilder};
use crate::target::{Target, Transport};

/// The standard stack over hyper for requests with body `B`: `Clone`,
/// `Send + Sync + 'static`, a `tower::Service<http::Request<B>>` answering
/// `http::Response<hyper::body::Incoming>` or an [`ha::Error`](crate::Error).
pub type Client<B, Conn = HttpConnector> = Stack<HyperTransport<B, Conn>, Request<B>, HttpClassifier>;

/// A builder of the standard stack over a default `hyper_util` client
/// (HTTP/1, pooled, on tokio), with HTTP classification in every layer.
pub fn builder<B>() -> StackBuilder<HyperTransport<B>, Request<B>, HttpClassifier>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Stack::builder(HyperTransport::new())
}

/// A shared `hyper_util` legacy client, pointed at each endpoint in turn.
pub struct HyperTransport<B, Conn = HttpConnector> {
    client: HyperClient<Conn, ReplayBody<B>>,
}

impl<B, Conn: Clone> Clone for HyperTransport<B, Conn> {
    fn clone(&self) -> Self {
        HyperTransport { client: self.client.clone() }
    }
}

impl<B, Conn> fmt::Debug for HyperTransport<B, Conn> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperTransport").finish_non_exhaustive()
    }
}

impl<B> HyperTransport<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A transport over a client with hyper_util's default settings.
    pub fn new() -> Self {
        Self::from_builder(&HyperClient::builder(TokioExecutor::new()))
    }

    /// A transport over a client built by `builder` (pool sizes, idle
    /// timeouts, HTTP/2), with an `HttpConnector`.
    pub fn from_builder(builder: &Builder) -> Self {
        HyperTransport { client: builder.build_http() }
    }
}

impl<B> Default for HyperTransport<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<B, Conn> HyperTransport<B, Conn> {
    /// A transport over your own client (your connector: TLS, a proxy).
    /// Its body type is the stack's replayable wrapper of yours:
    /// `builder.build::<_, ha::retry::body::ReplayBody<B>>(connector)`.
    pub fn with_client(client: HyperClient<Conn, ReplayBody<B>>) -> Self {
        HyperTransport { client }
    }

    /// The stack builder over this transport.
    pub fn stack(self) -> StackBuilder<Self, Request<B>, HttpClassifier>
    where
        Self: Transport<Request<ReplayBody<B>>>,
        B: Body + Send + 'static,
    {
        Stack::builder(self)
    }
}

impl<B, Conn> Transport<Request<ReplayBody<B>>> for HyperTransport<B, Conn>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    Conn: Connect + Clone + Send + Sync + 'static,
{
    type Response = Response<Incoming>;
    type Service = HyperEndpoint<B, Conn>;
    type Future = ResponseFuture;

    fn connect(&self, target: &Target) -> HyperEndpoint<B, Conn> {
        HyperEndpoint(Arc::new(Addressed { client: self.client.clone(), authority: authority_of(target.addr) }))
    }
}

/// The client of one endpoint: the shared client, addressed at it.
///
/// The balancer clones an endpoint's client into every request sent to it:
/// behind one `Arc`, that is one reference count, not the half a dozen of
/// a `hyper_util` client, and the request's future stays small.
pub struct HyperEndpoint<B, Conn = HttpConnector>(Arc<Addressed<B, Conn>>);

struct Addressed<B, Conn> {
    client: HyperClient<Conn, ReplayBody<B>>,
    authority: Authority,
}

impl<B, Conn> Clone for HyperEndpoint<B, Conn> {
    fn clone(&self) -> Self {
        HyperEndpoint(self.0.clone())
    }
}

impl<B, Conn> fmt::Debug for HyperEndpoint<B, Conn> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperEndpoint").field("authority", &self.0.authority).finish_non_exhaustive()
    }
}

impl<B, Conn> Service<Request<ReplayBody<B>>> for HyperEndpoint<B, Conn>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    Conn: Connect + Clone + Send + Sync + 'static,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = ResponseFuture;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReplayBody<B>>) -> ResponseFuture {
        address(&mut req, &self.0.authority);
        // The layers above have read the attempt context; hyper never does.
        // Its map goes back to this thread's next request instead of being
        // freed here and allocated again there.
        ha_core::attempt::release_extensions(&mut req);
        ResponseFuture { inner: self.0.client.request(req) }
    }
}

/// The response future of a [`HyperEndpoint`]: connection failures come
/// out as [`NotSent`].
#[pin_project]
pub struct ResponseFuture {
    #[pin]
    inner: hyper_util::client::legacy::ResponseFuture,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(|e| if e.is_connect() { NotSent::new(e.into()).into() } else { e.into() })
    }
}
