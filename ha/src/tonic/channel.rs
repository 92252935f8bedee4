//! [`Channel`]: a stack as the transport of a generated tonic client.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ha_core::Classify;
use http::{Request, Response};
use tonic::Status;
use tower::{BoxError, Service};

use super::classify::GrpcClassifier;
use super::status::status_of;
use super::transport::TonicTransport;
use crate::config::ConfigError;
use crate::request::StackRequest;
use crate::stack::{Stack, StackBuilder};

/// The standard stack over [`TonicTransport`] for gRPC requests.
pub type TonicStack<C = GrpcClassifier> = Stack<TonicTransport, Request<tonic::body::Body>, C>;

type Sent = <Request<tonic::body::Body> as StackRequest>::Sent;

/// A [`TonicStack`] whose errors are `tonic::Status`es: what you hand to
/// a generated client, `GreeterClient::new(channel)`, in place of a
/// `tonic::transport::Channel`.
///
/// `Clone` (clones share the stack), `Send + Sync + 'static`. A stack's
/// error becomes a `Status` by [`status_of`](super::status_of).
pub struct Channel<C = GrpcClassifier> {
    stack: TonicStack<C>,
}

impl<C: Clone> Clone for Channel<C> {
    fn clone(&self) -> Self {
        Channel { stack: self.stack.clone() }
    }
}

impl<C> fmt::Debug for Channel<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("stack", &self.stack).finish()
    }
}

impl<C> Channel<C> {
    /// The channel over `stack`.
    pub fn new(stack: TonicStack<C>) -> Self {
        Channel { stack }
    }

    /// The stack, for its statistics ([`Stack::endpoint_stats`],
    /// [`Stack::retry_stats`]).
    pub fn stack(&self) -> &TonicStack<C> {
        &self.stack
    }

    /// The stack itself.
    pub fn into_stack(self) -> TonicStack<C> {
        self.stack
    }
}

impl<C> From<TonicStack<C>> for Channel<C> {
    fn from(stack: TonicStack<C>) -> Self {
        Channel::new(stack)
    }
}

impl<C> StackBuilder<TonicTransport, Request<tonic::body::Body>, C> {
    /// Builds the stack and wraps it in a [`Channel`] for a generated
    /// tonic client. Fails when the configuration is invalid.
    pub fn build_channel(self) -> Result<Channel<C>, ConfigError>
    where
        C: Classify<Sent, Response<tonic::body::Body>, BoxError> + Clone + Send + Sync + 'static,
    {
        self.build().map(Channel::new)
    }
}

impl<C> Service<Request<tonic::body::Body>> for Channel<C>
where
    C: Classify<Sent, Response<tonic::body::Body>, BoxError> + Clone + Send + Sync + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Status;
    type Future = ResponseFuture;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.stack.poll_ready(cx).map_err(status_of)
    }

    #[inline]
    fn call(&mut self, req: Request<tonic::body::Body>) -> ResponseFuture {
        let fut = self.stack.call(req);
        ResponseFuture { inner: Box::pin(async move { fut.await.map_err(status_of) }) }
    }
}

/// The response future of a [`Channel`].
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, Status>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<tonic::body::Body>, Status>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Clone + Send + Sync + 'static>() {}

    fn grpc_transport<T>()
    where
        T: tonic::client::GrpcService<tonic::body::Body>,
        T::Error: Into<BoxError>,
        T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    {
    }

    #[test]
    fn a_channel_is_what_generated_clients_take() {
        shareable::<Channel>();
        shareable::<TonicStack>();
        grpc_transport::<Channel>();
        let _ = tonic::client::Grpc::new(crate::tonic::builder().build_channel().expect("the default config is valid"));
    }
}
