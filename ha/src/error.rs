//! The one error a stack returns: what the stack itself decided, with the
//! transport's error as its source.
//!
//! ```
//! use ha::{Error, ErrorKind};
//! use ha::core::NoHealthyEndpoint;
//!
//! let err = Error::from(tower::BoxError::from(NoHealthyEndpoint::new(3)));
//! assert_eq!(err.kind(), ErrorKind::NoHealthyEndpoint);
//! assert!(err.find::<NoHealthyEndpoint>().is_some());
//! ```

use std::error::Error as StdError;
use std::fmt;

use ha_core::error::{
    AttemptTimedOut, BreakerOpen, BudgetExhausted, DeadlineExceeded, NoHealthyEndpoint, RetriesExhausted,
};
use tower::BoxError;

/// What went wrong, as far as the stack is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No endpoint could take the request within the balancer's wait.
    NoHealthyEndpoint,
    /// The endpoint's circuit breaker is open.
    BreakerOpen,
    /// The request's overall deadline passed.
    DeadlineExceeded,
    /// The only attempt took longer than the per-try timeout.
    AttemptTimedOut,
    /// The retry budget refused a retry; the source is the last attempt's error.
    BudgetExhausted,
    /// Every attempt failed; the source is the last attempt's error.
    RetriesExhausted,
    /// The transport failed and the failure was not retried (not retryable,
    /// or a single attempt was allowed).
    Transport,
}

impl ErrorKind {
    /// The kind of the outermost `ha` error in the chain; a retry layer that
    /// gave up on an answer the stack itself made (no healthy endpoint, an
    /// open breaker, the deadline) takes that answer's kind, which says more.
    fn of(err: &(dyn StdError + 'static)) -> Self {
        let kind = Self::outermost(err);
        if matches!(kind, ErrorKind::RetriesExhausted | ErrorKind::BudgetExhausted) {
            if let Some(last) = err.source() {
                if let inner @ (ErrorKind::NoHealthyEndpoint | ErrorKind::BreakerOpen | ErrorKind::DeadlineExceeded) =
                    Self::outermost(last)
                {
                    return inner;
                }
            }
        }
        kind
    }

    fn outermost(err: &(dyn StdError + 'static)) -> Self {
        if err.is::<RetriesExhausted>() {
            ErrorKind::RetriesExhausted
        } else if err.is::<BudgetExhausted>() {
            ErrorKind::BudgetExhausted
        } else if err.is::<DeadlineExceeded>() {
            ErrorKind::DeadlineExceeded
        } else if err.is::<NoHealthyEndpoint>() {
            ErrorKind::NoHealthyEndpoint
        } else if err.is::<BreakerOpen>() {
            ErrorKind::BreakerOpen
        } else if err.is::<AttemptTimedOut>() {
            ErrorKind::AttemptTimedOut
        } else {
            ErrorKind::Transport
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NoHealthyEndpoint => "no healthy endpoint",
            ErrorKind::BreakerOpen => "circuit breaker open",
            ErrorKind::DeadlineExceeded => "deadline exceeded",
            ErrorKind::AttemptTimedOut => "attempt timed out",
            ErrorKind::BudgetExhausted => "retry budget exhausted",
            ErrorKind::RetriesExhausted => "retries exhausted",
            ErrorKind::Transport => "transport error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The error of an `ha` stack: its [`ErrorKind`], and the error that caused
/// it as [`source`](StdError::source) (the `ha-core` error the layer
/// returned, whose own source is the transport's error).
pub struct Error {
    kind: ErrorKind,
    inner: BoxError,
}

impl Error {
    /// What the stack decided.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The first error of type `E` in the chain, starting with the layer's own.
    pub fn find<E: StdError + 'static>(&self) -> Option<&E> {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(&*self.inner);
        while let Some(e) = cur {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            cur = e.source();
        }
        None
    }

    /// The innermost error of the chain: usually the transport's.
    pub fn root_cause(&self) -> &(dyn StdError + 'static) {
        let mut cur: &(dyn StdError + 'static) = &*self.inner;
        while let Some(next) = cur.source() {
            cur = next;
        }
        cur
    }

    /// The boxed error the stack's layers returned.
    pub fn into_inner(self) -> BoxError {
        self.inner
    }
}

impl From<BoxError> for Error {
    fn from(inner: BoxError) -> Self {
        match inner.downcast::<Error>() {
            Ok(err) => *err,
            Err(inner) => Error { kind: ErrorKind::of(&*inner), inner },
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ha::Error").field("kind", &self.kind).field("inner", &self.inner).finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ErrorKind::Transport {
            write!(f, "{}", self.inner)
        } else {
            write!(f, "{}: {}", self.kind, self.inner)
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn kinds_follow_the_outermost_ha_error() {
        let io = || BoxError::from(std::io::Error::other("reset"));
        let cases: Vec<(BoxError, ErrorKind)> = vec![
            (NoHealthyEndpoint::new(0).into(), ErrorKind::NoHealthyEndpoint),
            (BreakerOpen::new(Duration::ZERO).into(), ErrorKind::BreakerOpen),
            (DeadlineExceeded::new().into(), ErrorKind::DeadlineExceeded),
            (AttemptTimedOut::new(Duration::from_secs(1)).into(), ErrorKind::AttemptTimedOut),
            (BudgetExhausted::new(Some(io())).into(), ErrorKind::BudgetExhausted),
            (RetriesExhausted::new(3, NoHealthyEndpoint::new(1).into()).into(), ErrorKind::NoHealthyEndpoint),
            (RetriesExhausted::new(3, io()).into(), ErrorKind::RetriesExhausted),
            (
                RetriesExhausted::new(3, AttemptTimedOut::new(Duration::from_secs(1)).into()).into(),
                ErrorKind::RetriesExhausted,
            ),
            (BudgetExhausted::new(Some(BreakerOpen::new(Duration::ZERO).into())).into(), ErrorKind::BreakerOpen),
            (io(), ErrorKind::Transport),
        ];
        for (inner, kind) in cases {
            let err = Error::from(inner);
            assert_eq!(err.kind(), kind, "{err}");
        }
        let nested = Error::from(BoxError::from(RetriesExhausted::new(2, io())));
        assert_eq!(nested.root_cause().to_string(), "reset");
        assert!(nested.find::<std::io::Error>().is_some());
        let again = Error::from(BoxError::from(nested));
        assert_eq!(again.kind(), ErrorKind::RetriesExhausted);
    }
}
