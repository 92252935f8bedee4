/// One call's outcome as the windows count it: failed or not, slow or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    failed: bool,
    slow: bool,
}

impl Sample {
    /// A fast success.
    pub const SUCCESS: Sample = Sample { failed: false, slow: false };
    /// A fast failure.
    pub const FAILURE: Sample = Sample { failed: true, slow: false };

    /// A sample from its two facts.
    pub const fn new(failed: bool, slow: bool) -> Self {
        Sample { failed, slow }
    }

    /// The same sample, marked slow (or not).
    pub const fn with_slow(self, slow: bool) -> Self {
        Sample { slow, ..self }
    }

    /// True for a failure.
    pub const fn failed(self) -> bool {
        self.failed
    }

    /// True for a slow call.
    pub const fn slow(self) -> bool {
        self.slow
    }

    /// A non-zero code for a slot (zero is an empty slot).
    pub(crate) const fn code(self) -> u8 {
        1 | (self.failed as u8) << 1 | (self.slow as u8) << 2
    }
}

/// What a window holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowStats {
    /// Calls recorded.
    pub calls: u64,
    /// Of those, failures.
    pub failures: u64,
    /// Of those, slow calls (failed or not).
    pub slow: u64,
}

/// The old name of [`WindowStats`].
#[deprecated(note = "renamed to `WindowStats`")]
pub type WindowSnapshot = WindowStats;

impl WindowStats {
    /// Failures over calls, `0.0` with no calls.
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// Slow calls over calls, `0.0` with no calls.
    pub fn slow_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }

    /// Successes over calls, `1.0` with no calls.
    pub fn success_rate(&self) -> f64 {
        if self.calls == 0 {
            1.0
        } else {
            1.0 - self.failure_rate()
        }
    }
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}
