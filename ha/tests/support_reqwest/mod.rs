//! Real HTTP/1 servers on loopback for the reqwest adapter's tests.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What a server answers.
#[derive(Clone, Copy, Debug)]
pub enum Behavior {
    /// `200` with `"<name> <host header>"`.
    Name(&'static str),
    /// `200` with the request's body.
    Echo,
    /// As `Name`, but every other request (counted in the atomic) is
    /// answered `503 Service Unavailable`: a gray failure.
    HalfUnavailable(&'static str, &'static std::sync::atomic::AtomicU64),
}

/// A running server; [`Server::crash`] kills it.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `behavior` on an ephemeral loopback port.
    pub async fn start(behavior: Behavior) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        // The connections live in a JoinSet owned by the accept loop: aborting
        // the loop drops the listener (the port refuses) and aborts every
        // connection (open connections drop).
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            conns.spawn(serve(stream, behavior));
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Server { addr, task }
    }

    /// Kills the server and waits until its listener and connections are gone.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn serve(stream: TcpStream, behavior: Behavior) {
    let service = service_fn(move |req: Request<Incoming>| answer(req, behavior));
    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

async fn answer(req: Request<Incoming>, behavior: Behavior) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Behavior::HalfUnavailable(_, count) = behavior {
        if count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 0 {
            return Ok(Response::builder().status(503).body(Full::default()).expect("a valid response"));
        }
    }
    let body = match behavior {
        Behavior::Name(name) | Behavior::HalfUnavailable(name, _) => {
            let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("-");
            Bytes::from(format!("{name} {host}"))
        }
        Behavior::Echo => match req.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return Ok(Response::builder().status(400).body(Full::default()).expect("a valid response")),
        },
    };
    Ok(Response::new(Full::new(body)))
}
