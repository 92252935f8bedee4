//! The live view, refreshed every second: a full-screen table (ratatui over
//! crossterm) on a terminal, one plain line per second otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::DefaultTerminal;
use tokio::sync::watch;

use super::supervisor::ProcState;

/// One instance's row.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    /// Its name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// Its process, as the supervisor knows it.
    pub process: ProcState,
    /// Its membership state as the client's node sees it.
    pub membership: String,
    /// ha's endpoint flags (`ejected`, `breaker open`), or `-` when ha has
    /// no endpoint for it.
    pub endpoint: String,
    /// Share of ha's answered requests it served in the last second, percent.
    pub ha_share: f64,
    /// Failed ha attempts it answered in the last second.
    pub ha_errors: u64,
    /// ha's latency estimate for it (PeakEWMA), milliseconds.
    pub ha_latency_ms: f64,
    /// Share of the baseline's requests sent to it in the last second, percent.
    pub baseline_share: f64,
    /// Failed baseline requests to it in the last second.
    pub baseline_errors: u64,
    /// The baseline's median latency to it in the last second, milliseconds.
    pub baseline_p50_ms: f64,
}

/// One client's row.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientRow {
    /// Success in the last second, percent.
    pub success_pct: f64,
    /// Median latency in the last second, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in the last second, milliseconds.
    pub p99_ms: f64,
    /// Attempts per request in the last second.
    pub attempts: f64,
    /// Requests answered so far.
    pub requests: u64,
    /// Requests failed so far.
    pub failures: u64,
}

/// Everything one refresh shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// Seconds of traffic so far.
    pub elapsed_s: f64,
    /// Seconds of traffic planned.
    pub total_s: f64,
    /// The faults in force now.
    pub faults: Vec<String>,
    /// Per instance.
    pub instances: Vec<InstanceRow>,
    /// ha.
    pub ha: ClientRow,
    /// The baseline.
    pub baseline: ClientRow,
    /// The latest events, newest last.
    pub events: Vec<String>,
    /// Events since the start, of which `events` are the last.
    pub events_total: u64,
}

/// Where frames go.
pub enum View {
    /// A full-screen terminal view.
    Terminal {
        /// The terminal.
        terminal: Box<DefaultTerminal>,
        /// Tells the key reader thread to stop.
        done: Arc<AtomicBool>,
    },
    /// One plain line per frame.
    Plain {
        /// Events already printed (`Frame::events_total` at the last line).
        shown: u64,
    },
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            View::Terminal { .. } => "View::Terminal",
            View::Plain { .. } => "View::Plain",
        })
    }
}

impl View {
    /// The terminal view when stdout is a terminal and `plain` is false,
    /// else the plain one. On a terminal, `q`, Esc or Ctrl-C sets `stop`.
    pub fn open(plain: bool, stop: watch::Sender<bool>) -> View {
        if plain || !std::io::stdout().is_terminal() {
            return View::Plain { shown: 0 };
        }
        let Ok(terminal) = ratatui::try_init() else { return View::Plain { shown: 0 } };
        let done = Arc::new(AtomicBool::new(false));
        let reader_done = done.clone();
        // Raw mode turns Ctrl-C into a key press; this thread reads keys.
        std::thread::spawn(move || {
            while !reader_done.load(Ordering::Relaxed) {
                if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                    continue;
                }
                if let Ok(Event::Key(k)) = event::read() {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if k.kind == KeyEventKind::Press && (ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc))
                    {
                        let _ = stop.send(true);
                    }
                }
            }
        });
        View::Terminal { terminal: Box::new(terminal), done }
    }

    /// Shows `frame`.
    pub fn show(&mut self, frame: &Frame) {
        match self {
            View::Terminal { terminal, .. } => {
                let _ = terminal.draw(|f| draw(f, frame));
            }
            View::Plain { shown } => {
                let mut out = std::io::stdout().lock();
                let fresh = frame.events_total.saturating_sub(*shown).min(frame.events.len() as u64) as usize;
                *shown = frame.events_total;
                let _ = writeln!(out, "{}", plain_line(frame, &frame.events[frame.events.len() - fresh..]));
                let _ = out.flush();
            }
        }
    }

    /// Gives the terminal back (alternate screen and raw mode off).
    pub fn close(self) {
        if let View::Terminal { done, .. } = self {
            done.store(true, Ordering::Relaxed);
            let _ = ratatui::try_restore();
        }
    }
}

/// The plain line of a frame, with the events logged since the last one
/// (a failed step, an unexpected exit): no escape codes.
pub fn plain_line(f: &Frame, events: &[String]) -> String {
    let side = |c: &ClientRow| {
        format!(
            "ok {:6.2}% p50 {:6.1}ms p99 {:7.1}ms att {:.2} fail {}",
            c.success_pct, c.p50_ms, c.p99_ms, c.attempts, c.failures
        )
    };
    let shares: Vec<String> = f
        .instances
        .iter()
        .map(|i| {
            let mut ep = String::new();
            if i.endpoint == "-" {
                ep.push_str("/no-endpoint");
            }
            if i.endpoint.contains("ejected") {
                ep.push_str("/ejected");
            }
            if i.endpoint.contains("open") {
                ep.push_str("/breaker-open");
            }
            format!("{}:{}/{}{ep}:{:.0}%", i.name, short(i.process), i.membership, i.ha_share)
        })
        .collect();
    let fault = if f.faults.is_empty() { "none".to_owned() } else { f.faults.join("; ") };
    let mut line = format!(
        "t={:5.1}s | ha {} | baseline {} | ha share {} | fault: {}",
        f.elapsed_s,
        side(&f.ha),
        side(&f.baseline),
        shares.join(" "),
        fault
    );
    if !events.is_empty() {
        line.push_str(" | events: ");
        line.push_str(&events.join("; "));
    }
    line
}

