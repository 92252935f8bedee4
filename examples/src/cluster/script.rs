//! The fault script: what to break, when, and for how long, from TOML.
//!
//! A script is a run length and a list of steps; a step with `for_s` is
//! expanded into the fault and its undoing. Unknown keys are rejected, and
//! every error names the line and the field.
//!
//! ```toml
//! duration_s = 30.0
//! [[step]]
//! at_s = 5.0
//! action = "freeze"
//! target = "a3"
//! for_s = 5.0
//! ```

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::topology::Topology;

/// The built-in script, as TOML (`--print-script` shows it).
pub const DEFAULT_SCRIPT: &str = include_str!("default.toml");

/// What a step does to its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// SIGKILL the processes.
    Kill,
    /// Start the processes again (at the same addresses).
    Restart,
    /// SIGSTOP the processes: they hold their sockets and answer nothing.
    Freeze,
    /// SIGCONT frozen processes.
    Thaw,
    /// Through the admin endpoint: fail a share of requests with 500 and
    /// delay every answer.
    Gray,
    /// Through the admin endpoint: back to healthy answers.
    Heal,
}

impl Action {
    /// The step that undoes this one, for `for_s`.
    pub fn undo(self) -> Option<Action> {
        match self {
            Action::Kill => Some(Action::Restart),
            Action::Freeze => Some(Action::Thaw),
            Action::Gray => Some(Action::Heal),
            Action::Restart | Action::Thaw | Action::Heal => None,
        }
    }

    /// True for the actions that start a fault (rather than end one).
    pub fn is_fault(self) -> bool {
        self.undo().is_some()
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Kill => "kill",
            Action::Restart => "restart",
            Action::Freeze => "freeze",
            Action::Thaw => "thaw",
            Action::Gray => "gray",
            Action::Heal => "heal",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    duration_s: Spanned<f64>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at_s: Spanned<f64>,
    action: Spanned<Action>,
    target: Spanned<String>,
    for_s: Option<Spanned<f64>>,
    error_rate: Option<Spanned<f64>>,
    latency_ms: Option<Spanned<u64>>,
    label: Option<String>,
}

/// One step of a validated script, times in seconds from the start of
/// the traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// When it runs.
    pub at_s: f64,
    /// What it does.
    pub action: Action,
    /// The instance or zone it targets.
    pub target: String,
    /// The instances that target resolves to (indices in the topology).
    pub instances: Vec<usize>,
    /// For `gray`: the share of requests answered with 500.
    pub error_rate: f64,
    /// For `gray`: the delay added to every answer, in milliseconds.
    pub latency_ms: u64,
    /// What the view and the timeline call it.
    pub label: String,
    /// The index of the fault this step undoes, for an expanded `for_s`
    /// or an explicit undoing step.
    pub undoes: Option<usize>,
    /// How long until the fault is undone, when the script says (`for_s`).
    pub for_s: Option<f64>,
    /// The instances' names, for labels.
    #[serde(skip)]
    names: String,
    /// True when the script gave the label (it is then kept as is).
    #[serde(skip)]
    custom_label: bool,
}

impl Step {
    /// The label a step gets when the script gives none.
    fn auto_label(&self) -> String {
        let t = &self.target;
        let zone = self.instances.len() > 1;
        let base = match self.action {
            Action::Kill if zone => format!("{t} lost (SIGKILL {})", self.names),
            Action::Kill => format!("SIGKILL {t}"),
            Action::Restart if zone => format!("{t} back (restart {})", self.names),
            Action::Restart => format!("restart {t}"),
            Action::Freeze => format!("SIGSTOP {t}"),
            Action::Thaw => format!("SIGCONT {t}"),
            Action::Gray => {
                format!("gray failure of {t}: {:.0}% 5xx, +{} ms", self.error_rate * 100.0, self.latency_ms)
            }
            Action::Heal => format!("heal {t}"),
        };
        match (self.for_s, self.action) {
            (Some(d), Action::Kill) => format!("{base}, back after {d:.0} s"),
            (Some(d), _) => format!("{base} for {d:.0} s"),
            (None, _) => base,
        }
    }
}

/// A validated script: steps sorted by time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Script {
    /// How long the traffic runs, in seconds.
    pub duration_s: f64,
    /// The steps, faults and their undoing, sorted by time.
    pub steps: Vec<Step>,
}

/// A script that cannot be used; it names the line and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// The 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The offending field (`step.target`), when known.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid fault script")?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ", field `{}`", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ScriptError {}

