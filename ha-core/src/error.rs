//! The typed errors of the `ha` middlewares.
//!
//! Each is its own type implementing [`std::error::Error`], so that code
//! holding a [`tower::BoxError`] can ask precisely what happened:
//!
//! ```
//! use ha_core::error::{BreakerOpen, NoHealthyEndpoint};
//! use std::time::Duration;
//! use tower::BoxError;
//!
//! let err: BoxError = BreakerOpen::new(Duration::from_secs(5)).into();
//! match err.downcast_ref::<BreakerOpen>() {
//!     Some(open) => assert_eq!(open.retry_after(), Duration::from_secs(5)),
//!     None => unreachable!(),
//! }
//! assert!(err.downcast_ref::<NoHealthyEndpoint>().is_none());
//! ```
//!
//! [`never_sent`] tells whether an error proves the request never left this
//! process, which makes any request safe to retry.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// No endpoint could take the request: none is known, or every one is
/// ejected, open or failing its health checks, for longer than the
/// balancer's configured wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoHealthyEndpoint {
    known: usize,
}

impl NoHealthyEndpoint {
    /// The error, with the number of endpoints known (all of them unhealthy).
    pub fn new(known: usize) -> Self {
        NoHealthyEndpoint { known }
    }

    /// How many endpoints the balancer knew when it gave up.
    pub fn known_endpoints(&self) -> usize {
        self.known
    }
}

impl fmt::Display for NoHealthyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.known == 0 {
            f.write_str("no endpoint is known")
        } else {
            write!(f, "none of the {} known endpoints is healthy", self.known)
        }
    }
}

impl Error for NoHealthyEndpoint {}

/// A retry or hedge was not sent because the shared budget for extra load is
/// spent. Carries the outcome of the last attempt, if it was an error.
#[derive(Debug)]
pub struct BudgetExhausted {
    last: Option<tower::BoxError>,
}

impl BudgetExhausted {
    /// The error, keeping the last attempt's error as its source.
    pub fn new(last: Option<tower::BoxError>) -> Self {
        BudgetExhausted { last }
    }

    /// The last attempt's error, which the budget stopped us from retrying.
    pub fn into_last_error(self) -> Option<tower::BoxError> {
        self.last
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("retry budget exhausted")
    }
}

impl Error for BudgetExhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.last.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// A retry layer retried a request and every attempt failed: the error of
/// the last one, marked so that retry layers further up do not retry it
/// again.
///
/// Retrying at every layer of a call chain multiplies the load on a failing
/// dependency (three layers of three attempts: 27 calls for one request).
/// Only the layer right above the failing one should retry; a layer that
/// gave up says so with this error (the SRE book's "overloaded; don't
/// retry"), and [`retried_below`] recognises it, or a [`BudgetExhausted`],
/// anywhere in an error's `source()` chain.
#[derive(Debug)]
pub struct RetriesExhausted {
    attempts: u32,
    last: tower::BoxError,
}

impl RetriesExhausted {
    /// The error after `attempts` attempts, the last of which failed with `last`.
    pub fn new(attempts: u32, last: tower::BoxError) -> Self {
        RetriesExhausted { attempts, last }
    }

    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's error.
    pub fn into_last_error(self) -> tower::BoxError {
        self.last
    }
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gave up after {} attempts", self.attempts)
    }
}

impl Error for RetriesExhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.last)
    }
}

/// True when `err`, or an error in its `source()` chain, says a retry layer
/// further down already retried this request ([`RetriesExhausted`]) or was
/// refused a retry by its budget ([`BudgetExhausted`]). Retrying it again
/// here would multiply the load at every layer, so `ha` retry layers return
/// such errors as they are.
pub fn retried_below(err: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<RetriesExhausted>() || e.is::<BudgetExhausted>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// A circuit breaker is open and rejected the call without sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerOpen {
    retry_after: Duration,
}

impl BreakerOpen {
    /// The error, saying how long until the breaker admits a probe.
    pub fn new(retry_after: Duration) -> Self {
        BreakerOpen { retry_after }
    }

    /// How long from the rejection until the breaker lets a probe through
    /// (zero when a probe is allowed now but all probe permits are taken).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit breaker is open; a probe is allowed in {:?}", self.retry_after)
    }
}

impl Error for BreakerOpen {}

/// One attempt took longer than its per-try timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptTimedOut {
    after: Duration,
}