fn short(p: ProcState) -> &'static str {
    match p {
        ProcState::NotStarted => "-",
        ProcState::Running => "up",
        ProcState::Frozen => "frozen",
        ProcState::Killed => "killed",
        ProcState::Died => "DIED",
    }
}

fn draw(f: &mut ratatui::Frame<'_>, frame: &Frame) {
    let [head, inst, clients, events] = Layout::vertical([
        // Two lines inside the border: the time, and the fault in force.
        Constraint::Length(4),
        Constraint::Length(frame.instances.len() as u16 + 3),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(f.area());
    let fault = if frame.faults.is_empty() { "none".to_owned() } else { frame.faults.join("; ") };
    let fault_style = if frame.faults.is_empty() {
        Style::default()
    } else {
        Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD)
    };
    let header = Paragraph::new(vec![
        Line::from(format!(
            "t = {:.0} s of {:.0} s   (q or Ctrl-C stops, children are cleaned up)",
            frame.elapsed_s, frame.total_s
        )),
        Line::styled(format!("fault in force: {fault}"), fault_style),
    ])
    .block(Block::bordered().title(" ha cluster demo: 6 instances, zone-a is the client's home "));
    f.render_widget(header, head);

    let bold = Style::default().add_modifier(Modifier::BOLD);
    let rows = frame.instances.iter().map(|i| {
        let style = match i.process {
            ProcState::Killed | ProcState::Died => Style::default().fg(Color::Red),
            ProcState::Frozen => Style::default().fg(Color::Magenta),
            _ if i.ha_errors > 0 || i.baseline_errors > 0 => Style::default().fg(Color::Yellow),
            _ => Style::default(),
        };
        Row::new(vec![
            i.name.clone(),
            i.zone.clone(),
            i.process.word().to_owned(),
            i.membership.clone(),
            i.endpoint.clone(),
            format!("{:5.1}", i.ha_share),
            i.ha_errors.to_string(),
            format!("{:.1}", i.ha_latency_ms),
            format!("{:5.1}", i.baseline_share),
            i.baseline_errors.to_string(),
            format!("{:.1}", i.baseline_p50_ms),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        // 77 columns with the spacing: the table fits an 80-column terminal.
        [
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(15),
            Constraint::Length(5),
            Constraint::Length(4),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(5),
        ],
    )
    .header(
        Row::new(vec!["name", "zone", "proc", "member", "ha endpoint", "ha %", "err", "ha ms", "bl %", "err", "bl ms"])
            .style(bold),
    )
    .block(Block::bordered().title(" instances (last second; ha ms: its estimate, bl ms: p50) "));
    f.render_widget(table, inst);

    let client = |name: &str, c: &ClientRow| {
        let style =
            if c.success_pct < 100.0 { Style::default().fg(Color::Red) } else { Style::default().fg(Color::Green) };
        Row::new(vec![
            name.to_owned(),
            format!("{:7.2}%", c.success_pct),
            format!("{:.1}", c.p50_ms),
            format!("{:.1}", c.p99_ms),
            format!("{:.2}", c.attempts),
            c.requests.to_string(),
            c.failures.to_string(),
        ])
        .style(style)
    };
    let table = Table::new(
        [client("ha", &frame.ha), client("baseline", &frame.baseline)],
        [
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(vec!["client", "success", "p50 ms", "p99 ms", "attempts", "requests", "failed"]).style(bold))
    .block(Block::bordered().title(" clients (last second; requests and failures since the start) "));
    f.render_widget(table, clients);

    let lines: Vec<Line> = frame.events.iter().map(|e| Line::from(e.as_str())).collect();
    let skip = lines.len().saturating_sub(events.height.saturating_sub(2) as usize);
    f.render_widget(Paragraph::new(lines[skip..].to_vec()).block(Block::bordered().title(" events ")), events);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_has_no_escape_codes() {
        let frame = Frame {
            elapsed_s: 3.0,
            total_s: 24.0,
            faults: vec!["SIGKILL a1".into()],
            instances: vec![InstanceRow {
                name: "a1".into(),
                zone: "zone-a".into(),
                process: ProcState::Killed,
                membership: "dead".into(),
                endpoint: "-".into(),
                ha_share: 0.0,
                ha_errors: 0,
                ha_latency_ms: 0.0,
                baseline_share: 16.7,
                baseline_errors: 83,
                baseline_p50_ms: 0.3,
            }],
            ..Frame::default()
        };
        let line = plain_line(&frame, &[]);
        assert!(!line.contains('\x1b'), "{line}");
        assert!(line.contains("a1:killed/dead"), "{line}");
        assert!(line.contains("fault: SIGKILL a1"), "{line}");
        assert!(!line.contains("events"), "{line}");
        let failed = "t=  3.0s restart a1 FAILED: port in use".to_owned();
        let line = plain_line(&frame, std::slice::from_ref(&failed));
        assert!(line.ends_with(&format!("events: {failed}")), "{line}");
    }
}
