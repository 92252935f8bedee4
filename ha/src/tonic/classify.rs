//! gRPC classification: a call's outcome from its `grpc-status`, read from
//! the response headers (trailers-only responses) or, through
//! [`GrpcStatus`] in the response's extensions, from its trailers.

use std::time::Duration;

use ha_core::classify::{Classify, Outcome};
use http::{HeaderMap, Request, Response, StatusCode};
use tonic::Code;
use tower::BoxError;

/// The header (or trailer) carrying a call's gRPC status code.
pub const GRPC_STATUS: &str = "grpc-status";
/// The header (or trailer) by which a server tells a client when to retry
/// (gRFC A6).
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// A set of gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CodeSet(u32);

impl CodeSet {
    /// No code.
    pub const EMPTY: CodeSet = CodeSet(0);

    /// The set of `codes`.
    pub fn of(codes: impl IntoIterator<Item = Code>) -> Self {
        codes.into_iter().fold(CodeSet::EMPTY, CodeSet::with)
    }

    /// This set and `code`.
    pub const fn with(self, code: Code) -> Self {
        CodeSet(self.0 | 1 << (code as i32 as u32))
    }

    /// True when `code` is in the set.
    pub const fn contains(self, code: Code) -> bool {
        self.0 & (1 << (code as i32 as u32)) != 0
    }
}

/// What the server asked of a retry with `grpc-retry-pushback-ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pushback {
    /// No pushback: the client's own backoff applies.
    #[default]
    None,
    /// Retry no sooner than this.
    After(Duration),
    /// A negative or unparseable value: do not retry.
    DoNotRetry,
}

impl Pushback {
    /// Reads `grpc-retry-pushback-ms` from `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        match headers.get(GRPC_RETRY_PUSHBACK_MS) {
            None => Pushback::None,
            Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(ms) => Pushback::After(Duration::from_millis(ms)),
                None => Pushback::DoNotRetry,
            },
        }
    }
}

/// A call's gRPC status as far as classification needs it: its code and
/// the server's pushback.
///
/// The [tonic transport](super::TonicTransport) puts one in a response's
/// extensions when the status came in the trailers, so the classifier of
/// every layer reads it when the response future completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcStatus {
    /// The status code.
    pub code: Code,
    /// The server's `grpc-retry-pushback-ms`.
    pub pushback: Pushback,
}

impl GrpcStatus {
    /// The status in `headers` (response headers or trailers), if they
    /// carry `grpc-status`. A value that is not a number reads as
    /// `UNKNOWN`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(GRPC_STATUS)?;
        let code = value.to_str().ok().and_then(|s| s.trim().parse::<i32>().ok()).map_or(Code::Unknown, Code::from_i32);
        Some(GrpcStatus { code, pushback: Pushback::from_headers(headers) })
    }

    /// The status of a response that ended without trailers: a protocol
    /// error, which tonic reports as `INTERNAL`.
    pub const fn missing_trailers() -> Self {
        GrpcStatus { code: Code::Internal, pushback: Pushback::None }
    }

    /// The status gRPC gives a response whose HTTP status is not 200 and
    /// that carries no `grpc-status` (an HTTP proxy's answer), as in
    /// gRPC's "HTTP to gRPC status code mapping".
    pub fn from_http(status: StatusCode) -> Self {
        let code = match status.as_u16() {
            200 => Code::Ok,
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        };
        GrpcStatus { code, pushback: Pushback::None }
    }

    /// The status of `res`: from its headers, else from the trailers the
    /// transport recorded, else from its HTTP status. `None` for an HTTP
    /// 200 with neither (a stream still running, or one whose trailers the
    /// transport did not wait for).
    pub fn of<B>(res: &Response<B>) -> Option<Self> {
        if let Some(status) = GrpcStatus::from_headers(res.headers()) {
            return Some(status);
        }
        if let Some(status) = res.extensions().get::<GrpcStatus>() {
            return Some(*status);
        }
        (res.status() != StatusCode::OK).then(|| GrpcStatus::from_http(res.status()))
    }
}

/// The default codes a call is retried on (gRFC A6: `UNAVAILABLE`).
pub const DEFAULT_RETRYABLE: CodeSet = CodeSet::EMPTY.with(Code::Unavailable);

/// The default codes that count against an endpoint's health: the codes a
/// sick or overloaded server answers with.
pub const DEFAULT_UNHEALTHY: CodeSet = CodeSet::EMPTY
    .with(Code::Unavailable)
    .with(Code::Internal)
    .with(Code::Unknown)
    .with(Code::DataLoss)
    .with(Code::DeadlineExceeded)
    .with(Code::ResourceExhausted);

