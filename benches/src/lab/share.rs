//! Who got the traffic, second by second: an SVG of each backend's share of
//! the attempts of every one-second window, one panel per contender (the
//! ha stack and a baseline side by side), with the scenario's faults
//! shaded and backends joining or leaving discovery marked. Plain SVG
//! written here, no plotting library.

use std::fmt::Write as _;

use super::report::PALETTE;
use super::timeline::Second;

/// What to mark on every panel, in seconds from the start of traffic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marks {
    /// Windows in which a scheduled change is on (shaded).
    pub faults: Vec<(f64, f64)>,
    /// Backends joining (`true`) or leaving (`false`) discovery: time,
    /// backend index, join (a vertical line, labelled).
    pub discovery: Vec<(f64, usize, bool)>,
}

const PANEL_W: f64 = 520.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 55.0;
const TOP: f64 = 60.0;
const GAP: f64 = 70.0;

/// The SVG text: one panel per `(contender, timeline)` of `panels`.
pub fn svg(scenario: &str, panels: &[(String, Vec<Second>)], marks: &Marks) -> String {
    let backends = panels.iter().flat_map(|(_, s)| s.iter().map(|w| w.attempts.len())).max().unwrap_or(0);
    let seconds = panels.iter().map(|(_, s)| s.len()).max().unwrap_or(1).max(1) as f64;
    let legend_rows = if backends <= 32 { backends.div_ceil(8) } else { 1 };
    let width = LEFT + panels.len().max(1) as f64 * (PANEL_W + GAP);
    let height = TOP + PANEL_H + 75.0 + 20.0 * legend_rows as f64;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="24" font-size="18">{}: each backend's share of the attempts of each second (seed 1)</text>"#,
        esc(scenario)
    );
    for (p, (name, windows)) in panels.iter().enumerate() {
        let x0 = LEFT + p as f64 * (PANEL_W + GAP);
        let x = |t: f64| x0 + t / seconds * PANEL_W;
        let y = |share: f64| TOP + (1.0 - share) * PANEL_H;
        let _ = writeln!(o, r#"<text x="{x0:.1}" y="{:.1}" font-size="14">{}</text>"#, TOP - 14.0, esc(name));
        // One step-shaped band per backend, stacked in index order.
        let mut below = vec![0.0f64; windows.len()];
        for b in 0..backends {
            let mut top = Vec::with_capacity(windows.len());
            for (w, s) in windows.iter().enumerate() {
                let total: u64 = s.attempts.iter().sum();
                let mine = s.attempts.get(b).copied().unwrap_or(0);
                let share = if total == 0 { 0.0 } else { mine as f64 / total as f64 };
                top.push(below[w] + share);
            }
            if top.iter().zip(&below).all(|(t, b)| t - b <= 0.0) {
                continue;
            }
            let mut d = String::new();
            for (w, &t) in top.iter().enumerate() {
                let cmd = if w == 0 { 'M' } else { 'L' };
                let _ = write!(d, "{cmd}{:.1},{:.1} L{:.1},{:.1} ", x(w as f64), y(t), x(w as f64 + 1.0), y(t));
            }
            for (w, &bl) in below.iter().enumerate().rev() {
                let _ = write!(d, "L{:.1},{:.1} L{:.1},{:.1} ", x(w as f64 + 1.0), y(bl), x(w as f64), y(bl));
            }
            let (r, g, bl) = PALETTE[b % PALETTE.len()];
            let _ = writeln!(
                o,
                r#"<path d="{}Z" fill="rgb({r},{g},{bl})" fill-opacity="0.85" stroke="white" stroke-width="0.3"><title>backend {b}</title></path>"#,
                d.trim_end()
            );
            below = top;
        }
        for &(t, b, join) in &marks.discovery {
            let (color, word) = if join { ("#2ca02c", "joins") } else { ("#000000", "leaves") };
            let _ = writeln!(
                o,
                r#"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="{color}" stroke-width="1" stroke-dasharray="4,3"><title>backend {b} {word} at {t:.1} s</title></line>"#,
                x(t),
                TOP + PANEL_H
            );
        }
        // Faults: translucent over the bands, and a strip above the panel.
        for &(a, b) in &marks.faults {
            let (a, b) = (a.clamp(0.0, seconds), b.clamp(0.0, seconds));
            let w = (x(b) - x(a)).max(0.5);
            let _ = writeln!(
                o,
                r##"<rect x="{0:.1}" y="{TOP}" width="{w:.1}" height="{PANEL_H}" fill="#000000" fill-opacity="0.12"/><rect x="{0:.1}" y="{1:.1}" width="{w:.1}" height="6" fill="#d62728"><title>fault on from {a:.1} s to {b:.1} s</title></rect>"##,
                x(a),
                TOP - 8.0
            );
        }
        // Axes: share 0 to 1 on the left, seconds below.
        let _ = writeln!(
            o,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="black"/>"#
        );
        for k in 0..=4 {
            let v = f64::from(k) / 4.0;
            let _ = writeln!(o, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"#, x0 - 5.0, y(v) + 4.0);
        }
        let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]
            .into_iter()
            .find(|s| seconds / s <= 12.0)
            .unwrap_or(seconds);
        let mut t = 0.0;
        while t <= seconds {
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}</text>"#,
                x(t),
                TOP + PANEL_H + 16.0
            );
            t += step;
        }
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>"#,
            x0 + PANEL_W / 2.0,
            TOP + PANEL_H + 34.0
        );
    }
    let ly = TOP + PANEL_H + 56.0;
    if backends <= 32 {
        for b in 0..backends {
            let (lx, row) = (LEFT + (b % 8) as f64 * 90.0, (b / 8) as f64);
            let (r, g, bl) = PALETTE[b % PALETTE.len()];
            let _ = writeln!(
                o,
                r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="rgb({r},{g},{bl})"/><text x="{:.1}" y="{:.1}">backend {b}</text>"#,
                ly + row * 20.0 - 10.0,
                lx + 16.0,
                ly + row * 20.0
            );
        }
    } else {
        let _ = writeln!(o, r#"<text x="{LEFT}" y="{ly:.1}">{backends} backends, stacked in index order</text>"#);
    }
    if !marks.faults.is_empty() || !marks.discovery.is_empty() {
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}">shaded, red above: a scheduled fault is on; dashed: a backend joins (green) or leaves (black) discovery</text>"#,
            LEFT,
            ly + 20.0 * legend_rows as f64
        );
    }
    o.push_str("</svg>\n");
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The contenders the share plot shows, of those that ran: the ha stack
/// and a baseline (round robin, else the tower stack), when present.
pub fn panel_contenders(ran: &[&str]) -> Vec<&'static str> {
    let mut out = Vec::new();
    if ran.contains(&"ha_stack") {
        out.push("ha_stack");
    }
    if let Some(b) = ["round_robin", "tower_stack"].into_iter().find(|b| ran.contains(b)) {
        out.push(b);
    }
    out
}

