//! One classification of results, read by every `ha` policy.
//!
//! A [`Classify`] turns a service's `Result<Response, Error>` into an
//! [`Outcome`]. The breaker counts failures with it, the retry layer retries
//! only what it calls retryable, the budget and outlier detection read it:
//! one decision, so the layers never disagree about what failed.
//!
//! Classification may depend on the request (an HTTP `POST` that may have
//! reached the server must not be retried, a `GET` may), so a classifier
//! first captures what it needs of the request, cheaply, before the request
//! is sent ([`Classify::request_info`]), and reads it back when the result
//! arrives.
//!
//! ```
//! use ha_core::classify::{classify_fn, Classify, Outcome};
//!
//! // A gRPC-like service whose responses carry a status code.
//! let classifier = classify_fn(|result: Result<&u16, &std::io::Error>| match result {
//!     Ok(0) => Outcome::Success,
//!     Ok(14) => Outcome::retryable(), // UNAVAILABLE
//!     Ok(_) => Outcome::Failure,
//!     Err(_) => Outcome::retryable(),
//! });
//! let info = Classify::<&str, u16, std::io::Error>::request_info(&classifier, &"req");
//! assert_eq!(Classify::<&str, _, _>::classify(&classifier, &info, Ok(&14)), Outcome::retryable());
//! ```

#[cfg(feature = "http")]
mod http;
mod outcome;

#[cfg(feature = "http")]
pub use self::http::{HttpClassifier, HttpRequestInfo};
pub use outcome::Outcome;

use std::marker::PhantomData;

/// Decides the [`Outcome`] of a call from its result.
///
/// Implementations are cheap to call and to clone; middlewares hold one per
/// service and call it once per attempt.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot classify the result of a `{Req}`: `Result<{Res}, {E}>`",
    label = "no classification for these request, response and error types",
    note = "`HttpClassifier` classifies `http::Request<B>` / `http::Response<B>` with `tower::BoxError` or `std::io::Error` errors; for other types use `ErrorsAreFailures`, `classify_fn` or your own `impl Classify`"
)]
pub trait Classify<Req, Res, E> {
    /// What the classifier keeps of the request until its result arrives.
    type RequestInfo: Send + Sync + 'static;

    /// Captures what classification needs of `req`, before it is sent.
    fn request_info(&self, req: &Req) -> Self::RequestInfo;

    /// Classifies the result of the call made with the request `info` came from.
    fn classify(&self, info: &Self::RequestInfo, result: Result<&Res, &E>) -> Outcome;
}

/// The classifier for services whose errors are their only failures: every
/// `Ok` is a success, every `Err` a failure, retryable unless built with
/// [`ErrorsAreFailures::non_retryable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorsAreFailures {
    retryable: bool,
}

impl ErrorsAreFailures {
    /// Errors are retryable failures.
    pub const fn retryable() -> Self {
        ErrorsAreFailures { retryable: true }
    }

    /// Errors are failures that must not be retried (the service is not
    /// idempotent and the error may come after the server acted).
    pub const fn non_retryable() -> Self {
        ErrorsAreFailures { retryable: false }
    }
}

impl Default for ErrorsAreFailures {
    fn default() -> Self {
        ErrorsAreFailures::retryable()
    }
}

impl<Req, Res, E> Classify<Req, Res, E> for ErrorsAreFailures {
    type RequestInfo = ();

    fn request_info(&self, _req: &Req) {}

    fn classify(&self, _info: &(), result: Result<&Res, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) if self.retryable => Outcome::retryable(),
            Err(_) => Outcome::Failure,
        }
    }
}

/// A classifier made of a function of the result; see [`classify_fn`].
pub struct ClassifyFn<F, Res, E> {
    f: F,
    _marker: PhantomData<fn(&Res, &E)>,
}

impl<F: Clone, Res, E> Clone for ClassifyFn<F, Res, E> {
    fn clone(&self) -> Self {
        ClassifyFn { f: self.f.clone(), _marker: PhantomData }
    }
}

impl<F, Res, E> std::fmt::Debug for ClassifyFn<F, Res, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

/// Builds a classifier from a function of the result that ignores the request.
pub fn classify_fn<F, Res, E>(f: F) -> ClassifyFn<F, Res, E>
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    ClassifyFn { f, _marker: PhantomData }
}

impl<F, Req, Res, E> Classify<Req, Res, E> for ClassifyFn<F, Res, E>
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    type RequestInfo = ();

    fn request_info(&self, _req: &Req) {}

    fn classify(&self, _info: &(), result: Result<&Res, &E>) -> Outcome {
        (self.f)(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_failures_follows_its_flag() {
        let r = ErrorsAreFailures::retryable();
        let n = ErrorsAreFailures::non_retryable();
        let ok: Result<&u8, &()> = Ok(&1);
        let err: Result<&u8, &()> = Err(&());
        assert_eq!(Classify::<(), _, _>::classify(&r, &(), ok), Outcome::Success);
        assert_eq!(Classify::<(), _, _>::classify(&r, &(), err), Outcome::retryable());
        assert_eq!(Classify::<(), _, _>::classify(&n, &(), err), Outcome::Failure);
        assert_eq!(ErrorsAreFailures::default(), r);
    }
}
