//! Output over time: per one-second window (by sending time), the user
//! requests sent, their success rate and p99, and the attempts each backend
//! of the last layer received; and the p99 of the steady state against the
//! worst second, which a join or restart must keep close.

use serde::Serialize;

use super::report::percentile;
use super::run::RunResult;

const SECOND: u64 = 1_000_000_000;

/// One second of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Second {
    /// Start of the window, s from the start of traffic.
    pub t_s: u64,
    /// User requests sent in the window.
    pub requests: u64,
    /// Their success rate.
    pub success_rate: f64,
    /// Their p99 latency, ms.
    pub p99_ms: f64,
    /// Attempts each backend of the last layer received in the window (its
    /// share is its count over the sum).
    pub attempts: Vec<u64>,
}

/// The per-second windows of `run` up to `end_ns` (the end of traffic).
pub fn seconds(run: &RunResult, end_ns: u64) -> Vec<Second> {
    let n = end_ns.div_ceil(SECOND).max(1) as usize;
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut ok = vec![0u64; n];
    for r in &run.records {
        let w = ((r.sent_ns / SECOND) as usize).min(n - 1);
        lat[w].push(r.latency_ns);
        ok[w] += u64::from(r.ok);
    }
    (0..n)
        .map(|w| {
            lat[w].sort_unstable();
            let requests = lat[w].len() as u64;
            Second {
                t_s: w as u64,
                requests,
                success_rate: if requests == 0 { 1.0 } else { ok[w] as f64 / requests as f64 },
                p99_ms: percentile(&lat[w], 0.99) as f64 / 1e6,
                attempts: run.arrivals_per_backend.iter().map(|a| a.get(w).copied().unwrap_or(0)).collect(),
            }
        })
        .collect()
}

/// The p99 of the requests sent before `fault_start_ns` (all of them when
/// there is no fault), ms: the steady state.
pub fn steady_p99_ms(run: &RunResult, fault_start_ns: Option<u64>) -> f64 {
    let mut l: Vec<u64> =
        run.records.iter().filter(|r| fault_start_ns.is_none_or(|f| r.sent_ns < f)).map(|r| r.latency_ns).collect();
    l.sort_unstable();
    percentile(&l, 0.99) as f64 / 1e6
}

/// The worst one-second p99 among windows with at least 100 requests (so
/// that one request is not a window's p99), ms.
pub fn worst_second_p99_ms(seconds: &[Second]) -> f64 {
    seconds.iter().filter(|s| s.requests >= 100).map(|s| s.p99_ms).fold(0.0, f64::max)
}
