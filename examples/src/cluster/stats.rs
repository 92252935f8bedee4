//! What happened to every request, and its summaries: the live one-second
//! windows of the view, and the per-second timeline and per-phase figures
//! of the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::traffic::Answer;

/// Which client sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The ha stack.
    Ha = 0,
    /// The baseline: round robin over the static list, no retries.
    Baseline = 1,
}

/// One request's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Which client.
    pub side: Side,
    /// When it was sent, in milliseconds from the start of the traffic.
    pub start_ms: f64,
    /// How long until its answer (or its failure), in milliseconds.
    pub latency_ms: f64,
    /// Whether the user got a correct answer.
    pub ok: bool,
    /// The instance that answered (ha: the `x-served-by` of the final
    /// answer; baseline: the instance it was sent to).
    pub instance: Option<u8>,
}

impl Sample {
    /// When it completed, in milliseconds from the start of the traffic.
    pub fn end_ms(&self) -> f64 {
        self.start_ms + self.latency_ms
    }
}

/// Collects samples from every request task.
#[derive(Debug)]
pub struct Recorder {
    t0: Instant,
    samples: Mutex<Vec<Sample>>,
    in_flight: [AtomicU64; 2],
    failures: Mutex<[BTreeMap<String, u64>; 2]>,
    /// Set once the figures are cut (see [`Recorder::close`]).
    closed: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Recorder {
    /// A recorder whose clock starts at `t0`.
    pub fn new(t0: Instant) -> Recorder {
        Recorder {
            t0,
            samples: Mutex::new(Vec::with_capacity(100_000)),
            in_flight: [AtomicU64::new(0), AtomicU64::new(0)],
            failures: Mutex::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Cuts the figures: answers that come after (requests still
    /// unanswered when the run ended, which its shutdown then fails) are
    /// not recorded; they are counted apart as unfinished.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// The start of the traffic.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Milliseconds since the start.
    pub fn ms_since_start(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64() * 1e3
    }

    /// Marks a request of `side` sent; returns its start time.
    pub fn begin(&self, side: Side) -> Instant {
        self.in_flight[side as usize].fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    /// Records the answer to a request of `side` sent at `start`.
    pub fn end(&self, side: Side, start: Instant, answer: Answer) {
        if self.closed.load(Ordering::Relaxed) {
            self.in_flight[side as usize].fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let latency = start.elapsed();
        let ok = answer.failure.is_none();
        let instance = answer.instance;
        if let Some(why) = answer.failure {
            *lock(&self.failures)[side as usize].entry(why).or_default() += 1;
        }
        let sample = Sample {
            side,
            start_ms: self.ms_since_start(start),
            latency_ms: latency.as_secs_f64() * 1e3,
            ok,
            instance,
        };
        lock(&self.samples).push(sample);
        self.in_flight[side as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests of `side` sent and not yet answered.
    pub fn in_flight(&self, side: Side) -> u64 {
        self.in_flight[side as usize].load(Ordering::Relaxed)
    }

    /// The samples recorded from index `from` on (in completion order).
    pub fn since(&self, from: usize) -> Vec<Sample> {
        let s = lock(&self.samples);
        s.get(from..).map(<[Sample]>::to_vec).unwrap_or_default()
    }

    /// Why requests of `side` failed: reason and count.
    pub fn failure_reasons(&self, side: Side) -> BTreeMap<String, u64> {
        lock(&self.failures)[side as usize].clone()
    }

    /// Every sample so far.
    pub fn all(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }
}

/// The `q` quantile (0..=1) of `values`, which it sorts; 0 when empty.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(f64::total_cmp);
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// One client's figures over some set of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SideFigures {
    /// Requests.
    pub requests: u64,
    /// Requests the user saw fail.
    pub failures: u64,
    /// Share of requests that succeeded, in percent (100 with no requests).
    pub success_pct: f64,
    /// Median latency, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Highest latency, in milliseconds.
    pub max_ms: f64,
}

impl SideFigures {
    /// The figures of `side`'s samples among `samples`.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>, side: Side) -> SideFigures {
        let mut lat = Vec::new();
        let mut failures = 0;
        for s in samples.into_iter().filter(|s| s.side == side) {
            lat.push(s.latency_ms);
            failures += u64::from(!s.ok);
        }
        let requests = lat.len() as u64;
        let success_pct = if requests == 0 { 100.0 } else { 100.0 * (requests - failures) as f64 / requests as f64 };
        let p50_ms = quantile(&mut lat, 0.5);
        let p99_ms = quantile(&mut lat, 0.99);
        let max_ms = lat.last().copied().unwrap_or(0.0);
        SideFigures { requests, failures, success_pct, p50_ms, p99_ms, max_ms }
    }
}

/// One second of the timeline, by request start time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// The second (from the start of the traffic).
    pub t_s: u32,
    /// ha's figures.
    pub ha: SideFigures,
    /// The baseline's figures.
    pub baseline: SideFigures,
    /// Per instance, the share of ha's answered requests it served, in percent.
    pub ha_share_pct: Vec<f64>,
    /// Per instance, the share of the baseline's requests sent to it, in percent.
    pub baseline_share_pct: Vec<f64>,
    /// ha's attempts per request (1 + retries / requests).
    pub ha_attempts: f64,
}

/// Shares of `side`'s samples per instance, in percent of those with an instance.
pub fn shares<'a>(samples: impl IntoIterator<Item = &'a Sample>, side: Side, instances: usize) -> Vec<f64> {
    let mut counts = vec![0u64; instances];
    let mut total = 0u64;
    for s in samples.into_iter().filter(|s| s.side == side && (side == Side::Baseline || s.ok)) {
        if let Some(i) = s.instance.map(usize::from).filter(|&i| i < instances) {
            counts[i] += 1;
            total += 1;
        }
    }
    counts.iter().map(|&c| if total == 0 { 0.0 } else { 100.0 * c as f64 / total as f64 }).collect()
}

/// The per-second timeline of `samples` over `seconds` seconds;
/// `retries[s]` is ha's cumulative retry count at the end of second `s`.
pub fn timeline(samples: &[Sample], seconds: u32, instances: usize, retries: &[u64]) -> Vec<Second> {
    let mut buckets: Vec<Vec<Sample>> = vec![Vec::new(); seconds as usize];
    for s in samples {
        let b = (s.start_ms / 1e3).floor() as usize;
        if let Some(bucket) = buckets.get_mut(b) {
            bucket.push(*s);
        }
    }
    buckets
        .iter()
        .enumerate()
        .map(|(t, b)| {
            let ha = SideFigures::of(b, Side::Ha);
            let before = if t == 0 { 0 } else { retries.get(t - 1).copied().unwrap_or(0) };
            let r = retries.get(t).copied().unwrap_or(before).saturating_sub(before);
            Second {
                t_s: t as u32,
                ha,
                baseline: SideFigures::of(b, Side::Baseline),
                ha_share_pct: shares(b, Side::Ha, instances),
                baseline_share_pct: shares(b, Side::Baseline, instances),
                ha_attempts: if ha.requests == 0 { 0.0 } else { 1.0 + r as f64 / ha.requests as f64 },
            }
        })
        .collect()
}

/// Fine buckets (by start time) of one side: (success share, share of
/// answered requests served by `zone`'s instances), `None` for empty ones.
pub fn fine_buckets(
    samples: &[Sample],
    side: Side,
    from_ms: f64,
    to_ms: f64,
    bucket: Duration,
    zone: &[usize],
) -> Vec<Option<(f64, f64)>> {
    let width = bucket.as_secs_f64() * 1e3;
    let n = ((to_ms - from_ms) / width).ceil().max(0.0) as usize;
    let mut counts = vec![(0u64, 0u64, 0u64, 0u64); n];
    for s in samples.iter().filter(|s| s.side == side && s.start_ms >= from_ms && s.start_ms < to_ms) {
        let b = ((s.start_ms - from_ms) / width) as usize;
        let Some(c) = counts.get_mut(b) else { continue };
        c.0 += 1;
        c.1 += u64::from(s.ok);
        let counted = side == Side::Baseline || s.ok;
        if let Some(i) = s.instance.filter(|_| counted) {
            c.2 += 1;
            c.3 += u64::from(zone.contains(&usize::from(i)));
        }
    }
    counts
        .into_iter()
        .map(|(n, ok, with, in_zone)| {
            (n > 0).then(|| (ok as f64 / n as f64, if with == 0 { 0.0 } else { in_zone as f64 / with as f64 }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(side: Side, start_ms: f64, ok: bool, instance: u8) -> Sample {
        Sample { side, start_ms, latency_ms: 1.0 + start_ms / 1000.0, ok, instance: Some(instance) }
    }

    #[test]
    fn quantiles_and_figures() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
        let samples = [s(Side::Ha, 0.0, true, 0), s(Side::Ha, 10.0, false, 1), s(Side::Baseline, 5.0, true, 2)];
        let f = SideFigures::of(&samples, Side::Ha);
        assert_eq!((f.requests, f.failures, f.success_pct), (2, 1, 50.0));
        assert_eq!(shares(&samples, Side::Ha, 3), vec![100.0, 0.0, 0.0]);
    }

    #[test]
    fn timeline_buckets_by_start_second() {
        let samples = [s(Side::Ha, 100.0, true, 0), s(Side::Ha, 1100.0, true, 1), s(Side::Ha, 1200.0, true, 1)];
        let t = timeline(&samples, 2, 2, &[0, 1]);
        assert_eq!(t[0].ha.requests, 1);
        assert_eq!(t[1].ha.requests, 2);
        assert_eq!(t[1].ha_share_pct, vec![0.0, 100.0]);
        assert_eq!(t[1].ha_attempts, 1.5);
        let fine = fine_buckets(&samples, Side::Ha, 0.0, 2000.0, Duration::from_millis(500), &[1]);
        assert_eq!(fine, vec![Some((1.0, 0.0)), None, Some((1.0, 1.0)), None]);
    }
}
