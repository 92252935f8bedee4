//! The SVG timeline: success rate of ha and the baseline, and the share of
//! ha's traffic each instance served, second by second, with the faults
//! marked.

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;

const HOME: [RGBColor; 3] = [RGBColor(31, 119, 180), RGBColor(23, 190, 207), RGBColor(44, 80, 160)];
const AWAY: [RGBColor; 3] = [RGBColor(255, 127, 14), RGBColor(214, 39, 40), RGBColor(188, 140, 40)];
const FAULT: [RGBColor; 4] =
    [RGBColor(255, 200, 200), RGBColor(255, 235, 170), RGBColor(210, 200, 255), RGBColor(200, 235, 210)];

/// Draws `report`'s timeline into `path`.
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    draw_inner(report, path).map_err(|e| format!("cannot draw {}: {e}", path.display()))
}

fn draw_inner(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(360);
    let (middle, bottom) = rest.split_vertically(240);
    let secs = report.timeline.len().max(1) as f64;
    let faults: Vec<(f64, f64, &str)> = report
        .phases
        .iter()
        .filter(|p| p.start_s > 0.0 || !p.label.starts_with("before"))
        .filter(|p| p.kind != super::report::PhaseKind::Steady)
        .map(|p| (p.start_s, p.undone_s.unwrap_or(p.end_s), p.label.as_str()))
        .collect();

    let lowest =
        report.timeline.iter().flat_map(|s| [s.ha.success_pct, s.baseline.success_pct]).fold(100.0_f64, f64::min);
    let y_min = (lowest - 5.0).clamp(0.0, 90.0).floor();
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "ha vs baseline, {} req/s each: success rate per second (ha {} failed of {}, baseline {} of {})",
                report.rate,
                report.overall.ha.failures,
                report.overall.ha.requests,
                report.overall.baseline.failures,
                report.overall.baseline.requests
            ),
            ("sans-serif", 17),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..secs, y_min..101.0)?;
    chart.configure_mesh().y_desc("success %").x_desc("seconds").light_line_style(WHITE.mix(0.0)).draw()?;
    for (n, (a, b, label)) in faults.iter().enumerate() {
        let color = FAULT[n % FAULT.len()];
        chart.draw_series(std::iter::once(Rectangle::new([(*a, y_min), (*b, 101.0)], color.mix(0.6).filled())))?;
        let y = 101.0 - (101.0 - y_min) * (0.04 + 0.06 * (n % 2) as f64);
        chart.draw_series(std::iter::once(Text::new(label.to_string(), (*a + 0.2, y), ("sans-serif", 12))))?;
    }
    let series = |f: fn(&super::stats::Second) -> f64| -> Vec<(f64, f64)> {
        report.timeline.iter().map(|s| (f64::from(s.t_s) + 0.5, f(s))).collect()
    };
    chart
        .draw_series(LineSeries::new(series(|s| s.baseline.success_pct), RED.stroke_width(2)))?
        .label("baseline (round robin, no retries)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(series(|s| s.ha.success_pct), GREEN.stroke_width(3)))?
        .label("ha")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN.stroke_width(3)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let worst = report.timeline.iter().flat_map(|s| [s.ha.p99_ms, s.baseline.p99_ms]).fold(10.0_f64, f64::max);
    let mut chart = ChartBuilder::on(&middle)
        .caption("p99 latency per second (log scale)", ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..secs, (0.05..worst * 2.0).log_scale())?;
    chart.configure_mesh().y_desc("p99 ms").x_desc("seconds").light_line_style(WHITE.mix(0.0)).draw()?;
    for (n, (a, b, _)) in faults.iter().enumerate() {
        let color = FAULT[n % FAULT.len()];
        chart.draw_series(std::iter::once(Rectangle::new([(*a, 0.05), (*b, worst * 2.0)], color.mix(0.6).filled())))?;
    }
    let p99 = |f: fn(&super::stats::Second) -> f64| -> Vec<(f64, f64)> {
        report.timeline.iter().map(|s| (f64::from(s.t_s) + 0.5, f(s).max(0.05))).collect()
    };
    chart
        .draw_series(LineSeries::new(p99(|s| s.baseline.p99_ms), RED.stroke_width(2)))?
        .label("baseline")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(p99(|s| s.ha.p99_ms), GREEN.stroke_width(3)))?
        .label("ha")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN.stroke_width(3)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let mut chart = ChartBuilder::on(&bottom)
        .caption("share of ha's traffic served by each instance (zone-a is the client's home zone)", ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..secs, 0.0..101.0)?;
    chart.configure_mesh().y_desc("share %").x_desc("seconds").light_line_style(WHITE.mix(0.0)).draw()?;
    for (n, (a, b, _)) in faults.iter().enumerate() {
        let color = FAULT[n % FAULT.len()];
        chart.draw_series(std::iter::once(Rectangle::new([(*a, 0.0), (*b, 101.0)], color.mix(0.6).filled())))?;
    }
    let (mut h, mut w) = (0, 0);
    for (i, (name, zone)) in report.instances.iter().enumerate() {
        let color = if *zone == report.home_zone {
            h += 1;
            HOME[(h - 1) % HOME.len()]
        } else {
            w += 1;
            AWAY[(w - 1) % AWAY.len()]
        };
        let pts: Vec<(f64, f64)> = report
            .timeline
            .iter()
            .map(|s| (f64::from(s.t_s) + 0.5, s.ha_share_pct.get(i).copied().unwrap_or(0.0)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(format!("{name} ({zone})"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