/// Classifies gRPC calls for every layer of a stack.
///
/// The rules, for a response (its status read by [`GrpcStatus::of`]):
///
/// | status | outcome |
/// |---|---|
/// | `OK`, or none known | `Success` |
/// | a retryable code (default `UNAVAILABLE`), no pushback | `RetryableFailure`, the client's backoff |
/// | a retryable code, `grpc-retry-pushback-ms` ≥ 0 | `RetryableFailure { retry_after: pushback }` |
/// | a retryable code, pushback negative or garbage | `Failure` (the server said "do not retry") |
/// | an unhealthy code (default `UNAVAILABLE`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`) | `Failure` |
/// | any other code (`INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, …) | `Success` |
///
/// The last row is a choice: one outcome feeds both the retry layer and
/// the endpoint's health (breaker, outlier ejection), and an application's
/// answer such as `NOT_FOUND` proves the endpoint works, so it counts as a
/// success for health; it is still not retried, and your generated client
/// still returns it as an error `Status`. A retryable code always counts as
/// a failure for health too. Pushback only matters for retryable codes.
///
/// Errors: every transport error is a retryable failure (gRPC reports them
/// as `UNAVAILABLE`), whether the request was never sent (connection
/// refused, breaker open; safe for any call) or may have reached the server.
/// Use [`retry_sent_errors(false)`](Self::retry_sent_errors) for calls that
/// must not be repeated once they may have arrived.
///
/// ```
/// use ha::core::{Classify, Outcome};
/// use ha::tonic::GrpcClassifier;
/// use tonic::Code;
///
/// let c = GrpcClassifier::new().retryable_codes([Code::Unavailable, Code::ResourceExhausted]);
/// let res = http::Response::builder().header("grpc-status", "8").body(()).unwrap();
/// let outcome = Classify::<http::Request<()>, _, tower::BoxError>::classify(&c, &(), Ok(&res));
/// assert_eq!(outcome, Outcome::retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    retryable: CodeSet,
    unhealthy: CodeSet,
    retry_sent_errors: bool,
}

impl GrpcClassifier {
    /// The default rules.
    pub const fn new() -> Self {
        GrpcClassifier { retryable: DEFAULT_RETRYABLE, unhealthy: DEFAULT_UNHEALTHY, retry_sent_errors: true }
    }

    /// The codes a call is retried on (gRFC A6's `retryableStatusCodes`).
    pub fn retryable_codes(mut self, codes: impl IntoIterator<Item = Code>) -> Self {
        self.retryable = CodeSet::of(codes);
        self
    }

    /// The codes that count against an endpoint's health without being
    /// retried.
    pub fn unhealthy_codes(mut self, codes: impl IntoIterator<Item = Code>) -> Self {
        self.unhealthy = CodeSet::of(codes);
        self
    }

    /// Whether a transport error that may have come after the request
    /// reached the server is retried (default yes). Never-sent errors are
    /// always retried.
    pub const fn retry_sent_errors(mut self, yes: bool) -> Self {
        self.retry_sent_errors = yes;
        self
    }

