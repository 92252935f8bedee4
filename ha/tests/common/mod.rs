//! Real hyper servers (HTTP/1, or HTTP/2 with prior knowledge) on
//! loopback that tests crash, restart and degrade.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with the server's name (GET) or the request body (POST).
    Healthy = 0,
    /// Every other request answers 503.
    HalfUnavailable = 1,
}

struct State {
    name: String,
    mode: AtomicU8,
    served: AtomicU64,
}

/// A server that can be crashed (listener and every open connection gone)
/// and restarted on the same port.
pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    http2: bool,
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl TestServer {
    /// Starts a server on an ephemeral loopback port.
    pub async fn start(name: &str) -> Arc<TestServer> {
        Self::start_with(name, false).await
    }

    /// Starts an HTTP/2 server (prior knowledge, no TLS) on an ephemeral
    /// loopback port.
    pub async fn start_http2(name: &str) -> Arc<TestServer> {
        Self::start_with(name, true).await
    }

    async fn start_with(name: &str, http2: bool) -> Arc<TestServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind loopback");
        let state = Arc::new(State { name: name.to_owned(), mode: AtomicU8::new(0), served: AtomicU64::new(0) });
        let server = TestServer { addr: listener.local_addr().unwrap(), state, http2, tasks: Mutex::new(None) };
        server.serve(listener);
        Arc::new(server)
    }

    fn serve(&self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let (state, http2) = (self.state.clone(), self.http2);
        // Owned by the accept loop: aborting it drops the set, which aborts
        // every connection.
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = state.clone();
                conns.lock().unwrap().spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let io = TokioIo::new(stream);
                    let _ = if http2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await
                    } else {
                        hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await
                    };
                });
            }
        });
        *self.tasks.lock().unwrap() = Some(tasks);
    }

    /// Crashes the server: the listener closes and every open connection drops.
    pub async fn kill(&self) {
        let tasks = self.tasks.lock().unwrap().take();
        if let Some(mut tasks) = tasks {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Starts serving again on the same port. The port may be held for a
    /// moment (a connection that took it as its source port meanwhile):
    /// retried for a bounded time.
    pub async fn restart(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot serve on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Requests this server answered, whatever the status.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = state.served.fetch_add(1, Ordering::SeqCst);
    let method = req.method().clone();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if state.mode.load(Ordering::SeqCst) == Mode::HalfUnavailable as u8 && n.is_multiple_of(2) {
        let mut res = Response::new(Full::new(Bytes::from_static(b"unavailable")));
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(res);
    }
    let answer = if method == hyper::Method::POST { body } else { Bytes::from(state.name.clone()) };
    Ok(Response::new(Full::new(answer)))
}

/// A loopback port nothing listens on (bound, then released).
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    listener.local_addr().unwrap()
}
