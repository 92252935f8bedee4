//! Test support: a Greeter service written the way tonic-build generates
//! it (no protoc: the messages derive `prost::Message`), and test servers
//! on loopback that can crash.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::StreamBody;
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::Status;
use tower::{BoxError, Service};

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

/// The path of `Greeter.SayHello`.
pub const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

/// The client tonic-build generates for `service Greeter`.
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
    pub fn new(inner: T) -> Self {
        GreeterClient { inner: tonic::client::Grpc::new(inner) }
    }

    pub async fn say_hello(
        &mut self,
        request: impl tonic::IntoRequest<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, Status> {
        self.inner.ready().await.map_err(|e| Status::unknown(format!("Service was not ready: {}", e.into())))?;
        let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
        let path = http::uri::PathAndQuery::from_static(SAY_HELLO);
        let mut req = request.into_request();
        req.extensions_mut().insert(tonic::GrpcMethod::new("helloworld.Greeter", "SayHello"));
        self.inner.unary(req, path, codec).await
    }
}

/// What a Greeter server does with a request.
pub trait Greeter: Send + Sync + 'static {
    fn say_hello(&self, req: HelloRequest) -> Result<HelloReply, Status>;
}

impl<F> Greeter for F
where
    F: Fn(HelloRequest) -> Result<HelloReply, Status> + Send + Sync + 'static,
{
    fn say_hello(&self, req: HelloRequest) -> Result<HelloReply, Status> {
        self(req)
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// The server tonic-build generates for `service Greeter`.
pub struct GreeterServer<G> {
    inner: Arc<G>,
}

impl<G> Clone for GreeterServer<G> {
    fn clone(&self) -> Self {
        GreeterServer { inner: self.inner.clone() }
    }
}

impl<G: Greeter> GreeterServer<G> {
    pub fn new(greeter: G) -> Self {
        GreeterServer { inner: Arc::new(greeter) }
    }
}

impl<G> NamedService for GreeterServer<G> {
    const NAME: &'static str = "helloworld.Greeter";
}

impl<G, B> Service<Request<B>> for GreeterServer<G>
where
    G: Greeter,
    B: http_body::Body + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.uri().path() != SAY_HELLO {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            let method = tower::service_fn(move |r: tonic::Request<HelloRequest>| {
                let res = inner.say_hello(r.into_inner()).map(tonic::Response::new);
                std::future::ready(res)
            });
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<HelloReply, HelloRequest>::default());
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// A greeter that answers with its own name.
pub fn greeter(name: &'static str) -> GreeterServer<impl Greeter> {
    GreeterServer::new(move |req: HelloRequest| Ok(HelloReply { message: format!("{name} greets {}", req.name) }))
}

/// A greeter that answers every call with a trailers-only `UNAVAILABLE`.
pub fn unavailable_greeter() -> GreeterServer<impl Greeter> {
    GreeterServer::new(|_req: HelloRequest| Err(Status::unavailable("draining")))
}

/// A raw service whose answer is HTTP 200 with a reply message, and whose
/// failure status `code` comes only in the trailers.
pub fn trailers_failure(
    code: i32,
) -> impl Service<
    Request<tonic::body::Body>,
    Response = Response<tonic::body::Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |_req: Request<tonic::body::Body>| {
        let reply = HelloReply { message: "from a sick server".into() }.encode_to_vec();
        let mut frame = BytesMut::with_capacity(5 + reply.len());
        frame.put_u8(0);
        frame.put_u32(u32::try_from(reply.len()).unwrap_or(u32::MAX));
        frame.put_slice(&reply);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", code.into());
        trailers.insert("grpc-message", http::HeaderValue::from_static("sick"));
        let frames = futures_util::stream::iter([
            Ok::<_, Infallible>(Frame::data(frame.freeze())),
            Ok(Frame::trailers(trailers)),
        ]);
        let res = Response::builder()
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::new(StreamBody::new(frames)))
            .unwrap_or_default();
        std::future::ready(Ok(res))
    })
}

/// A server on a loopback ephemeral port that can crash: its task and every
/// connection it accepted die at once, and its port refuses connections.
pub struct TestServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl TestServer {
    pub async fn start<S, RB>(svc: S) -> TestServer
    where
        S: Service<Request<tonic::body::Body>, Response = Response<RB>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        RB: http_body::Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let conns = Arc::new(Mutex::new(Vec::new()));
        let kept = conns.clone();
        let incoming = futures_util::stream::unfold(listener, move |listener| {
            let kept = kept.clone();
            async move {
                let conn = listener.accept().await.and_then(|(stream, _)| {
                    // Keep a handle on the socket, to cut it when crashing.
                    let std = stream.into_std()?;
                    kept.lock().unwrap().push(std.try_clone()?);
                    TcpStream::from_std(std)
                });
                Some((conn, listener))
            }
        });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder().serve_with_incoming(svc, incoming).await;
        });
        TestServer { addr, task, conns }
    }

    /// Kills the server: its task (and listener) is gone and every
    /// connection is cut, as if the process died.
    pub async fn crash(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A greeter that answers `UNAVAILABLE` with `grpc-retry-pushback-ms: pushback`.
pub fn pushback_greeter(pushback: &'static str) -> GreeterServer<impl Greeter> {
    GreeterServer::new(move |_req: HelloRequest| {
        let mut status = Status::unavailable("overloaded");
        status.metadata_mut().insert("grpc-retry-pushback-ms", tonic::metadata::MetadataValue::from_static(pushback));
        Err(status)
    })
}
