//! Turning runs into numbers: per-run summaries (one JSON object per line),
//! markdown tables averaged over seeds, and SVG latency plots.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::run::RunResult;
use super::scenario::Scenario;
use super::timeline;

/// The measurements of one (scenario, contender, seed), as printed in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Scenario (file name without `.toml`).
    pub scenario: String,
    /// Contender.
    pub contender: String,
    /// Seed.
    pub seed: u64,
    /// User requests sent.
    pub requests: u64,
    /// Fraction of user requests that succeeded within the timeout.
    pub success_rate: f64,
    /// Latency percentiles over every user request (failures at the time
    /// they failed, timeouts at the timeout), ms.
    pub p50_ms: f64,
    /// p90, ms.
    pub p90_ms: f64,
    /// p99, ms.
    pub p99_ms: f64,
    /// p99.9, ms.
    pub p999_ms: f64,
    /// p99.99, ms.
    pub p9999_ms: f64,
    /// p99 of the requests that succeeded, ms (0 when none did). Beside
    /// `p99_ms`: a contender that fails many requests fast has a low p99
    /// over every request; this one says how long its answers took.
    pub p99_ok_ms: f64,
    /// Attempts received by the (last layer's) backends divided by the
    /// attempts needed with no retry and no hedge.
    pub attempts_per_request: f64,
    /// Fraction of the (last layer's) attempts each backend received.
    pub backend_share: Vec<f64>,
    /// Successful user requests per second of virtual time.
    pub goodput_per_s: f64,
    /// Seconds from the end of the scheduled faults until the success rate
    /// (per 1 s window of sending time) stays within 5 points of its
    /// pre-fault level; `null` when the scenario has no bounded fault.
    pub recovery_s: Option<f64>,
    /// Whether the success rate was back to its pre-fault level by the end
    /// of traffic (`null` when the scenario has no bounded fault); when not,
    /// `recovery_s` is the time from the fault's end to the end of traffic.
    pub recovered: Option<bool>,
    /// Endpoints the contender ejected (`null` when it has no outlier
    /// ejection).
    pub ejections: Option<u64>,
    /// The most failed answers any ejected backend served before its first
    /// ejection (`null` when nothing was ejected).
    pub errors_before_ejection: Option<u64>,
    /// The first backend with scheduled changes (the faulted one): its
    /// share of attempts while a change was on, as a multiple of its fair
    /// share (`null` without changes).
    pub faulted_share_on: Option<f64>,
    /// Its share while no change was on, between the start of its first
    /// change and the end of its last (a flapping backend's up periods).
    pub faulted_share_off: Option<f64>,
    /// Seconds from the end of its last change to its first successful answer.
    pub faulted_back_after_s: Option<f64>,
    /// p99 of the requests sent before the first scheduled change (of all
    /// of them without changes), ms.
    pub steady_p99_ms: f64,
    /// The worst p99 of a one-second window (of at least 100 requests), ms.
    pub worst_second_p99_ms: f64,
    /// Per second of sending time: requests, success rate, p99 and each
    /// backend's attempts (see [`timeline::Second`]).
    pub timeline: Vec<timeline::Second>,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Sorted latencies of a run, ns.
pub fn sorted_latencies(run: &RunResult) -> Vec<u64> {
    let mut l: Vec<u64> = run.records.iter().map(|r| r.latency_ns).collect();
    l.sort_unstable();
    l
}

/// Sorted latencies of a run's successful requests, ns.
fn ok_latencies(run: &RunResult) -> Vec<u64> {
    let mut l: Vec<u64> = run.records.iter().filter(|r| r.ok).map(|r| r.latency_ns).collect();
    l.sort_unstable();
    l
}

