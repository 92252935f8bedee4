//! Open-loop traffic: requests go out on a fixed schedule whatever the
//! answers do (a user does not wait for the last one), each sent once
//! through ha and once through the baseline.
//!
//! The mix: 60% GETs, 20% PUTs with a JSON body, 20% POSTs with a JSON body
//! and an `idempotency-key` header; all of them are safe to repeat, so ha
//! may retry any of them, and the body a retry sends must arrive intact
//! (the instance echoes its length, checked here).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tower::ServiceExt;

use super::baseline::Baseline;
use super::stats::{Recorder, Side};
use super::topology::Topology;

/// ha's client: the standard stack over hyper.
pub type HaClient = ha::hyper::Client<ha::Body>;

/// One request of the mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// GET, PUT or POST.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The body (empty for GET).
    pub body: Bytes,
    /// For POSTs, the key that makes them safe to repeat.
    pub idempotency_key: Option<String>,
}

impl RequestSpec {
    /// The `n`th request of the mix.
    pub fn nth(n: u64) -> RequestSpec {
        let item = n % 1000;
        match n % 10 {
            0..=5 => RequestSpec {
                method: Method::GET,
                path: format!("/items/{item}"),
                body: Bytes::new(),
                idempotency_key: None,
            },
            6 | 7 => RequestSpec {
                method: Method::PUT,
                path: format!("/items/{item}"),
                body: Bytes::from(format!("{{\"item\":{item},\"stock\":{},\"note\":\"{}\"}}", n % 97, "x".repeat(64))),
                idempotency_key: None,
            },
            _ => RequestSpec {
                method: Method::POST,
                path: "/orders".to_owned(),
                body: Bytes::from(format!("{{\"order\":{n},\"item\":{item},\"quantity\":{}}}", 1 + n % 5)),
                idempotency_key: Some(format!("order-{n}")),
            },
        }
    }
}

/// What a client got for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The instance that answered (or, for the baseline, was sent to).
    pub instance: Option<u8>,
    /// Why the user saw a failure; `None` for a right answer.
    pub failure: Option<String>,
}

/// Checks an answer: a 200, and for a body sent, the instance saw all of it.
pub fn check_answer(spec: &RequestSpec, parts: &http::response::Parts) -> Result<(), String> {
    if parts.status != StatusCode::OK {
        return Err(format!("status {}", parts.status.as_u16()));
    }
    if spec.method == Method::GET {
        return Ok(());
    }
    let seen = parts.headers.get("x-body-len").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if seen == Some(spec.body.len()) {
        Ok(())
    } else {
        Err(format!("body of {} bytes arrived as {seen:?}", spec.body.len()))
    }
}

/// The innermost error of a chain: the cause a user would look up.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    text.chars().take(100).collect()
}

/// The instance that answered, from `x-served-by`.
fn served_by(topology: &Topology, parts: &http::response::Parts) -> Option<u8> {
    let name = parts.headers.get("x-served-by")?.to_str().ok()?;
    topology.find(name).and_then(|i| u8::try_from(i.index).ok())
}

/// Sends `spec` through ha.
pub async fn send_ha(client: &HaClient, topology: &Topology, spec: &RequestSpec) -> Answer {
    let mut builder = http::Request::builder().method(spec.method.clone()).uri(format!("http://catalog{}", spec.path));
    if let Some(key) = &spec.idempotency_key {
        builder = builder.header("idempotency-key", key.as_str());
    }
    let req = match builder.body(ha::Body::from(spec.body.clone())) {
        Ok(req) => req,
        Err(e) => return Answer { instance: None, failure: Some(format!("bad request: {e}")) },
    };
    let res = match client.clone().oneshot(req).await {
        Ok(res) => res,
        Err(e) => return Answer { instance: None, failure: Some(format!("{:?}: {}", e.kind(), root_cause(&e))) },
    };
    let (parts, body) = res.into_parts();
    let instance = served_by(topology, &parts);
    let failure = match body.collect().await {
        Ok(_) => check_answer(spec, &parts).err(),
        Err(e) => Some(format!("body: {}", root_cause(&e))),
    };
    Answer { instance, failure }
}

/// Sends `rate` request pairs per second until `stop` turns true or
/// `duration` has passed, then returns (requests may still be in flight:
/// see [`Recorder::in_flight`]).
pub async fn run(
    rate: u32,
    duration: Duration,
    ha: HaClient,
    baseline: Arc<Baseline>,
    topology: Arc<Topology>,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let end = tokio::time::Instant::from_std(recorder.t0()) + duration;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::from_std(recorder.t0()), period);
    // Open loop: a late tick is sent at once, not skipped.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::time::sleep_until(end) => break,
            _ = stop.changed() => break,
        }
        if *stop.borrow() || tokio::time::Instant::now() >= end {
            break;
        }
        let spec = Arc::new(RequestSpec::nth(n));
        n += 1;
        let (client, t, rec, s) = (ha.clone(), topology.clone(), recorder.clone(), spec.clone());
        tokio::spawn(async move {
            let start = rec.begin(Side::Ha);
            let answer = send_ha(&client, &t, &s).await;
            rec.end(Side::Ha, start, answer);
        });
        let (b, rec) = (baseline.clone(), recorder.clone());
        tokio::spawn(async move {
            let start = rec.begin(Side::Baseline);
            let answer = b.send(&spec).await;
            rec.end(Side::Baseline, start, answer);
        });
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_idempotent_with_bodies() {
        let specs: Vec<RequestSpec> = (0..10).map(RequestSpec::nth).collect();
        assert_eq!(specs.iter().filter(|s| s.method == Method::GET).count(), 6);
        for s in specs.iter().filter(|s| s.method != Method::GET) {
            assert!(!s.body.is_empty());
            assert!(s.method == Method::PUT || s.idempotency_key.is_some());
        }
    }
}
