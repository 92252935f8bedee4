//! The baseline: the client a user without ha would write. One pooled
//! hyper client, round robin over the static list of the six instances, no
//! retries, and the same overall timeout as ha's request deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::traffic::{check_answer, root_cause, Answer, RequestSpec};

/// Round robin over a static list, no retries.
#[derive(Debug)]
pub struct Baseline {
    client: Client<HttpConnector, Full<Bytes>>,
    targets: Vec<SocketAddr>,
    next: AtomicUsize,
    timeout: Duration,
}

impl Baseline {
    /// A baseline over `targets`, giving up on a request after `timeout`.
    pub fn new(targets: Vec<SocketAddr>, timeout: Duration) -> Baseline {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Baseline { client, targets, next: AtomicUsize::new(0), timeout }
    }

    /// Sends `spec` to the next instance.
    pub async fn send(&self, spec: &RequestSpec) -> Answer {
        if self.targets.is_empty() {
            return Answer { instance: None, failure: Some("no instances".to_owned()) };
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        let instance = u8::try_from(i).ok();
        let uri = format!("http://{}{}", self.targets[i], spec.path);
        let mut builder = http::Request::builder().method(spec.method.clone()).uri(uri);
        if let Some(key) = &spec.idempotency_key {
            builder = builder.header("idempotency-key", key.as_str());
        }
        let req = match builder.body(Full::new(spec.body.clone())) {
            Ok(req) => req,
            Err(e) => return Answer { instance, failure: Some(format!("bad request: {e}")) },
        };
        let call = async {
            let res = self.client.request(req).await.map_err(|e| root_cause(&e))?;
            let (parts, body) = res.into_parts();
            body.collect().await.map_err(|e| format!("body: {}", root_cause(&e)))?;
            check_answer(spec, &parts)
        };
        let failure = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no answer within {:?}", self.timeout)),
        };
        Answer { instance, failure }
    }
}