impl Summary {
    /// Summarises one run of `scenario`.
    pub fn of(scenario: &Scenario, run: &RunResult) -> Summary {
        let lat = sorted_latencies(run);
        let requests = run.records.len() as u64;
        let ok = run.records.iter().filter(|r| r.ok).count() as u64;
        let attempts: u64 = run.last_layer_attempts.iter().sum();
        let recovery = scenario.fault_window_ns().map(|w| recovery_s(run, w));
        let span_ns = match scenario.traffic {
            super::scenario::Traffic::Open { duration_ns, .. } => duration_ns,
            super::scenario::Traffic::Closed { .. } => run.makespan_ns,
        };
        let seconds = timeline::seconds(run, span_ns);
        Summary {
            steady_p99_ms: timeline::steady_p99_ms(run, scenario.fault_window_ns().map(|w| w.0)),
            worst_second_p99_ms: timeline::worst_second_p99_ms(&seconds),
            timeline: seconds,
            scenario: run.scenario.clone(),
            contender: run.contender.to_string(),
            seed: run.seed,
            requests,
            success_rate: ok as f64 / requests.max(1) as f64,
            p50_ms: ms(percentile(&lat, 0.5)),
            p90_ms: ms(percentile(&lat, 0.9)),
            p99_ms: ms(percentile(&lat, 0.99)),
            p999_ms: ms(percentile(&lat, 0.999)),
            p9999_ms: ms(percentile(&lat, 0.9999)),
            p99_ok_ms: ms(percentile(&ok_latencies(run), 0.99)),
            attempts_per_request: attempts as f64 / run.needed_attempts.max(1) as f64,
            backend_share: run.last_layer_attempts.iter().map(|&a| a as f64 / attempts.max(1) as f64).collect(),
            goodput_per_s: ok as f64 / (span_ns.max(1) as f64 / 1e9),
            recovery_s: recovery.map(|r| r.0),
            recovered: recovery.map(|r| r.1),
            ejections: run.ejections,
            errors_before_ejection: run.errors_before_ejection,
            faulted_share_on: run.faulted.and_then(|f| f.share_on),
            faulted_share_off: run.faulted.and_then(|f| f.share_off),
            faulted_back_after_s: run.faulted.and_then(|f| f.back_after_s),
        }
    }

    /// One JSON object (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a summary always serialises")
    }
}

/// Seconds after `fault_end` until every later 1 s window (by sending time)
/// has a success rate within 5 points of the rate before `fault_start`, and
/// whether the last window is back to that level.
fn recovery_s(run: &RunResult, (fault_start, fault_end): (u64, u64)) -> (f64, bool) {
    const WINDOW: u64 = 1_000_000_000;
    let before: Vec<_> = run.records.iter().filter(|r| r.sent_ns < fault_start).collect();
    let baseline =
        if before.is_empty() { 1.0 } else { before.iter().filter(|r| r.ok).count() as f64 / before.len() as f64 };
    let mut windows: Vec<(u64, u64)> = Vec::new();
    for r in run.records.iter().filter(|r| r.sent_ns >= fault_end) {
        let w = ((r.sent_ns - fault_end) / WINDOW) as usize;
        if windows.len() <= w {
            windows.resize(w + 1, (0, 0));
        }
        windows[w].0 += 1;
        windows[w].1 += u64::from(r.ok);
    }
    let bad = |&(n, ok): &(u64, u64)| n > 0 && (ok as f64 / n as f64) < baseline - 0.05;
    let last_bad = windows.iter().enumerate().filter(|(_, w)| bad(w)).map(|(w, _)| w + 1).max().unwrap_or(0);
    (last_bad as f64, !windows.last().is_some_and(bad))
}

/// Averages of the summaries of one contender over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Contender.
    pub contender: String,
    /// Seeds averaged.
    pub seeds: usize,
    /// Mean of each field over seeds.
    pub mean: Summary,
    /// Lowest and highest success rate over seeds.
    pub success_range: (f64, f64),
    /// Lowest and highest p99 over seeds, ms.
    pub p99_range: (f64, f64),
}

