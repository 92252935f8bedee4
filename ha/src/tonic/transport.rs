//! The tonic transport: one lazily connected `tonic::transport::Channel`
//! per endpoint.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use ha_core::NotSent;
use ha_retry::body::ReplayBody;
use http::{Request, Response};
use tonic::transport::Endpoint;
use tower::{BoxError, Service, ServiceExt};

use super::body::{until_trailers, DEFAULT_MAX_TRAILER_WAIT_BYTES};
use crate::target::{Target, Transport};

type MakeEndpoint = Arc<dyn Fn(&Target) -> Result<Endpoint, tonic::transport::Error> + Send + Sync>;

/// Makes a `tonic::transport::Channel` per endpoint (HTTP/2, one
/// connection, reconnecting), connected on the first call.
///
/// Connection failures (refused, unreachable) and a channel that cannot
/// take the call come out as [`NotSent`]. For a response whose
/// `grpc-status` is not in its headers, the call completes only when the
/// trailers arrive (see [`max_trailer_wait_bytes`](Self::max_trailer_wait_bytes)),
/// so the breaker, outlier ejection and latency tracking see the final
/// status.
#[derive(Clone)]
pub struct TonicTransport {
    make: MakeEndpoint,
    max_wait_bytes: usize,
}

impl fmt::Debug for TonicTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonicTransport").field("max_trailer_wait_bytes", &self.max_wait_bytes).finish_non_exhaustive()
    }
}

impl Default for TonicTransport {
    fn default() -> Self {
        TonicTransport::new()
    }
}

impl TonicTransport {
    /// Plain-text HTTP/2 to each endpoint's address, tonic's default
    /// channel settings.
    pub fn new() -> Self {
        TonicTransport::with_endpoint(|target| Endpoint::from_shared(format!("http://{}", target.addr)))
    }

    /// Each endpoint's channel configured by `make` (TLS, timeouts,
    /// keep-alive, window sizes): it returns the `Endpoint` of a target.
    pub fn with_endpoint(
        make: impl Fn(&Target) -> Result<Endpoint, tonic::transport::Error> + Send + Sync + 'static,
    ) -> Self {
        TonicTransport { make: Arc::new(make), max_wait_bytes: DEFAULT_MAX_TRAILER_WAIT_BYTES }
    }

    /// How many response bytes are kept while waiting for the trailers
    /// (default 4 MiB). A stream that sends more completes as of its
    /// headers: its final status is not seen by the breaker and ejection.
    /// 0 does not wait at all (long server streams; every response without
    /// `grpc-status` in its headers then counts as a success).
    pub fn max_trailer_wait_bytes(mut self, bytes: usize) -> Self {
        self.max_wait_bytes = bytes;
        self
    }
}

impl Transport<Request<ReplayBody<tonic::body::Body>>> for TonicTransport {
    type Response = Response<tonic::body::Body>;
    type Service = TonicEndpoint;
    type Future = EndpointFuture;

    fn connect(&self, target: &Target) -> TonicEndpoint {
        let endpoint = (self.make)(target).map_err(|e| Arc::new(e.to_string()));
        TonicEndpoint {
            lazy: Arc::new(LazyChannel { endpoint, channel: OnceLock::new() }),
            max_wait_bytes: self.max_wait_bytes,
        }
    }

    /// gRFC A6: a server's pushback delays the call's next retry, wherever
    /// the balancer sends it.
    fn retry_after_scope(&self) -> Option<ha_retry::RetryAfterScope> {
        Some(ha_retry::RetryAfterScope::Request)
    }
}

/// An endpoint's channel, connected on first use.
struct LazyChannel {
    endpoint: Result<Endpoint, Arc<String>>,
    channel: OnceLock<tonic::transport::Channel>,
}

/// The client of one endpoint: its tonic channel, made on the first call
/// (inside the runtime, so a stack may be built outside one).
#[derive(Clone)]
pub struct TonicEndpoint {
    lazy: Arc<LazyChannel>,
    max_wait_bytes: usize,
}

impl fmt::Debug for TonicEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.lazy.endpoint.as_ref().map(|e| e.uri().to_string());
        f.debug_struct("TonicEndpoint").field("uri", &uri).finish_non_exhaustive()
    }
}

/// The endpoint's address was not a valid channel `Endpoint`.
#[derive(Debug)]
struct BadEndpoint(Arc<String>);

impl fmt::Display for BadEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid endpoint: {}", self.0)
    }
}

impl std::error::Error for BadEndpoint {}

impl Service<Request<ReplayBody<tonic::body::Body>>> for TonicEndpoint {
    type Response = Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = EndpointFuture;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody<tonic::body::Body>>) -> EndpointFuture {
        let channel = match &self.lazy.endpoint {
            Ok(endpoint) => Ok(self.lazy.channel.get_or_init(|| endpoint.connect_lazy()).clone()),
            Err(e) => Err(BadEndpoint(e.clone())),
        };
        let max_wait_bytes = self.max_wait_bytes;
        EndpointFuture {
            inner: Box::pin(async move {
                let channel = channel.map_err(|e| NotSent::new(e.into()))?;
                let channel = channel.ready_oneshot().await.map_err(|e| NotSent::new(e.into()))?;
                let res = channel.oneshot(req.map(tonic::body::Body::new)).await.map_err(mark_not_sent)?;
                if max_wait_bytes == 0 || res.headers().contains_key(super::classify::GRPC_STATUS) {
                    return Ok(res);
                }
                until_trailers(res, max_wait_bytes).await
            }),
        }
    }
}

/// Wraps `err` in [`NotSent`] when its chain shows the connection was
/// never made.
fn mark_not_sent(err: tonic::transport::Error) -> BoxError {
    if never_connected(&err) {
        NotSent::new(err.into()).into()
    } else {
        err.into()
    }
}

fn never_connected(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable) {
                return true;
            }
        }
        if e.is::<NotSent>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The response future of a [`TonicEndpoint`].
pub struct EndpointFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, BoxError>> + Send>>,
}

impl fmt::Debug for EndpointFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointFuture").finish_non_exhaustive()
    }
}

impl Future for EndpointFuture {
    type Output = Result<Response<tonic::body::Body>, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_are_never_sent() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(never_connected(&refused));
        let wrapped: BoxError = NotSent::new(Box::new(std::io::Error::other("x"))).into();
        assert!(never_connected(&*wrapped));
        assert!(!never_connected(&std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
    }
}
