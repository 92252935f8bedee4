//! The tonic adapter (feature `tonic`): the standard stack as the
//! transport of any generated tonic client.
//!
//! A [`Channel`] takes the place of a `tonic::transport::Channel`: hand it
//! to `GreeterClient::new`. Each call is balanced over your endpoints (one
//! lazily connected tonic channel each, see [`TonicTransport`]), retried on
//! another endpoint when it fails with a retryable status (gRFC A6:
//! `UNAVAILABLE` by default, `grpc-retry-pushback-ms` honoured) or never
//! reached a server, and failing endpoints are cut off by their breaker and
//! outlier ejection. Classification is [`GrpcClassifier`]'s; a status that
//! only comes in the trailers is seen too, because the transport completes
//! a call when its trailers arrive. A stack's own error reaches the client
//! as a `tonic::Status` ([`status_of`]).
//!
//! # Trailers and streams
//!
//! The breaker, outlier ejection, latency tracking and the retry layer
//! classify a call when its response future completes. So that a status
//! sent only in the trailers (after the reply messages) is seen, the
//! transport completes a call whose `grpc-status` is not in its headers only
//! once the trailers arrive, keeping the frames read until then (at most
//! [`DEFAULT_MAX_TRAILER_WAIT_BYTES`], see
//! [`TonicTransport::max_trailer_wait_bytes`]) and replaying them to the
//! caller. A unary call loses nothing by this. A server stream is delivered
//! once it ends or outgrows the cap; past the cap its final status is not
//! classified (the call counts as a success). For long-lived streams, build
//! the stack with `TonicTransport::new().max_trailer_wait_bytes(0).stack()`.
//!
//! A stack built outside a tokio runtime is fine: each endpoint's tonic
//! channel is made on its first call.
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let addrs: Vec<SocketAddr> = vec!["10.0.0.1:50051".parse()?, "10.0.0.2:50051".parse()?];
//! let channel = ha::tonic::builder().endpoints(addrs).build_channel()?;
//! // let mut client = GreeterClient::new(channel.clone()); // any generated client
//! let mut grpc = tonic::client::Grpc::new(channel.clone()); // what a generated client wraps
//! grpc.ready().await?;
//! for endpoint in channel.stack().endpoint_stats() {
//!     println!("{endpoint:?}");
//! }
//! # Ok(())
//! # }
//! ```

mod body;
mod channel;
mod classify;
mod status;
mod transport;

pub use body::DEFAULT_MAX_TRAILER_WAIT_BYTES;
pub use channel::{Channel, ResponseFuture, TonicStack};
pub use classify::{
    CodeSet, GrpcClassifier, GrpcStatus, Pushback, DEFAULT_RETRYABLE, DEFAULT_UNHEALTHY, GRPC_RETRY_PUSHBACK_MS,
    GRPC_STATUS,
};
pub use status::{code_of, status_of};
pub use transport::{EndpointFuture, TonicEndpoint, TonicTransport};

use crate::stack::{Stack, StackBuilder};

/// A builder of the standard stack over a [`TonicTransport`] with tonic's
/// default channel settings, classified by [`GrpcClassifier`]; finish with
/// [`build_channel`](StackBuilder::build_channel).
pub fn builder() -> StackBuilder<TonicTransport, http::Request<tonic::body::Body>, GrpcClassifier> {
    TonicTransport::new().stack()
}

impl TonicTransport {
    /// The stack builder over this transport, classified by
    /// [`GrpcClassifier`].
    pub fn stack(self) -> StackBuilder<TonicTransport, http::Request<tonic::body::Body>, GrpcClassifier> {
        Stack::builder(self).classifier(GrpcClassifier::new())
    }
}
