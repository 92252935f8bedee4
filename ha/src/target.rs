//! Where a stack sends requests: the [`Target`] of each endpoint, and the
//! [`Transport`] that makes a client for one.
//!
//! Every source of endpoints (a static list, a `Discover`, a membership
//! `Cluster`, DNS) describes endpoints as
//! `Target`s; the stack turns each into a client with its transport and
//! wraps that in a circuit breaker and a per-try timeout.
//!
//! ```
//! use std::net::SocketAddr;
//! use ha::Target;
//!
//! let primary = Target::new(SocketAddr::from(([10, 0, 0, 1], 8080))).zone("eu-1a");
//! let standby = Target::new(SocketAddr::from(([10, 0, 1, 1], 8080))).zone("eu-1b").tier(1);
//! assert_eq!((primary.tier, standby.tier), (0, 1));
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use tower::{BoxError, Service};

/// One endpoint a stack may send requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Target {
    /// The address the transport connects to.
    pub addr: SocketAddr,
    /// Priority tier: traffic stays on the lowest tier while it is healthy
    /// and spills to the next ones as it degrades. Default 0.
    pub tier: u8,
    /// The zone (or region, rack) the endpoint runs in, if known.
    pub zone: Option<Arc<str>>,
    /// Relative weight for weighted pickers, 1 to 1000. Default 1.
    pub weight: u32,
}

impl Target {
    /// An endpoint at `addr`, tier 0, weight 1, no zone.
    pub fn new(addr: SocketAddr) -> Self {
        Target { addr, tier: 0, zone: None, weight: 1 }
    }

    /// Sets the priority tier.
    pub fn tier(mut self, tier: u8) -> Self {
        self.tier = tier;
        self
    }

    /// Sets the zone: a label for stats and events. It routes nothing by
    /// itself; express zone preference with [`tier`](Self::tier).
    pub fn zone(mut self, zone: impl Into<Arc<str>>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the weight (clamped to 1..=1000).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.clamp(1, 1000);
        self
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target::new(addr)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (tier {}", self.addr, self.tier)?;
        if let Some(z) = &self.zone {
            write!(f, ", zone {z}")?;
        }
        f.write_str(")")
    }
}

/// Makes the client of one endpoint: the innermost service of a stack.
///
/// The adapters implement it (`ha::hyper::HyperTransport`,
/// `ha::tonic::TonicTransport`, `ha::reqwest::ReqwestTransport`, behind
/// their features); any closure
/// `Fn(&Target) -> S` where `S` is a cloneable tower service does too.
///
/// ```
/// use ha::{Target, Transport};
/// use tower::{service_fn, BoxError};
///
/// let transport = |target: &Target| {
///     let addr = target.addr;
///     service_fn(move |req: ha::core::WithAttempt<String>| async move {
///         Ok::<_, BoxError>(format!("{addr} answered {}", req.request))
///     })
/// };
/// fn check<T: Transport<ha::core::WithAttempt<String>>>(_: &T) {}
/// check(&transport);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an ha transport for requests of type `{Req}`",
    label = "not a transport for `{Req}`",
    note = "a transport makes the client of one endpoint: use an adapter (`ha::hyper::HyperTransport`, `ha::tonic::TonicTransport`, `ha::reqwest::ReqwestTransport`) or a closure `|target: &ha::Target| client_for(target.addr)`",
    note = "the client must be a `tower::Service<{Req}>` that is `Clone + Send + Sync + 'static`, with an error that converts into `tower::BoxError` and a `Send` future"
)]
pub trait Transport<Req>: Clone + Send + Sync + 'static {
    /// What the endpoint answers.
    type Response: Send + 'static;
    /// The client of one endpoint.
    type Service: Service<Req, Response = Self::Response, Error = BoxError, Future = Self::Future>
        + Clone
        + Send
        + Sync
        + 'static;
    /// The client's response future.
    type Future: std::future::Future<Output = Result<Self::Response, BoxError>> + Send + 'static;

    /// The client of the endpoint `target` describes.
    fn connect(&self, target: &Target) -> Self::Service;

    /// The scope its protocol gives a server-requested retry delay, when the
    /// protocol fixes one: the stack applies it whatever the retry section
    /// says. Default `None` (the configured
    /// [`retry_after_scope`](ha_retry::RetryConfig::retry_after_scope));
    /// `ha::tonic` fixes gRFC A6's [`Request`](ha_retry::RetryAfterScope::Request).
    fn retry_after_scope(&self) -> Option<ha_retry::RetryAfterScope> {
        None
    }
}

impl<F, S, Req> Transport<Req> for F
where
    F: Fn(&Target) -> S + Clone + Send + Sync + 'static,
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Service = BoxErrors<S>;
    type Future = futures_util::future::MapErr<S::Future, fn(S::Error) -> BoxError>;

    fn connect(&self, target: &Target) -> Self::Service {
        BoxErrors(self(target))
    }
}

/// A service whose errors are boxed into [`BoxError`]; what a closure
/// transport's clients are wrapped in.
#[derive(Debug, Clone)]
pub struct BoxErrors<S>(pub S);

impl<S, Req> Service<Req> for BoxErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures_util::future::MapErr<S::Future, fn(S::Error) -> BoxError>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        use futures_util::TryFutureExt;
        self.0.call(req).map_err(Into::into as fn(S::Error) -> BoxError)
    }
}