/// Averages `summaries` (all of one scenario) per contender, keeping the
/// order in which contenders first appear.
pub fn aggregate(summaries: &[Summary]) -> Vec<Aggregate> {
    let mut order: Vec<String> = Vec::new();
    for s in summaries {
        if !order.contains(&s.contender) {
            order.push(s.contender.clone());
        }
    }
    order
        .into_iter()
        .map(|c| {
            let xs: Vec<&Summary> = summaries.iter().filter(|s| s.contender == c).collect();
            let n = xs.len() as f64;
            let avg = |f: fn(&Summary) -> f64| xs.iter().map(|s| f(s)).sum::<f64>() / n;
            let share_len = xs[0].backend_share.len();
            let mut mean = xs[0].clone();
            mean.seed = 0;
            mean.requests = (xs.iter().map(|s| s.requests).sum::<u64>() as f64 / n) as u64;
            mean.success_rate = avg(|s| s.success_rate);
            mean.p50_ms = avg(|s| s.p50_ms);
            mean.p90_ms = avg(|s| s.p90_ms);
            mean.p99_ms = avg(|s| s.p99_ms);
            mean.p999_ms = avg(|s| s.p999_ms);
            mean.p9999_ms = avg(|s| s.p9999_ms);
            mean.p99_ok_ms = avg(|s| s.p99_ok_ms);
            mean.attempts_per_request = avg(|s| s.attempts_per_request);
            mean.goodput_per_s = avg(|s| s.goodput_per_s);
            mean.backend_share =
                (0..share_len).map(|i| xs.iter().map(|s| s.backend_share[i]).sum::<f64>() / n).collect();
            mean.recovered = xs[0].recovered.map(|_| xs.iter().all(|s| s.recovered == Some(true)));
            mean.recovery_s = xs[0].recovery_s.map(|_| xs.iter().map(|s| s.recovery_s.unwrap_or(0.0)).sum::<f64>() / n);
            // Worst case over seeds: "no ejection in the control" must hold in every run.
            mean.ejections = xs.iter().filter_map(|s| s.ejections).max();
            mean.errors_before_ejection = xs.iter().filter_map(|s| s.errors_before_ejection).max();
            // Worst over seeds too: least share while up, most while down, slowest return.
            mean.faulted_share_on = xs.iter().filter_map(|s| s.faulted_share_on).reduce(f64::max);
            mean.faulted_share_off = xs.iter().filter_map(|s| s.faulted_share_off).reduce(f64::min);
            mean.faulted_back_after_s = xs.iter().filter_map(|s| s.faulted_back_after_s).reduce(f64::max);
            mean.steady_p99_ms = avg(|s| s.steady_p99_ms);
            // Worst over seeds, as the target reads "worst one-second p99".
            mean.worst_second_p99_ms = xs.iter().map(|s| s.worst_second_p99_ms).fold(0.0, f64::max);
            mean.timeline = Vec::new();
            let range = |f: fn(&Summary) -> f64| {
                xs.iter().map(|s| f(s)).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
            };
            let success_range = range(|s| s.success_rate);
            let p99_range = range(|s| s.p99_ms);
            Aggregate { contender: c, seeds: xs.len(), mean, success_range, p99_range }
        })
        .collect()
}

