//! The stack's metrics in the Prometheus format at `/metrics`: traffic to
//! three local servers, one of which stops, scraped before and after.
//!
//! `cargo run -p ha-examples --bin metrics` (add `-- --serve` to keep
//! serving `/metrics` until Ctrl-C).

use ha::core::Events;
use ha::metrics::{record_stack, MetricsObserver};
use ha::Body;
use ha_examples::prometheus::{serve, value};
use ha_examples::servers::Server;
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let mut servers = vec![Server::start("a").await?, Server::start("b").await?, Server::start("c").await?];
    let client: ha::hyper::Client<Body> = ha::hyper::builder()
        .events(Events::new().with_observer(MetricsObserver::new("shop")))
        .endpoints(servers.iter().map(|s| s.addr))
        .build()?;
    let reported = client.clone();
    let (addr, _task) = serve(handle, move || record_stack("shop", &reported)).await?;
    println!("metrics at http://{addr}/metrics");

    for round in 0..2 {
        if round == 1 {
            let stopped = servers.remove(0);
            println!("stopping the server at {}", stopped.addr);
            stopped.stop().await;
        }
        for _ in 0..200 {
            let req = http::Request::get("http://shop/items").body(Body::empty())?;
            client.clone().oneshot(req).await?;
        }
        let text = scrape(addr).await?;
        println!(
            "after round {round}: requests {}, attempts {}, retries {}, ejections {}, endpoint failures {}",
            value(&text, "ha_requests_total", &[]),
            value(&text, "ha_attempts_total", &[]),
            value(&text, "ha_retries_total", &[]),
            value(&text, "ha_endpoint_ejections_total", &[]),
            value(&text, "ha_endpoint_failures_total", &[]),
        );
    }
    if std::env::args().any(|a| a == "--serve") {
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    for s in servers {
        s.stop().await;
    }
    Ok(())
}

/// GET /metrics with a one-off hyper connection.
async fn scrape(addr: std::net::SocketAddr) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let res = send.send_request(http::Request::get("/metrics").header("host", "metrics").body(Body::empty())?).await?;
    Ok(String::from_utf8(res.into_body().collect().await?.to_bytes().to_vec())?)
}