impl AttemptTimedOut {
    /// The error, with the timeout that elapsed.
    pub fn new(after: Duration) -> Self {
        AttemptTimedOut { after }
    }

    /// The per-try timeout that elapsed.
    pub fn timeout(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt timed out after {:?}", self.after)
    }
}

impl Error for AttemptTimedOut {}

/// The logical request's overall deadline passed; no further attempt is made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadlineExceeded {
    _priv: (),
}

impl DeadlineExceeded {
    /// The error.
    pub fn new() -> Self {
        DeadlineExceeded { _priv: () }
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request deadline exceeded")
    }
}

impl Error for DeadlineExceeded {}

/// A transport failed before the request left this process (it could not
/// connect, resolve the name, or was refused). Transports wrap such errors in
/// it, so that [`never_sent`] knows any request that failed this way is safe
/// to retry, whatever its method. The transport's error is its `source()`.
///
/// ```
/// use ha_core::error::{never_sent, NotSent};
///
/// let err: tower::BoxError = NotSent::new("tcp connect error: timed out".into()).into();
/// assert!(never_sent(&*err));
/// ```
#[derive(Debug)]
pub struct NotSent {
    cause: tower::BoxError,
}

impl NotSent {
    /// Marks `cause` as a failure before anything was sent.
    pub fn new(cause: tower::BoxError) -> Self {
        NotSent { cause }
    }

    /// The transport's error.
    pub fn into_cause(self) -> tower::BoxError {
        self.cause
    }
}

impl fmt::Display for NotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request not sent: {}", self.cause)
    }
}

impl Error for NotSent {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.cause)
    }
}

