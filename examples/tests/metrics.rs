//! The Prometheus endpoint, scraped over HTTP before and after a fault,
//! shows the traffic, the retries, the ejection and the breaker opening.

use std::time::Duration;

use ha::balance::{BalanceConfig, Picker};
use ha::breaker::BreakerConfig;
use ha::core::Events;
use ha::metrics::{record_stack, MetricsObserver};
use ha::retry::config::BudgetConfig;
use ha::retry::RetryConfig;
use ha::Body;
use ha_examples::prometheus::{serve, value};
use ha_examples::servers::Server;
use http_body_util::BodyExt;
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::ServiceExt;

/// GET /metrics with a plain hyper connection, so scraping adds nothing to the figures.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/metrics").header("host", "metrics").body(Body::empty()).unwrap();
    let res = send.send_request(req).await.unwrap();
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

async fn traffic(client: &ha::hyper::Client<Body>, n: usize) {
    for _ in 0..n {
        let req = http::Request::get("http://shop/items").body(Body::empty()).unwrap();
        let res = client.clone().oneshot(req).await.expect("served");
        assert!(res.status().is_success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_shows_traffic_retries_ejection_and_breaker() {
    let handle = PrometheusBuilder::new().install_recorder().expect("the only recorder of this test binary");
    let mut servers =
        vec![Server::start("a").await.unwrap(), Server::start("b").await.unwrap(), Server::start("c").await.unwrap()];
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    // Round robin, so the two failing endpoints keep getting first attempts;
    // only one of three may be ejected, so the other's breaker opens.
    let config = ha::Config {
        balance: BalanceConfig { picker: Picker::RoundRobin, ..BalanceConfig::default() },
        breaker: BreakerConfig { consecutive_failures: Some(8), ..BreakerConfig::default() },
        // Back to back, with two of three servers gone, about every other
        // request needs a retry: a budget that pays for it, so the test
        // is about what the scrape shows, not about the budget's floor.
        retry: RetryConfig { budget: BudgetConfig { ratio: 1.0, ..BudgetConfig::default() }, ..RetryConfig::default() },
        ..ha::Config::default()
    };
    let client: ha::hyper::Client<Body> = ha::hyper::builder()
        .config(config)
        .events(Events::new().with_observer(MetricsObserver::new("shop")))
        .endpoints(addrs.clone())
        .build()
        .unwrap();
    let reported = client.clone();
    let (metrics_addr, server) = serve(handle, move || record_stack("shop", &reported)).await.unwrap();

    let run = async {
        traffic(&client, 30).await;
        let before = scrape(metrics_addr).await;
        assert_eq!(value(&before, "ha_requests_total", &[("stack", "shop")]), 30.0, "{before}");
        assert_eq!(value(&before, "ha_retries_total", &[("stack", "shop")]), 0.0);
        assert_eq!(value(&before, "ha_endpoint_ejections_total", &[("stack", "shop")]), 0.0);
        assert_eq!(value(&before, "ha_endpoints", &[("stack", "shop")]), 3.0);

        // Two of the three servers go away.
        for s in servers.drain(..2) {
            s.stop().await;
        }
        traffic(&client, 100).await;
        let after = scrape(metrics_addr).await;
        assert_eq!(value(&after, "ha_requests_total", &[("stack", "shop")]), 130.0, "{after}");
        assert!(value(&after, "ha_retries_total", &[("stack", "shop")]) > 0.0, "{after}");
        assert_eq!(value(&after, "ha_endpoint_ejections_total", &[("stack", "shop")]), 1.0, "{after}");
        assert!(value(&after, "ha_breaker_transitions_total", &[("stack", "shop"), ("to", "open")]) >= 1.0, "{after}");
        assert!(value(&after, "ha_endpoint_failures_total", &[("stack", "shop")]) >= 13.0, "{after}");
        assert!(value(&after, "ha_endpoint_ejected", &[("stack", "shop")]) >= 1.0, "{after}");
        assert!(value(&after, "ha_endpoint_breaker_open", &[("stack", "shop")]) >= 1.0, "{after}");
    };
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("within 60 s");
    server.abort();
    for s in servers {
        s.stop().await;
    }
}
