//! A gRPC greeter to call: `helloworld.Greeter`'s messages, client and
//! server written the way tonic-build generates them (no protoc needed),
//! and a [`Server`] on loopback that can be stopped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tower::BoxError;

use proto::{GreeterServer, HelloReply, HelloRequest};

/// A greeter server on a loopback ephemeral port.
pub struct Server {
    /// Its name, in its greetings.
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts a greeter named `name` on an ephemeral loopback port.
    pub async fn start(name: &'static str) -> Result<Server, BoxError> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let greeter =
            GreeterServer::new(move |req: HelloRequest| HelloReply { message: format!("{name} greets {}", req.name) });
        let task = tokio::spawn(async move {
            let signal = async {
                let _ = stopped.await;
            };
            let served = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(greeter, TcpIncoming::from(listener), signal)
                .await;
            if let Err(e) = served {
                eprintln!("{name}: {e}");
            }
        });
        Ok(Server { name, addr, stop, task })
    }

    /// Stops accepting, closes the connections, and waits until it is done.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// `helloworld.proto`'s `Greeter`, as tonic-build would generate it.
pub mod proto {
    use super::*;
    use bytes::Bytes;

    /// `helloworld.HelloRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HelloRequest {
        /// Who to greet.
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// `helloworld.HelloReply`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HelloReply {
        /// The greeting.
        #[prost(string, tag = "1")]
        pub message: String,
    }

    const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

    /// The client of `Greeter`, over any gRPC transport.
    #[derive(Debug, Clone)]
    pub struct GreeterClient<T> {
        inner: tonic::client::Grpc<T>,
    }

    impl<T> GreeterClient<T>
    where
        T: tonic::client::GrpcService<tonic::body::Body>,
        T::Error: Into<BoxError>,
        T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
        <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    {
        /// A client over `inner`: a tonic channel, or an `ha::tonic::Channel`.
        pub fn new(inner: T) -> Self {
            GreeterClient { inner: tonic::client::Grpc::new(inner) }
        }

        /// The `SayHello` call.
        pub async fn say_hello(&mut self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
            self.inner.ready().await.map_err(|e| Status::unknown(format!("Service was not ready: {}", e.into())))?;
            let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
            let path = http::uri::PathAndQuery::from_static(SAY_HELLO);
            self.inner.unary(request, path, codec).await
        }
    }

    /// The server of `Greeter`, answering with `greet`.
    pub struct GreeterServer<F> {
        greet: Arc<F>,
    }

    impl<F> Clone for GreeterServer<F> {
        fn clone(&self) -> Self {
            GreeterServer { greet: self.greet.clone() }
        }
    }

    impl<F> GreeterServer<F> {
        /// A server answering with `greet`.
        pub fn new(greet: F) -> Self {
            GreeterServer { greet: Arc::new(greet) }
        }
    }

    impl<F> tonic::server::NamedService for GreeterServer<F> {
        const NAME: &'static str = "helloworld.Greeter";
    }

    type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

    impl<F> tower::Service<http::Request<tonic::body::Body>> for GreeterServer<F>
    where
        F: Fn(HelloRequest) -> HelloReply + Send + Sync + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
            if req.uri().path() != SAY_HELLO {
                return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
            }
            let greet = self.greet.clone();
            Box::pin(async move {
                let method = tower::service_fn(move |r: Request<HelloRequest>| {
                    std::future::ready(Ok::<_, Status>(Response::new(greet(r.into_inner()))))
                });
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<HelloReply, HelloRequest>::default());
                Ok(grpc.unary(method, req).await)
            })
        }
    }
}
