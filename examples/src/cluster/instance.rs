//! The child role: one service instance, as its own OS process.
//!
//! It serves HTTP on its service port (every answer names the instance in
//! `x-served-by`), takes fault settings on its admin port, and runs a
//! membership node advertising its service address and zone. It exits when
//! its standard input closes, which happens when the parent exits however
//! it exits, so no instance outlives the demo.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use ha::membership::{Cluster, Config, Metadata};
use ha_core::rng::{mix64, GOLDEN_GAMMA};

/// What the parent tells a child to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceArgs {
    /// Its name (and membership name).
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// Its service address.
    pub service: SocketAddr,
    /// Its admin address.
    pub admin: SocketAddr,
    /// Its gossip address.
    pub gossip: SocketAddr,
    /// The gossip addresses to join through.
    pub seeds: Vec<SocketAddr>,
}

impl InstanceArgs {
    /// The command-line arguments that describe this instance (after the
    /// role word `instance`).
    pub fn to_args(&self) -> Vec<String> {
        let seeds: Vec<String> = self.seeds.iter().map(ToString::to_string).collect();
        vec![
            "--name".into(),
            self.name.clone(),
            "--zone".into(),
            self.zone.clone(),
            "--service".into(),
            self.service.to_string(),
            "--admin".into(),
            self.admin.to_string(),
            "--gossip".into(),
            self.gossip.to_string(),
            "--seeds".into(),
            seeds.join(","),
        ]
    }

    /// Parses what [`InstanceArgs::to_args`] wrote.
    pub fn parse(args: &[String]) -> Result<InstanceArgs, String> {
        let mut name = None;
        let mut zone = None;
        let (mut service, mut admin, mut gossip) = (None, None, None);
        let mut seeds = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let addr = || value.parse::<SocketAddr>().map_err(|e| format!("{flag} {value}: {e}"));
            match flag.as_str() {
                "--name" => name = Some(value.clone()),
                "--zone" => zone = Some(value.clone()),
                "--service" => service = Some(addr()?),
                "--admin" => admin = Some(addr()?),
                "--gossip" => gossip = Some(addr()?),
                "--seeds" => {
                    for s in value.split(',').filter(|s| !s.is_empty()) {
                        seeds.push(s.parse().map_err(|e| format!("--seeds {s}: {e}"))?);
                    }
                }
                other => return Err(format!("unknown instance argument {other}")),
            }
        }
        Ok(InstanceArgs {
            name: name.ok_or("--name is required")?,
            zone: zone.ok_or("--zone is required")?,
            service: service.ok_or("--service is required")?,
            admin: admin.ok_or("--admin is required")?,
            gossip: gossip.ok_or("--gossip is required")?,
            seeds,
        })
    }
}

/// The gray-failure settings, as the admin endpoint reads and writes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// The share of requests answered with 500, in `[0, 1]`.
    #[serde(default)]
    pub error_rate: f64,
    /// The delay added to every answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
}

#[derive(Debug, Default)]
struct FaultState {
    error_rate_bits: AtomicU64,
    latency_ms: AtomicU64,
    rng: AtomicU64,
}

impl FaultState {
    fn get(&self) -> FaultSettings {
        FaultSettings {
            error_rate: f64::from_bits(self.error_rate_bits.load(Ordering::Relaxed)),
            latency_ms: self.latency_ms.load(Ordering::Relaxed),
        }
    }

    fn set(&self, s: FaultSettings) {
        self.error_rate_bits.store(s.error_rate.to_bits(), Ordering::Relaxed);
        self.latency_ms.store(s.latency_ms, Ordering::Relaxed);
    }