/// A markdown table of one scenario (means over seeds).
pub fn markdown(scenario: &Scenario, aggregates: &[Aggregate]) -> String {
    let chain = scenario.layers.len() > 1;
    let faults = scenario.fault_window_ns().is_some();
    let mut out = String::new();
    let seeds = aggregates.first().map_or(0, |a| a.seeds);
    let _ = writeln!(out, "### {} ({} seed{})\n", scenario.name, seeds, if seeds == 1 { "" } else { "s" });
    if !scenario.description.is_empty() {
        let _ = writeln!(out, "{}\n", scenario.description.trim());
    }
    let ranges = seeds > 1;
    let (success_h, p99_h) = if ranges { ("success (min–max)", "p99 ms (min–max)") } else { ("success", "p99 ms") };
    let mut header = format!(
        "| contender | {success_h} | p50 ms | p90 ms | {p99_h} | p99 ok ms | p99.9 ms | p99.99 ms | attempts/req | steady p99 ms | worst 1-s p99 ms (max) |"
    );
    let mut rule = String::from("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if chain {
        header.push_str(" goodput/s |");
        rule.push_str("---:|");
    }
    if faults {
        header.push_str(" recovery s |");
        rule.push_str("---:|");
    }
    let ejects = aggregates.iter().any(|a| a.mean.ejections.is_some());
    if ejects {
        header.push_str(" ejections (max) | errors before ejection (max) |");
        rule.push_str("---:|---:|");
    }
    let faulted = aggregates.iter().any(|a| a.mean.faulted_share_on.is_some() || a.mean.faulted_share_off.is_some());
    if faulted {
        header.push_str(" faulted share on (max) | off (min) | back after s (max) |");
        rule.push_str("---:|---:|---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for a in aggregates {
        let m = &a.mean;
        let (success, p99) = if ranges {
            let (s0, s1) = a.success_range;
            let (p0, p1) = a.p99_range;
            (
                format!("{:.2}% ({:.2}–{:.2})", m.success_rate * 100.0, s0 * 100.0, s1 * 100.0),
                format!("{:.1} ({:.0}–{:.0})", m.p99_ms, p0, p1),
            )
        } else {
            (format!("{:.2}%", m.success_rate * 100.0), format!("{:.1}", m.p99_ms))
        };
        let _ = write!(
            out,
            "| {} | {success} | {:.1} | {:.1} | {p99} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} | {:.1} |",
            a.contender,
            m.p50_ms,
            m.p90_ms,
            m.p99_ok_ms,
            m.p999_ms,
            m.p9999_ms,
            m.attempts_per_request,
            m.steady_p99_ms,
            m.worst_second_p99_ms
        );
        if chain {
            let _ = write!(out, " {:.1} |", m.goodput_per_s);
        }
        if faults {
            let not = if m.recovered == Some(false) { "not by end, " } else { "" };
            let _ = write!(out, " {not}{:.1} |", m.recovery_s.unwrap_or(0.0));
        }
        if ejects {
            let show = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            let _ = write!(out, " {} | {} |", show(m.ejections), show(m.errors_before_ejection));
        }
        if faulted {
            let show = |v: Option<f64>, digits: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"));
            let _ = write!(
                out,
                " {} | {} | {} |",
                show(m.faulted_share_on, 2),
                show(m.faulted_share_off, 2),
                show(m.faulted_back_after_s, 1)
            );
        }
        out.push('\n');
    }
    out
}

/// Tableau's ten categorical colours: distinguishable, also in print.
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Writes an SVG plot of latency against percentile (x from p0 to p99.99 on
/// a log-of-tail scale, the shape of an HdrHistogram plot), one curve per
/// contender, from the latencies of all seeds pooled.
pub fn plot(path: &Path, scenario: &Scenario, curves: &[(String, Vec<u64>)]) -> Result<(), Box<dyn std::error::Error>> {
    // x = -log10(1 - q): 0 is p0, 1 is p90, 2 is p99, 3 is p99.9, 4 is p99.99.
    const X_MAX: f64 = 4.0;
    let points: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|(name, sorted)| {
            let pts = (0..=400)
                .map(|k| {
                    let x = X_MAX * k as f64 / 400.0;
                    let q = 1.0 - 10f64.powf(-x);
                    (x, ms(percentile(sorted, q)))
                })
                .collect();
            (name.clone(), pts)
        })
        .collect();
    let y_max = points.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y)).fold(1.0f64, f64::max) * 1.05;

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: latency by percentile", scenario.name), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..X_MAX, 0f64..y_max)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(5)
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "0".into(),
            1 => "90".into(),
            2 => "99".into(),
            3 => "99.9".into(),
            4 => "99.99".into(),
            _ => String::new(),
        })
        .draw()?;
    for (i, (name, pts)) in points.into_iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let color = RGBColor(r, g, b).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
