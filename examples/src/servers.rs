//! Small hyper HTTP/1 servers on loopback for the examples to call, which
//! can be stopped (listener and connections gone) to show a failover.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A running server; dropping it or calling [`Server::stop`] stops it.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl Server {
    /// Starts a server on an ephemeral loopback port that answers every
    /// request with `name`.
    pub async fn start(name: &'static str) -> std::io::Result<Server> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Aborting this task drops the set of connections, which aborts them all.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(name.as_bytes()))))
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Server { addr, tasks })
    }

    /// Stops the server: the port refuses connections and open ones drop.
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}