/// True when `err`, or an error in its `source()` chain, says the request
/// ran out of time: an `ha` per-try timeout ([`AttemptTimedOut`]) or
/// deadline ([`DeadlineExceeded`]), tower's `Elapsed`, or an I/O timeout.
/// The server held it past the caller's patience, which is what an
/// overloaded server's queue does to requests it would otherwise serve.
pub fn timed_out(err: &(dyn Error + 'static)) -> bool {
    chain(err).any(|e| {
        e.is::<AttemptTimedOut>()
            || e.is::<DeadlineExceeded>()
            || e.is::<tower::timeout::error::Elapsed>()
            || io_kind(e).is_some_and(|k| k == std::io::ErrorKind::TimedOut)
    })
}

/// True when `err`, or an error in its `source()` chain, proves the request
/// never reached a server: an `ha` breaker or balancer refused it, a
/// transport said so with [`NotSent`], or the connection was refused. Such
/// a request is safe to retry whatever its method.
pub fn never_sent(err: &(dyn Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    chain(err).any(|e| {
        e.is::<BreakerOpen>()
            || e.is::<NoHealthyEndpoint>()
            || e.is::<NotSent>()
            || io_kind(e).is_some_and(|k| matches!(k, ConnectionRefused | AddrNotAvailable | AddrInUse))
    })
}

/// True when `err`, or an error in its `source()` chain, says the
/// connection the request went out on was lost before an answer came: reset
/// by the peer, aborted, or a broken pipe. The server may have acted on the
/// request (so it counts as an attempt), and its host may be down: a
/// process killed with its connections open resets every one of them, the
/// pooled ones the client has not yet seen closed included.
pub fn connection_lost(err: &(dyn Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    chain(err).any(|e| io_kind(e).is_some_and(|k| matches!(k, ConnectionReset | ConnectionAborted | BrokenPipe)))
}

/// `err` and the errors of its `source()` chain, outermost first.
fn chain<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

/// The kind of `err` when it is an I/O error.
fn io_kind(err: &(dyn Error + 'static)) -> Option<std::io::ErrorKind> {
    err.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::BoxError;

    #[derive(Debug)]
    struct Wrapper(Box<dyn Error + Send + Sync>);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn each_error_downcasts_from_box_error_to_itself_only() {
        let errors: Vec<BoxError> = vec![
            NoHealthyEndpoint::new(3).into(),
            BudgetExhausted::new(None).into(),
            BreakerOpen::new(Duration::from_secs(2)).into(),
            AttemptTimedOut::new(Duration::from_millis(250)).into(),
            DeadlineExceeded::new().into(),
            RetriesExhausted::new(3, AttemptTimedOut::new(Duration::from_millis(1)).into()).into(),
        ];
        let hits = |e: &BoxError| {
            [
                e.is::<NoHealthyEndpoint>(),
                e.is::<BudgetExhausted>(),
                e.is::<BreakerOpen>(),
                e.is::<AttemptTimedOut>(),
                e.is::<DeadlineExceeded>(),
                e.is::<RetriesExhausted>(),
            ]
        };
        for (i, e) in errors.iter().enumerate() {
            let h = hits(e);
            for (j, hit) in h.iter().enumerate() {
                assert_eq!(*hit, i == j, "error {i} ({e}) matched type {j}");
            }
        }
        assert_eq!(errors[0].downcast_ref::<NoHealthyEndpoint>().unwrap().known_endpoints(), 3);
        assert_eq!(errors[2].downcast_ref::<BreakerOpen>().unwrap().retry_after(), Duration::from_secs(2));
        assert_eq!(errors[3].downcast_ref::<AttemptTimedOut>().unwrap().timeout(), Duration::from_millis(250));
    }

    #[test]
    fn messages_say_what_happened() {
        assert_eq!(NoHealthyEndpoint::new(0).to_string(), "no endpoint is known");
        assert_eq!(NoHealthyEndpoint::new(4).to_string(), "none of the 4 known endpoints is healthy");
        assert!(BreakerOpen::new(Duration::from_secs(1)).to_string().contains("1s"));
        assert!(AttemptTimedOut::new(Duration::from_millis(5)).to_string().contains("5ms"));
    }

    #[test]
    fn budget_exhausted_keeps_the_last_error_as_source() {
        let inner: BoxError = AttemptTimedOut::new(Duration::from_secs(1)).into();
        let err = BudgetExhausted::new(Some(inner));
        assert!(err.source().unwrap().is::<AttemptTimedOut>());
        assert!(err.into_last_error().unwrap().is::<AttemptTimedOut>());
    }

    #[test]
    fn retried_below_finds_either_marker_anywhere_in_the_chain() {
        let gave_up = RetriesExhausted::new(3, AttemptTimedOut::new(Duration::from_secs(1)).into());
        assert_eq!(gave_up.attempts(), 3);
        assert_eq!(gave_up.to_string(), "gave up after 3 attempts");
        assert!(gave_up.source().unwrap().is::<AttemptTimedOut>());
        assert!(retried_below(&Wrapper(Box::new(gave_up))));
        assert!(retried_below(&Wrapper(Box::new(BudgetExhausted::new(None)))));
        assert!(!retried_below(&Wrapper(Box::new(AttemptTimedOut::new(Duration::ZERO)))));
        assert!(!retried_below(&BreakerOpen::new(Duration::ZERO)));
    }

    #[test]
    fn timed_out_walks_the_source_chain() {
        assert!(timed_out(&Wrapper(Box::new(AttemptTimedOut::new(Duration::from_secs(1))))));
        assert!(timed_out(&DeadlineExceeded::new()));
        assert!(timed_out(&Wrapper(Box::new(tower::timeout::error::Elapsed::new()))));
        assert!(timed_out(&Wrapper(Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")))));
        assert!(!timed_out(&Wrapper(Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused")))));
        assert!(!timed_out(&BreakerOpen::new(Duration::ZERO)));
    }

    #[test]
    fn never_sent_walks_the_source_chain() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let wrapped = Wrapper(Box::new(refused));
        assert!(never_sent(&wrapped));
        let reset = Wrapper(Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")));
        assert!(!never_sent(&reset));
        assert!(never_sent(&BreakerOpen::new(Duration::ZERO)));
        assert!(never_sent(&Wrapper(Box::new(NoHealthyEndpoint::new(1)))));
        assert!(!never_sent(&AttemptTimedOut::new(Duration::ZERO)));
    }

    #[test]
    fn a_lost_connection_is_found_in_the_source_chain() {
        use std::io::{Error as Io, ErrorKind};
        for kind in [ErrorKind::ConnectionReset, ErrorKind::ConnectionAborted, ErrorKind::BrokenPipe] {
            assert!(connection_lost(&Wrapper(Box::new(Io::from(kind)))), "{kind:?}");
        }
        // Refused: never sent, not lost; nor is an error that is no I/O.
        assert!(!connection_lost(&Wrapper(Box::new(Io::from(ErrorKind::ConnectionRefused)))));
        assert!(!connection_lost(&AttemptTimedOut::new(Duration::ZERO)));
    }
}
