//! What a tonic client sees of a stack's error: a `tonic::Status` whose
//! code says what the stack decided and whose source is the [`Error`].

use std::sync::Arc;

use ha_core::error::AttemptTimedOut;
use tonic::{Code, Status};

use crate::error::{Error, ErrorKind};

/// The gRPC code of a stack's error:
///
/// | [`ErrorKind`] | code |
/// |---|---|
/// | `NoHealthyEndpoint`, `BreakerOpen` | `UNAVAILABLE` |
/// | `DeadlineExceeded`, `AttemptTimedOut` | `DEADLINE_EXCEEDED` |
/// | `BudgetExhausted` | `RESOURCE_EXHAUSTED` |
/// | `RetriesExhausted`, `Transport` | the code of a `Status` in the chain, else `DEADLINE_EXCEEDED` when the last attempt timed out, else `UNAVAILABLE` |
pub fn code_of(err: &Error) -> Code {
    match err.kind() {
        ErrorKind::NoHealthyEndpoint | ErrorKind::BreakerOpen => Code::Unavailable,
        ErrorKind::DeadlineExceeded | ErrorKind::AttemptTimedOut => Code::DeadlineExceeded,
        ErrorKind::BudgetExhausted => Code::ResourceExhausted,
        _ => {
            if let Some(status) = err.find::<Status>() {
                status.code()
            } else if err.find::<AttemptTimedOut>().is_some() {
                Code::DeadlineExceeded
            } else {
                Code::Unavailable
            }
        }
    }
}

/// The `Status` a tonic client gets for a stack's error: the code of
/// [`code_of`], the error's message, and the error as its source.
///
/// ```
/// use ha::core::NoHealthyEndpoint;
///
/// let err = ha::Error::from(tower::BoxError::from(NoHealthyEndpoint::new(3)));
/// let status = ha::tonic::status_of(err);
/// assert_eq!(status.code(), tonic::Code::Unavailable);
/// ```
pub fn status_of(err: Error) -> Status {
    let mut status = Status::new(code_of(&err), err.to_string());
    status.set_source(Arc::new(err));
    status
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        status_of(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::error::{BreakerOpen, BudgetExhausted, DeadlineExceeded, NoHealthyEndpoint, RetriesExhausted};
    use std::time::Duration;
    use tower::BoxError;

    #[test]
    fn stack_errors_map_to_grpc_codes() {
        let io = || BoxError::from(std::io::Error::other("reset"));
        let cases: Vec<(BoxError, Code)> = vec![
            (NoHealthyEndpoint::new(3).into(), Code::Unavailable),
            (BreakerOpen::new(Duration::from_secs(1)).into(), Code::Unavailable),
            (DeadlineExceeded::new().into(), Code::DeadlineExceeded),
            (AttemptTimedOut::new(Duration::from_secs(1)).into(), Code::DeadlineExceeded),
            (BudgetExhausted::new(Some(io())).into(), Code::ResourceExhausted),
            (RetriesExhausted::new(3, io()).into(), Code::Unavailable),
            (RetriesExhausted::new(3, AttemptTimedOut::new(Duration::ZERO).into()).into(), Code::DeadlineExceeded),
            (RetriesExhausted::new(2, Status::permission_denied("no").into()).into(), Code::PermissionDenied),
            (io(), Code::Unavailable),
            (Status::data_loss("torn").into(), Code::DataLoss),
        ];
        for (inner, code) in cases {
            let err = Error::from(inner);
            let message = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
            let source = std::error::Error::source(&status).expect("the ha error is the source");
            assert!(source.is::<Error>());
        }
    }
}
