//! Serves `metrics` series in the Prometheus text format at `/metrics` on
//! loopback, for the examples and their tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Serves `handle`'s rendering at `http://ADDR/metrics`, calling `refresh`
/// before each (to copy a stack's counters, say). Stops when the returned
/// task is aborted.
pub async fn serve(
    handle: PrometheusHandle,
    refresh: impl Fn() + Send + Sync + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let refresh = Arc::new(refresh);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (handle, refresh) = (handle.clone(), refresh.clone());
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (handle, refresh) = (handle.clone(), refresh.clone());
                    async move {
                        let res = if req.uri().path() == "/metrics" {
                            refresh();
                            Response::new(Full::new(Bytes::from(handle.render())))
                        } else {
                            let mut res = Response::new(Full::new(Bytes::from_static(b"not found")));
                            *res.status_mut() = StatusCode::NOT_FOUND;
                            res
                        };
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Ok((addr, task))
}

/// The sum of the values of the series `name` whose labels contain every
/// `key="value"` pair of `labels`, in a Prometheus text rendering.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .fold(0.0, |sum, v| sum + v)
}
