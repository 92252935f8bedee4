use std::time::Duration;

/// What one call's result means to the `ha` policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded; the endpoint is healthy.
    Success,
    /// The call failed and the request may be sent again, after
    /// `retry_after` when the server said how long to wait.
    RetryableFailure {
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The call failed and the request must not be sent again.
    Failure,
    /// The result says nothing about the endpoint's health (for example the
    /// caller cancelled it); it counts for nothing.
    Ignored,
}

impl Outcome {
    /// A retryable failure with no server-supplied delay.
    pub const fn retryable() -> Self {
        Outcome::RetryableFailure { retry_after: None }
    }

    /// True for both kinds of failure.
    pub const fn is_failure(&self) -> bool {
        matches!(self, Outcome::RetryableFailure { .. } | Outcome::Failure)
    }

    /// True for [`Outcome::Success`].
    pub const fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// True when the request may be sent again.
    pub const fn is_retryable(&self) -> bool {
        matches!(self, Outcome::RetryableFailure { .. })
    }

    /// True unless the outcome is [`Outcome::Ignored`].
    pub const fn counts(&self) -> bool {
        !matches!(self, Outcome::Ignored)
    }

    /// The server's requested delay before a retry, if any.
    pub const fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::RetryableFailure { retry_after } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_agree_with_variants() {
        let d = Some(Duration::from_secs(3));
        let cases = [
            (Outcome::Success, true, false, false, true, None),
            (Outcome::RetryableFailure { retry_after: d }, false, true, true, true, d),
            (Outcome::Failure, false, true, false, true, None),
            (Outcome::Ignored, false, false, false, false, None),
        ];
        for (o, success, failure, retryable, counts, after) in cases {
            assert_eq!(o.is_success(), success, "{o:?}");
            assert_eq!(o.is_failure(), failure, "{o:?}");
            assert_eq!(o.is_retryable(), retryable, "{o:?}");
            assert_eq!(o.counts(), counts, "{o:?}");
            assert_eq!(o.retry_after(), after, "{o:?}");
        }
    }
}