/// The marks of `scenario` (as one seed runs it) over its first `end_s`
/// seconds: every on-period of every scheduled change of the last layer
/// (flaps one by one; identical windows once), and every join and leave.
pub fn marks(scenario: &super::scenario::Scenario, end_s: f64) -> Marks {
    let end_ns = (end_s * 1e9) as u64;
    let mut m = Marks::default();
    let Some(layer) = scenario.layers.last() else { return m };
    for (i, b) in layer.backends.iter().enumerate() {
        for c in &b.changes {
            let to = c.to_ns.unwrap_or(end_ns).min(end_ns);
            let mut from = c.from_ns;
            while from < to {
                let until = c.flap_ns.map_or(to, |p| (from + p).min(to));
                let w = (from as f64 / 1e9, until as f64 / 1e9);
                if !m.faults.contains(&w) {
                    m.faults.push(w);
                }
                match c.flap_ns {
                    Some(p) if p > 0 => from += 2 * p,
                    _ => break,
                }
            }
        }
        if let Some(j) = b.joins_ns {
            m.discovery.push((j as f64 / 1e9, i, true));
        }
        if let Some(l) = b.leaves_ns {
            m.discovery.push((l as f64 / 1e9, i, false));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(t_s: u64, attempts: Vec<u64>) -> Second {
        Second { t_s, requests: 1, success_rate: 1.0, p99_ms: 1.0, attempts }
    }

    #[test]
    fn one_band_per_backend_that_got_attempts_and_the_marks() {
        let run = vec![second(0, vec![3, 1, 0]), second(1, vec![2, 2, 0]), second(2, vec![0, 0, 0])];
        let marks = Marks { faults: vec![(1.0, 2.0)], discovery: vec![(1.0, 2, true)] };
        let text = svg("s<x>", &[("ha_stack".into(), run.clone()), ("round_robin".into(), run)], &marks);
        assert!(text.starts_with("<svg") && text.ends_with("</svg>\n"));
        assert_eq!(text.matches("<path").count(), 4, "backends 0 and 1 in two panels; backend 2 got nothing");
        assert_eq!(text.matches("fault on from 1.0 s to 2.0 s").count(), 2);
        assert_eq!(text.matches("backend 2 joins at 1.0 s").count(), 2);
        assert!(text.contains("s&lt;x&gt;") && text.contains(">ha_stack<") && text.contains(">round_robin<"));
    }

    #[test]
    fn the_ha_stack_and_one_baseline_are_shown() {
        assert_eq!(panel_contenders(&["tower_stack", "ha_stack", "round_robin"]), ["ha_stack", "round_robin"]);
        assert_eq!(panel_contenders(&["tower_stack", "ha_stack"]), ["ha_stack", "tower_stack"]);
        assert!(panel_contenders(&["oracle"]).is_empty());
    }
}