fn line_of(text: &str, span: Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

/// The key of the `key = value` line where `at` falls (a TOML error's span
/// covers the key, for an unknown one, or the value, for a wrong one),
/// prefixed with its table (`step.latency_ms`). The message is no guide: it
/// quotes the offending value (``invalid type: integer `3` ``) as readily
/// as the key.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let (key, _) = text[start..end].split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = text[..start].lines().rev().map(str::trim).find(|l| l.starts_with('['));
    Some(match table.map(|t| t.trim_matches(|c| c == '[' || c == ']').trim()) {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

impl Script {
    /// The built-in script.
    pub fn default_script(topology: &Topology) -> Script {
        match Script::parse(DEFAULT_SCRIPT, topology) {
            Ok(script) => script,
            // Pinned by a test; unreachable.
            Err(e) => unreachable!("the built-in script is valid: {e}"),
        }
    }

    /// Parses and validates `text` against `topology`.
    pub fn parse(text: &str, topology: &Topology) -> Result<Script, ScriptError> {
        let raw: RawScript = toml::from_str(text).map_err(|e| {
            let reason = e.message().trim().to_owned();
            let field = e.span().and_then(|s| key_at(text, s.start)).unwrap_or_default();
            ScriptError { line: e.span().map(|s| line_of(text, s)), field, reason }
        })?;
        let err = |span: Range<usize>, field: &str, reason: String| ScriptError {
            line: Some(line_of(text, span)),
            field: field.to_owned(),
            reason,
        };
        let duration = *raw.duration_s.get_ref();
        if !(duration.is_finite() && duration > 0.0 && duration <= 3600.0) {
            return Err(err(raw.duration_s.span(), "duration_s", format!("must be in (0, 3600], not {duration}")));
        }
        let mut steps: Vec<(f64, usize, Step, Option<f64>)> = Vec::new();
        for (n, raw_step) in raw.step.iter().enumerate() {
            let s = raw_step.get_ref();
            let at = *s.at_s.get_ref();
            if !(at.is_finite() && at >= 0.0 && at < duration) {
                return Err(err(
                    s.at_s.span(),
                    "step.at_s",
                    format!("must be in [0, duration_s = {duration}), not {at}"),
                ));
            }
            let action = *s.action.get_ref();
            let target = s.target.get_ref();
            let Some(instances) = topology.resolve(target) else {
                return Err(err(
                    s.target.span(),
                    "step.target",
                    format!("no instance or zone `{target}`; one of {}", topology.target_names().join(", ")),
                ));
            };
            let gray = action == Action::Gray;
            let mut error_rate = 0.0;
            if let Some(rate) = &s.error_rate {
                if !gray {
                    return Err(err(
                        rate.span(),
                        "step.error_rate",
                        format!("only a `gray` step takes it, not `{action}`"),
                    ));
                }
                error_rate = *rate.get_ref();
                if !(0.0..=1.0).contains(&error_rate) {
                    return Err(err(rate.span(), "step.error_rate", format!("must be in [0, 1], not {error_rate}")));
                }
            }
            let mut latency_ms = 0;
            if let Some(latency) = &s.latency_ms {
                if !gray {
                    return Err(err(
                        latency.span(),
                        "step.latency_ms",
                        format!("only a `gray` step takes it, not `{action}`"),
                    ));
                }
                latency_ms = *latency.get_ref();
                if latency_ms > 60_000 {
                    return Err(err(
                        latency.span(),
                        "step.latency_ms",
                        format!("must be at most 60000, not {latency_ms}"),
                    ));
                }
            }
            if gray && s.error_rate.is_none() && s.latency_ms.is_none() {
                return Err(err(s.action.span(), "step.action", "a `gray` step needs error_rate or latency_ms".into()));
            }
            let mut undo_after = None;
            if let Some(f) = &s.for_s {
                let d = *f.get_ref();
                if action.undo().is_none() {
                    return Err(err(f.span(), "step.for_s", format!("`{action}` undoes a fault; it takes no for_s")));
                }
                if !(d.is_finite() && d > 0.0) {
                    return Err(err(f.span(), "step.for_s", format!("must be positive, not {d}")));
                }
                undo_after = Some(d);
            }
            let names: Vec<&str> = instances.iter().map(|&i| topology.instances[i].name.as_str()).collect();
            let mut step = Step {
                at_s: at,
                action,
                target: target.clone(),
                names: names.join(", "),
                instances,
                error_rate,
                latency_ms,
                label: s.label.clone().unwrap_or_default(),
                undoes: None,
                for_s: undo_after,
                custom_label: s.label.is_some(),
            };
            if !step.custom_label {
                step.label = step.auto_label();
            }
            steps.push((at, n, step, undo_after));
        }
        // Expand `for_s`, then sort by time (ties keep the file's order, undoing first).
        let mut all: Vec<(f64, u8, usize, Step)> = Vec::new();
        for (at, n, step, undo_after) in steps {
            if let Some(d) = undo_after {
                let undo = step.action.undo().unwrap_or(step.action);
                let mut back = step.clone();
                back.at_s = (at + d).min(duration);
                back.action = undo;
                back.error_rate = 0.0;
                back.latency_ms = 0;
                back.for_s = None;
                back.custom_label = false;
                back.label = back.auto_label();
                all.push((back.at_s, 0, n, back));
            }
            all.push((at, 1, n, step));
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut steps: Vec<Step> = all.into_iter().map(|(_, _, _, s)| s).collect();
        // Link each undoing step to the latest fault of the same kind on the same instances.
        for i in 0..steps.len() {
            let action = steps[i].action;
            if action.is_fault() {
                continue;
            }
            let fault = (0..i).rev().find(|&j| {
                steps[j].action.undo() == Some(action)
                    && steps[j].instances.iter().any(|x| steps[i].instances.contains(x))
                    && !steps[..i].iter().any(|s| s.undoes == Some(j))
            });
            steps[i].undoes = fault;
        }
        Ok(Script { duration_s: duration, steps })
    }

    /// The same script with every time multiplied by `factor` (`--quick`).
    pub fn scaled(mut self, factor: f64) -> Script {
        self.duration_s *= factor;
        for s in &mut self.steps {
            s.at_s *= factor;
            s.for_s = s.for_s.map(|d| d * factor);
            if !s.custom_label {
                s.label = s.auto_label();
            }
        }
        self
    }

    /// The faults as spans `(start, end, step index)`; a fault never undone
    /// lasts to the end.
    pub fn spans(&self) -> Vec<(f64, f64, usize)> {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.action.is_fault())
            .map(|(i, s)| {
                let end = self.steps.iter().find(|u| u.undoes == Some(i)).map_or(self.duration_s, |u| u.at_s);
                (s.at_s, end, i)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology::new(20000).unwrap()
    }

    #[test]
    fn the_default_script_is_valid_and_covers_every_fault() {
        let s = Script::default_script(&topo());
        assert!(s.duration_s <= 80.0);
        for a in [Action::Kill, Action::Restart, Action::Freeze, Action::Thaw, Action::Gray, Action::Heal] {
            assert!(s.steps.iter().any(|st| st.action == a), "{a}");
        }
        assert!(s.steps.iter().any(|st| st.action == Action::Kill && st.instances.len() == 3));
        assert_eq!(s.spans().len(), 4);
        assert!(s.steps.windows(2).all(|w| w[0].at_s <= w[1].at_s));
        let quick = s.clone().scaled(1.0 / 3.0);
        assert!(quick.duration_s <= 25.0);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let cases = [
            ("duration_s = 10.0\n[[step]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"c9\"\n", 5, "step.target"),
            ("duration_s = 10.0\n[[step]]\nat_s = 11.0\naction = \"kill\"\ntarget = \"a1\"\n", 3, "step.at_s"),
            ("duration_s = 10.0\n[[step]]\nat_s = 1.0\naction = \"explode\"\ntarget = \"a1\"\n", 4, "step.action"),
            (
                "duration_s = 10.0\n[[step]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"a1\"\ncolour = 3\n",
                6,
                "step.colour",
            ),
            // Wrong types: the message quotes the value, the field is the key.
            ("duration_s = 10.0\n[[step]]\nat_s = 1.0\naction = \"kill\"\ntarget = 7\n", 5, "step.target"),
            ("duration_s = 10.0\n[[step]]\nat_s = \"soon\"\naction = \"kill\"\ntarget = \"a1\"\n", 3, "step.at_s"),
            (
                "duration_s = 10.0\n[[step]]\nat_s = 1.0\naction = \"gray\"\ntarget = \"a1\"\nlatency_ms = -5\n",
                6,
                "step.latency_ms",
            ),
            (
                "duration_s = 10.0\n[[step]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"a1\"\nerror_rate = 0.5\n",
                6,
                "step.error_rate",
            ),
            (
                "duration_s = 10.0\n[[step]]\nat_s = 1.0\naction = \"gray\"\ntarget = \"a1\"\nerror_rate = 1.5\n",
                6,
                "step.error_rate",
            ),
            (
                "duration_s = 10.0\n[[step]]\nat_s = 1.0\naction = \"heal\"\ntarget = \"a1\"\nfor_s = 2.0\n",
                6,
                "step.for_s",
            ),
            ("duration_s = -1.0\n", 1, "duration_s"),
            ("duration_s = \"long\"\n", 1, "duration_s"),
        ];
        for (text, line, field) in cases {
            let e = Script::parse(text, &topo()).expect_err(text);
            assert_eq!(e.line, Some(line), "{text}: {e}");
            assert!(e.to_string().contains(&format!("line {line}")), "{e}");
            if !field.is_empty() {
                assert_eq!(e.field, field, "{text}: {e}");
                assert!(e.to_string().contains(field), "{e}");
            }
        }
    }

    #[test]
    fn for_s_expands_into_the_undoing_step() {
        let text = "duration_s = 20.0\n[[step]]\nat_s = 2.0\naction = \"freeze\"\ntarget = \"zone-b\"\nfor_s = 3.0\n";
        let s = Script::parse(text, &topo()).unwrap();
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[1].action, Action::Thaw);
        assert_eq!(s.steps[1].at_s, 5.0);
        assert_eq!(s.steps[1].undoes, Some(0));
        assert_eq!(s.steps[1].instances, vec![3, 4, 5]);
        assert_eq!(s.spans(), vec![(2.0, 5.0, 0)]);
    }
}
