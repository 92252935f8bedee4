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

/// Writes an SVG plot of the p99 of each one-second window against time,
/// one curve per contender (`curves`: its name and one run's timeline).
pub fn plot(
    path: &std::path::Path,
    scenario: &str,
    curves: &[(String, Vec<Second>)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let x_max = curves.iter().map(|(_, s)| s.len()).max().unwrap_or(1).max(1) as f64;
    let y_max = curves.iter().flat_map(|(_, s)| s.iter().map(|w| w.p99_ms)).fold(1.0f64, f64::max) * 1.05;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{scenario}: p99 of each second (seed 1)"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart.configure_mesh().light_line_style(WHITE).x_desc("time (s)").y_desc("p99 (ms)").draw()?;
    for (i, (name, seconds)) in curves.iter().enumerate() {
        let (r, g, b) = super::report::PALETTE[i % super::report::PALETTE.len()];
        let color = RGBColor(r, g, b).to_rgba();
        let pts = seconds.iter().map(|w| (w.t_s as f64, w.p99_ms));
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(name.as_str())
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