    /// The outcome of a call that ended with `status`.
    pub fn classify_status(&self, status: &GrpcStatus) -> Outcome {
        if status.code == Code::Ok {
            Outcome::Success
        } else if self.retryable.contains(status.code) {
            match status.pushback {
                Pushback::None => Outcome::retryable(),
                Pushback::After(d) => Outcome::RetryableFailure { retry_after: Some(d) },
                Pushback::DoNotRetry => Outcome::Failure,
            }
        } else if self.unhealthy.contains(status.code) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    /// The outcome of a call that failed with `err`.
    pub fn classify_error(&self, err: &(dyn std::error::Error + 'static)) -> Outcome {
        if self.retry_sent_errors || ha_core::error::never_sent(err) {
            Outcome::retryable()
        } else {
            Outcome::Failure
        }
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        GrpcClassifier::new()
    }
}

impl<B, RB> Classify<Request<B>, Response<RB>, BoxError> for GrpcClassifier {
    type RequestInfo = ();

    fn request_info(&self, _req: &Request<B>) {}

    fn classify(&self, _info: &(), result: Result<&Response<RB>, &BoxError>) -> Outcome {
        match result {
            Ok(res) => GrpcStatus::of(res).map_or(Outcome::Success, |s| self.classify_status(&s)),
            Err(err) => self.classify_error(&**err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::error::NotSent;

    fn classify(c: &GrpcClassifier, res: &Response<()>) -> Outcome {
        Classify::<Request<()>, _, BoxError>::classify(c, &(), Ok(res))
    }

    fn response(status: u16, headers: &[(&'static str, &'static str)], trailers: Option<GrpcStatus>) -> Response<()> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut res = b.body(()).unwrap();
        if let Some(t) = trailers {
            res.extensions_mut().insert(t);
        }
        res
    }

    fn trailers(pairs: &[(&'static str, &'static str)]) -> Option<GrpcStatus> {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        GrpcStatus::from_headers(&map)
    }

    #[test]
    fn grpc_classification_table() {
        use Outcome::*;
        let ms = |n| Some(Duration::from_millis(n));
        let c = GrpcClassifier::default();
        // (HTTP status, headers, trailers, expected)
        #[allow(clippy::type_complexity)]
        let cases: &[(u16, &[(&str, &str)], &[(&str, &str)], Outcome)] = &[
            // Trailers-only responses: the status is in the headers.
            (200, &[("grpc-status", "0")], &[], Success),
            (200, &[("grpc-status", "14")], &[], RetryableFailure { retry_after: None }),
            (
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "250")],
                &[],
                RetryableFailure { retry_after: ms(250) },
            ),
            (
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "0")],
                &[],
                RetryableFailure { retry_after: ms(0) },
            ),
            (200, &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")], &[], Failure),
            (200, &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "soon")], &[], Failure),
            (200, &[("grpc-status", "13")], &[], Failure),
            (200, &[("grpc-status", "13"), ("grpc-retry-pushback-ms", "10")], &[], Failure),
            (200, &[("grpc-status", "2")], &[], Failure),
            (200, &[("grpc-status", "15")], &[], Failure),
            (200, &[("grpc-status", "4")], &[], Failure),
            (200, &[("grpc-status", "8")], &[], Failure),
            (200, &[("grpc-status", "3")], &[], Success),
            (200, &[("grpc-status", "5")], &[], Success),
            (200, &[("grpc-status", "7")], &[], Success),
            (200, &[("grpc-status", "12")], &[], Success),
            (200, &[("grpc-status", "garbage")], &[], Failure),
            (200, &[("grpc-status", "99")], &[], Failure),
            // The status in the trailers, recorded by the transport.
            (200, &[], &[("grpc-status", "0")], Success),
            (200, &[], &[("grpc-status", "14")], RetryableFailure { retry_after: None }),
            (
                200,
                &[],
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "1500")],
                RetryableFailure { retry_after: ms(1500) },
            ),
            (200, &[], &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-20")], Failure),
            (200, &[], &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "1.5")], Failure),
            (200, &[], &[("grpc-status", "13")], Failure),
            (200, &[], &[("grpc-status", "5")], Success),
            // The headers win over the trailers.
            (200, &[("grpc-status", "0")], &[("grpc-status", "14")], Success),
            // No status known: a stream the transport did not wait for.
            (200, &[], &[], Success),
            // HTTP errors without a grpc-status (a proxy's answer).
            (503, &[], &[], RetryableFailure { retry_after: None }),
            (502, &[], &[], RetryableFailure { retry_after: None }),
            (429, &[], &[], RetryableFailure { retry_after: None }),
            (500, &[], &[], Failure),
            (404, &[], &[], Success),
            (400, &[], &[], Failure),
        ];
        for (status, headers, trailer_pairs, expected) in cases {
            let res = response(*status, headers, trailers(trailer_pairs));
            assert_eq!(classify(&c, &res), *expected, "{status} {headers:?} {trailer_pairs:?}");
        }
    }

    #[test]
    fn retryable_and_unhealthy_codes_are_configurable() {
        let c =
            GrpcClassifier::new().retryable_codes([Code::Unavailable, Code::Aborted]).unhealthy_codes([Code::Internal]);
        let outcome = |code: &'static str| classify(&c, &response(200, &[("grpc-status", code)], None));
        assert_eq!(outcome("10"), Outcome::retryable());
        assert_eq!(outcome("14"), Outcome::retryable());
        assert_eq!(outcome("13"), Outcome::Failure);
        assert_eq!(outcome("2"), Outcome::Success);
        assert!(CodeSet::of([Code::Ok, Code::Unauthenticated]).contains(Code::Unauthenticated));
        assert!(!CodeSet::EMPTY.contains(Code::Ok));
    }

    #[test]
    fn errors_are_retryable_unless_told_otherwise() {
        let err = |e: BoxError, c: &GrpcClassifier| Classify::<Request<()>, Response<()>, _>::classify(c, &(), Err(&e));
        let reset = || BoxError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let refused = || BoxError::from(NotSent::new(reset()));
        let strict = GrpcClassifier::new().retry_sent_errors(false);
        assert_eq!(err(reset(), &GrpcClassifier::new()), Outcome::retryable());
        assert_eq!(err(refused(), &GrpcClassifier::new()), Outcome::retryable());
        assert_eq!(err(reset(), &strict), Outcome::Failure);
        assert_eq!(err(refused(), &strict), Outcome::retryable());
    }
}