    /// A uniform draw in [0, 1) (splitmix64 over a shared counter).
    fn draw(&self) -> f64 {
        let z = self.rng.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed).wrapping_add(GOLDEN_GAMMA);
        (mix64(z) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn text(status: StatusCode, name: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(name) {
        res.headers_mut().insert("x-served-by", v);
    }
    res
}

async fn serve(req: Request<Incoming>, name: Arc<str>, state: Arc<FaultState>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(StatusCode::BAD_REQUEST, &name, format!("cannot read the body: {e}")),
    };
    let fault = state.get();
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    if fault.error_rate > 0.0 && state.draw() < fault.error_rate {
        return text(StatusCode::INTERNAL_SERVER_ERROR, &name, "injected gray failure");
    }
    match method {
        Method::GET => text(StatusCode::OK, &name, format!("{{\"path\":\"{path}\",\"served_by\":\"{name}\"}}")),
        Method::PUT | Method::POST => {
            let mut res = text(StatusCode::OK, &name, format!("{{\"stored\":{}}}", body.len()));
            res.headers_mut().insert("x-body-len", http::HeaderValue::from(body.len()));
            res
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, &name, "GET, PUT or POST"),
    }
}

async fn admin(req: Request<Incoming>, name: Arc<str>, state: Arc<FaultState>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let json = |s: FaultSettings| text(StatusCode::OK, &name, serde_json::to_vec(&s).unwrap_or_default());
    match (parts.method, parts.uri.path()) {
        (Method::GET, "/health") => text(StatusCode::OK, &name, "ok"),
        (Method::GET, "/fault") => json(state.get()),
        (Method::DELETE, "/fault") => {
            state.set(FaultSettings::default());
            json(state.get())
        }
        (Method::PUT, "/fault") => {
            let bytes = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return text(StatusCode::BAD_REQUEST, &name, format!("cannot read the body: {e}")),
            };
            match serde_json::from_slice::<FaultSettings>(&bytes) {
                Ok(s) if (0.0..=1.0).contains(&s.error_rate) => {
                    state.set(s);
                    json(s)
                }
                Ok(_) => text(StatusCode::UNPROCESSABLE_ENTITY, &name, "error_rate must be in [0, 1]"),
                Err(e) => text(StatusCode::BAD_REQUEST, &name, format!("expected {{error_rate, latency_ms}}: {e}")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, &name, "GET /health, GET|PUT|DELETE /fault"),
    }
}

/// Serves every connection of `listener` with `handle` until the task is dropped.
fn spawn_server<F, Fut>(tasks: &mut JoinSet<()>, listener: TcpListener, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handle(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
}

async fn bind(addr: SocketAddr, what: &str, name: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("{name}: {what} port {addr} is already in use ({e}); pick other ports with --base-port")
        } else {
            format!("{name}: cannot bind the {what} port {addr}: {e}")
        }
    })
}

/// Runs the instance until its standard input closes.
pub async fn run(args: InstanceArgs) -> Result<(), String> {
    let name: Arc<str> = args.name.as_str().into();
    let state = Arc::new(FaultState::default());
    let mut tasks = JoinSet::new();

    let service = bind(args.service, "service", &name).await?;
    let admin_listener = bind(args.admin, "admin", &name).await?;
    let (n, s) = (name.clone(), state.clone());
    spawn_server(&mut tasks, service, move |req| serve(req, n.clone(), s.clone()));
    let (n, s) = (name.clone(), state.clone());
    spawn_server(&mut tasks, admin_listener, move |req| admin(req, n.clone(), s.clone()));

    // A restarted instance outranks what the cluster remembers of its last life.
    let incarnation = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let node = Cluster::builder(args.name.clone())
        .config(Config::local())
        .bind(args.gossip)
        .incarnation(incarnation)
        .metadata(Metadata {
            service: Some(args.service),
            zone: args.zone.clone(),
            tier: 0,
            weight: 1,
            ..Metadata::default()
        })
        .start()
        .await
        .map_err(|e| format!("{name}: cannot start the membership node at {}: {e}", args.gossip))?;
    if !args.seeds.is_empty() {
        let (joiner, seeds) = (node.clone(), args.seeds.clone());
        // Without an answering seed the node keeps trying them in the background.
        tokio::spawn(async move { joiner.join(&seeds).await });
    }

    let mut out = tokio::io::stdout();
    out.write_all(format!("ready {}\n", std::process::id()).as_bytes()).await.map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())?;

    // The parent holds the other end of stdin: EOF means it is gone or wants us gone.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    let _ = tokio::time::timeout(Duration::from_millis(300), node.leave()).await;
    tasks.abort_all();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let a = InstanceArgs {
            name: "a1".into(),
            zone: "zone-a".into(),
            service: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:2".parse().unwrap(),
            gossip: "127.0.0.1:3".parse().unwrap(),
            seeds: vec!["127.0.0.1:4".parse().unwrap(), "127.0.0.1:5".parse().unwrap()],
        };
        assert_eq!(InstanceArgs::parse(&a.to_args()).unwrap(), a);
        assert!(InstanceArgs::parse(&["--name".into()]).is_err());
        assert!(InstanceArgs::parse(&["--service".into(), "nope".into()]).is_err());
    }

    #[test]
    fn draws_are_uniform_enough() {
        let s = FaultState::default();
        let n = 10_000;
        let below = (0..n).filter(|_| s.draw() < 0.25).count();
        assert!((2_200..2_800).contains(&below), "{below}");
    }
}
