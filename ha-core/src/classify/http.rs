//! The default classification for HTTP clients.

use std::error::Error;
use std::time::{Duration, SystemTime};

use http::{header::RETRY_AFTER, HeaderMap, Method, Request, Response, StatusCode};

use super::{Classify, Outcome};
use crate::error::never_sent;

/// Classifies `http::Response`s and transport errors.
///
/// The rules:
/// - 5xx and 429 responses are failures; 429 and 503 carry the delay of
///   their `Retry-After` header (delta-seconds or an HTTP date).
/// - Every other status is a success: a 4xx is the caller's mistake, not
///   the endpoint's ill health.
/// - An error proving the request never reached a server (connection
///   refused, an `ha` breaker or balancer refusal; see
///   [`never_sent`](crate::error::never_sent)) is a retryable failure.
/// - Any other failure may have reached the server, so it is retryable only
///   when the request is idempotent: its method is GET, HEAD, OPTIONS, TRACE,
///   PUT or DELETE, or it carries an `Idempotency-Key` header.
///
/// ```
/// use ha_core::classify::{Classify, HttpClassifier, Outcome};
/// use std::time::Duration;
///
/// let c = HttpClassifier::default();
/// let post = http::Request::post("/orders").body(()).unwrap();
/// let info = Classify::<_, http::Response<()>, std::io::Error>::request_info(&c, &post);
/// let busy = http::Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
/// // The POST may have been acted on: a failure, but not one to retry.
/// let outcome = Classify::<http::Request<()>, _, std::io::Error>::classify(&c, &info, Ok(&busy));
/// assert_eq!(outcome, Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpClassifier {
    retry_any_method: bool,
}

impl HttpClassifier {
    /// The default rules.
    pub const fn new() -> Self {
        HttpClassifier { retry_any_method: false }
    }

    /// Treats every request as idempotent, for APIs where the server
    /// deduplicates requests itself.
    pub const fn retry_any_method(mut self, yes: bool) -> Self {
        self.retry_any_method = yes;
        self
    }

    fn failure(&self, info: &HttpRequestInfo, retry_after: Option<Duration>) -> Outcome {
        if info.idempotent || self.retry_any_method {
            Outcome::RetryableFailure { retry_after }
        } else {
            Outcome::Failure
        }
    }

    fn classify_response<B>(&self, info: &HttpRequestInfo, res: &Response<B>) -> Outcome {
        let status = res.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            self.failure(info, parse_retry_after(res.headers(), SystemTime::now()))
        } else if status.is_server_error() {
            self.failure(info, None)
        } else {
            Outcome::Success
        }
    }

    fn classify_error(&self, info: &HttpRequestInfo, err: &(dyn Error + 'static)) -> Outcome {
        if never_sent(err) {
            Outcome::retryable()
        } else {
            self.failure(info, None)
        }
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        HttpClassifier::new()
    }
}

/// What [`HttpClassifier`] keeps of a request: whether it is safe to repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequestInfo {
    /// The request may be sent more than once with the effect of once.
    pub idempotent: bool,
}

impl HttpRequestInfo {
    /// Reads the idempotency of a request from its method and headers.
    pub fn of<B>(req: &Request<B>) -> Self {
        let idempotent = matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        ) || req.headers().contains_key("idempotency-key");
        HttpRequestInfo { idempotent }
    }
}

impl<B, RB> Classify<Request<B>, Response<RB>, tower::BoxError> for HttpClassifier {
    type RequestInfo = HttpRequestInfo;

    fn request_info(&self, req: &Request<B>) -> HttpRequestInfo {
        HttpRequestInfo::of(req)
    }

    fn classify(&self, info: &HttpRequestInfo, result: Result<&Response<RB>, &tower::BoxError>) -> Outcome {
        match result {
            Ok(res) => self.classify_response(info, res),
            Err(err) => self.classify_error(info, &**err),
        }
    }
}

impl<B, RB> Classify<Request<B>, Response<RB>, std::io::Error> for HttpClassifier {
    type RequestInfo = HttpRequestInfo;

    fn request_info(&self, req: &Request<B>) -> HttpRequestInfo {
        HttpRequestInfo::of(req)
    }

    fn classify(&self, info: &HttpRequestInfo, result: Result<&Response<RB>, &std::io::Error>) -> Outcome {
        match result {
            Ok(res) => self.classify_response(info, res),
            Err(err) => self.classify_error(info, err),
        }
    }
}

/// Reads a `Retry-After` header as delta-seconds or an HTTP date relative to
/// `now`. A date in the past means "now" (zero); garbage means no delay.
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{AttemptTimedOut, BreakerOpen, NoHealthyEndpoint};
    use tower::BoxError;

    fn request(method: &str, idempotency_key: bool) -> Request<()> {
        let mut b = Request::builder().method(method).uri("http://svc/x");
        if idempotency_key {
            b = b.header("idempotency-key", "k-1");
        }
        b.body(()).unwrap()
    }

    fn response(status: u16, retry_after: Option<&str>) -> Response<()> {
        let mut b = Response::builder().status(status);
        if let Some(v) = retry_after {
            b = b.header(RETRY_AFTER, v);
        }
        b.body(()).unwrap()
    }

    fn classify(c: &HttpClassifier, req: &Request<()>, result: Result<&Response<()>, &BoxError>) -> Outcome {
        let info = Classify::<_, Response<()>, BoxError>::request_info(c, req);
        Classify::<Request<()>, _, _>::classify(c, &info, result)
    }

    fn io(kind: std::io::ErrorKind) -> BoxError {
        std::io::Error::new(kind, "io").into()
    }

    #[test]
    fn http_classification_table() {
        use Outcome::*;
        let secs = |s| Some(Duration::from_secs(s));
        let c = HttpClassifier::default();
        // (method, idempotency-key, status, retry-after, expected)
        let responses: &[(&str, bool, u16, Option<&str>, Outcome)] = &[
            ("GET", false, 200, None, Success),
            ("GET", false, 204, None, Success),
            ("GET", false, 301, None, Success),
            ("GET", false, 404, None, Success),
            ("POST", false, 400, None, Success),
            ("GET", false, 500, None, RetryableFailure { retry_after: None }),
            ("GET", false, 502, None, RetryableFailure { retry_after: None }),
            ("GET", false, 503, Some("7"), RetryableFailure { retry_after: secs(7) }),
            ("GET", false, 503, None, RetryableFailure { retry_after: None }),
            ("GET", false, 429, Some("120"), RetryableFailure { retry_after: secs(120) }),
            ("GET", false, 429, Some("soon"), RetryableFailure { retry_after: None }),
            ("GET", false, 500, Some("9"), RetryableFailure { retry_after: None }),
            ("HEAD", false, 500, None, RetryableFailure { retry_after: None }),
            ("OPTIONS", false, 500, None, RetryableFailure { retry_after: None }),
            ("TRACE", false, 500, None, RetryableFailure { retry_after: None }),
            ("PUT", false, 500, None, RetryableFailure { retry_after: None }),
            ("DELETE", false, 503, Some("1"), RetryableFailure { retry_after: secs(1) }),
            ("POST", false, 500, None, Failure),
            ("POST", false, 503, Some("3"), Failure),
            ("PATCH", false, 429, Some("3"), Failure),
            ("POST", true, 503, Some("3"), RetryableFailure { retry_after: secs(3) }),
            ("PATCH", true, 502, None, RetryableFailure { retry_after: None }),
        ];
        for (method, key, status, after, expected) in responses {
            let got = classify(&c, &request(method, *key), Ok(&response(*status, *after)));
            assert_eq!(got, *expected, "{method} key={key} {status} retry-after={after:?}");
        }

        use std::io::ErrorKind as K;
        // (method, error, expected)
        let errors: Vec<(&str, BoxError, Outcome)> = vec![
            ("POST", io(K::ConnectionRefused), Outcome::retryable()),
            ("POST", BreakerOpen::new(Duration::ZERO).into(), Outcome::retryable()),
            ("POST", NoHealthyEndpoint::new(2).into(), Outcome::retryable()),
            ("POST", io(K::ConnectionReset), Failure),
            ("POST", AttemptTimedOut::new(Duration::from_secs(1)).into(), Failure),
            ("GET", io(K::ConnectionReset), Outcome::retryable()),
            ("GET", AttemptTimedOut::new(Duration::from_secs(1)).into(), Outcome::retryable()),
        ];
        for (method, err, expected) in errors {
            let got = classify(&c, &request(method, false), Err(&err));
            assert_eq!(got, expected, "{method} {err}");
        }

        let any = HttpClassifier::new().retry_any_method(true);
        assert_eq!(classify(&any, &request("POST", false), Ok(&response(500, None))), Outcome::retryable());
    }

    #[test]
    fn io_errors_classify_like_boxed_ones() {
        let c = HttpClassifier::default();
        let req = request("POST", false);
        let info = Classify::<_, Response<()>, std::io::Error>::request_info(&c, &req);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no");
        let got = Classify::<Request<()>, Response<()>, _>::classify(&c, &info, Err(&refused));
        assert_eq!(got, Outcome::retryable());
    }

    #[test]
    fn retry_after_http_date_is_relative_to_now() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "Sun, 06 Nov 1994 08:50:07 GMT".parse().unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, "Sun, 06 Nov 1994 08:49:00 GMT".parse().unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, " 12 ".parse().unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(12)));
        h.insert(RETRY_AFTER, "-1".parse().unwrap());
        assert_eq!(parse_retry_after(&h, now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }
}
