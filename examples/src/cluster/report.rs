//! The end of a run: per-phase figures, fail-over and fail-back times,
//! the targets, the summary table, and the JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::script::{Action, Script};
use super::stats::{fine_buckets, Sample, Second, Side, SideFigures};
use super::supervisor::UnexpectedExit;
use super::topology::Topology;

/// The resolution of the fail-over and fail-back measures.
pub const BUCKET: Duration = Duration::from_millis(200);
/// A bucket counts as served when at least this share of its requests succeeded.
pub const SERVED: f64 = 0.99;
/// The largest share of failed requests ha may have through a zone's loss.
pub const ZONE_TARGET: f64 = 0.001;
/// The longest fail-back ha may take.
pub const FAIL_BACK_TARGET_S: f64 = 10.0;

/// ha's and the baseline's figures side by side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pair {
    /// ha.
    pub ha: SideFigures,
    /// The baseline.
    pub baseline: SideFigures,
}

impl Pair {
    fn of(samples: &[&Sample]) -> Pair {
        Pair {
            ha: SideFigures::of(samples.iter().copied(), Side::Ha),
            baseline: SideFigures::of(samples.iter().copied(), Side::Baseline),
        }
    }
}

/// What kind of trouble a phase holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// Before the first fault.
    Steady,
    /// A fault on one instance (and its recovery).
    Instance,
    /// A fault on a whole zone (and its return).
    Zone,
    /// A fault on several instances, not a whole zone.
    Several,
}

/// From one fault's start to the next fault's start (or the end).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// The fault's label.
    pub label: String,
    /// Its kind.
    pub kind: PhaseKind,
    /// Its start, seconds.
    pub start_s: f64,
    /// When the fault was undone, seconds (`None` if never).
    pub undone_s: Option<f64>,
    /// Its end, seconds.
    pub end_s: f64,
    /// The requests sent in it.
    pub figures: Pair,
}

/// How long a client took to switch zones, in seconds; `None`: it never did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Switch {
    /// From the zone's loss to the first request served by the other zone
    /// after which every 200 ms (until the zone returned) had 99% or more
    /// of its requests succeed, 90% or more of them from the other zone.
    pub fail_over_s: Option<f64>,
    /// From the zone's return to the first request served by it after
    /// which every 200 ms had 99% or more of its requests succeed and the
    /// home zone carried at least 90% of its share from before the faults.
    pub fail_back_s: Option<f64>,
}

/// A zone's loss and return.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneSwitch {
    /// The zone.
    pub zone: String,
    /// When it was lost, seconds.
    pub lost_s: f64,
    /// When it came back, seconds.
    pub back_s: Option<f64>,
    /// ha.
    pub ha: Switch,
    /// The baseline.
    pub baseline: Switch,
}

/// One of the targets, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// What it asks.
    pub name: String,
    /// Whether ha met it.
    pub met: bool,
    /// The figure behind it.
    pub detail: String,
}

/// A script step as it ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepLog {
    /// When it ran, seconds from the start of the traffic.
    pub t_s: f64,
    /// What it did.
    pub action: Action,
    /// Its target.
    pub target: String,
    /// Its label.
    pub label: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Requests still unanswered when the run ended, per client: none in a
/// run that was not interrupted (both clients give up within 10 s, and the
/// run waits 11 s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Unfinished {
    /// ha.
    pub ha: u64,
    /// The baseline.
    pub baseline: u64,
}

/// Why requests failed, per client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FailureReasons {
    /// ha: the error kind and its root cause, or the status.
    pub ha: std::collections::BTreeMap<String, u64>,
    /// The baseline: the root cause, or the status.
    pub baseline: std::collections::BTreeMap<String, u64>,
}

/// Everything a run writes to `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `default`, `quick`, or the script's path.
    pub mode: String,
    /// True when Ctrl-C cut the run short.
    pub interrupted: bool,
    /// Request pairs per second.
    pub rate: u32,
    /// Request pairs sent (one through ha, one through the baseline).
    pub pairs_sent: u64,
    /// Seconds of traffic planned.
    pub duration_s: f64,
    /// Seconds of traffic run.
    pub ran_s: f64,
    /// Wall time of the whole run, start-up and clean-up included.
    pub wall_s: f64,
    /// The instances, by index: name and zone.
    pub instances: Vec<(String, String)>,
    /// The client's zone.
    pub home_zone: String,
    /// The whole run.
    pub overall: Pair,
    /// Phase by phase.
    pub phases: Vec<Phase>,
    /// Each zone's loss and return.
    pub zone_switches: Vec<ZoneSwitch>,
    /// The targets.
    pub targets: Vec<Target>,
    /// The steps as they ran.
    pub steps: Vec<StepLog>,
    /// Children that exited without being asked to.
    pub unexpected_exits: Vec<UnexpectedExit>,
    /// Why the user saw failures: reason and count, per client.
    pub failure_reasons: FailureReasons,
    /// Requests never answered when the run ended (not in the figures).
    pub unfinished: Unfinished,
    /// Every child process id.
    pub pids: Vec<u32>,
    /// Children that could not be reaped at the end (should be none).
    pub stuck_children: Vec<String>,
    /// Ports still taken after the clean-up (should be none).
    pub ports_still_in_use: Vec<String>,
    /// Per second.
    pub timeline: Vec<Second>,
    /// Where the files went.
    pub files: Vec<String>,
}

fn kind_of(topology: &Topology, instances: &[usize]) -> PhaseKind {
    match instances {
        [_] => PhaseKind::Instance,
        _ => {
            let zone = &topology.instances[instances[0]].zone;
            let whole = topology.instances.iter().filter(|i| &i.zone == zone).all(|i| instances.contains(&i.index));
            let same = instances.iter().all(|&i| &topology.instances[i].zone == zone);
            if whole && same {
                PhaseKind::Zone
            } else {
                PhaseKind::Several
            }
        }
    }
}

/// The phases of a run of `script` that lasted `ran_s` seconds.
pub fn phases(script: &Script, topology: &Topology, samples: &[Sample], ran_s: f64) -> Vec<Phase> {
    let spans = script.spans();
    let mut bounds: Vec<(f64, String, PhaseKind, Option<f64>)> =
        vec![(0.0, "before the faults".to_owned(), PhaseKind::Steady, None)];
    for (start, end, i) in &spans {
        let step = &script.steps[*i];
        bounds.push((*start, step.label.clone(), kind_of(topology, &step.instances), Some(*end)));
    }
    let mut out = Vec::new();
    for (n, (start, label, kind, undone)) in bounds.iter().enumerate() {
        if *start >= ran_s {
            break;
        }
        let end = bounds.get(n + 1).map_or(ran_s, |b| b.0).min(ran_s);
        let inside: Vec<&Sample> =
            samples.iter().filter(|s| s.start_ms >= start * 1e3 && s.start_ms < end * 1e3).collect();
        out.push(Phase {
            label: label.clone(),
            kind: *kind,
            start_s: *start,
            undone_s: undone.filter(|u| *u < ran_s),
            end_s: end,
            figures: Pair::of(&inside),
        });
    }
    out
}

/// The first bucket index from which on every non-empty bucket passes.
fn settled(buckets: &[Option<(f64, f64)>], pass: impl Fn(f64, f64) -> bool) -> Option<usize> {
    let last_bad = buckets.iter().rposition(|b| b.is_some_and(|(ok, share)| !pass(ok, share)));
    let from = last_bad.map_or(0, |i| i + 1);
    buckets[from..].iter().any(Option::is_some).then_some(from)
}

/// The start of the first request of `side` from `from_ms` on that
/// succeeded and was served by one of `by`, in seconds after `origin_ms`.
fn first_served(samples: &[Sample], side: Side, from_ms: f64, origin_ms: f64, by: &[usize]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.side == side && s.ok && s.start_ms >= from_ms)
        .filter(|s| s.instance.is_some_and(|i| by.contains(&usize::from(i))))
        .map(|s| s.start_ms)
        .min_by(f64::total_cmp)
        .map(|t| (t - origin_ms) / 1e3)
}

#[allow(clippy::too_many_arguments)]
fn switch(
    samples: &[Sample],
    side: Side,
    home_share_before: f64,
    lost_s: f64,
    back_s: Option<f64>,
    end_s: f64,
    home: &[usize],
    others: &[usize],
) -> Switch {
    let bucket_ms = BUCKET.as_secs_f64() * 1e3;
    let lost_until = back_s.unwrap_or(end_s);
    let (lost_ms, until_ms) = (lost_s * 1e3, lost_until * 1e3);
    let over = fine_buckets(samples, side, lost_ms, until_ms, BUCKET, others);
    let fail_over_s = settled(&over, |ok, other| ok >= SERVED && other >= 0.9)
        .and_then(|k| first_served(samples, side, lost_ms + k as f64 * bucket_ms, lost_ms, others));
    let fail_back_s = back_s.and_then(|back| {
        let back_ms = back * 1e3;
        let after = fine_buckets(samples, side, back_ms, end_s * 1e3, BUCKET, home);
        settled(&after, |ok, share| ok >= SERVED && share >= 0.9 * home_share_before)
            .and_then(|k| first_served(samples, side, back_ms + k as f64 * bucket_ms, back_ms, home))
    });
    Switch { fail_over_s, fail_back_s }
}

/// Each whole-zone fault's fail-over and fail-back, for both clients.
pub fn zone_switches(script: &Script, topology: &Topology, samples: &[Sample], phases: &[Phase]) -> Vec<ZoneSwitch> {
    let steady_end = phases.iter().find(|p| p.kind != PhaseKind::Steady).map_or(f64::MAX, |p| p.start_s);
    let mut out = Vec::new();
    for p in phases.iter().filter(|p| p.kind == PhaseKind::Zone) {
        let Some(step) = script.steps.iter().find(|s| s.action.is_fault() && s.at_s == p.start_s && s.label == p.label)
        else {
            continue;
        };
        let zone = topology.instances[step.instances[0]].zone.clone();
        let home: Vec<usize> = step.instances.clone();
        let others: Vec<usize> = topology.instances.iter().map(|i| i.index).filter(|i| !home.contains(i)).collect();
        let share_before = |side| {
            let before =
                fine_buckets(samples, side, 0.0, steady_end.min(p.start_s) * 1e3, Duration::from_secs(3600), &home);
            before.first().copied().flatten().map_or(0.0, |(_, share)| share)
        };
        out.push(ZoneSwitch {
            zone,
            lost_s: p.start_s,
            back_s: p.undone_s,
            ha: switch(samples, Side::Ha, share_before(Side::Ha), p.start_s, p.undone_s, p.end_s, &home, &others),
            baseline: switch(
                samples,
                Side::Baseline,
                share_before(Side::Baseline),
                p.start_s,
                p.undone_s,
                p.end_s,
                &home,
                &others,
            ),
        });
    }
    out
}

/// The targets, checked on ha's figures.
pub fn targets(phases: &[Phase], switches: &[ZoneSwitch]) -> Vec<Target> {
    let mut out = Vec::new();
    for p in phases {
        let f = &p.figures.ha;
        match p.kind {
            PhaseKind::Instance => out.push(Target {
                name: format!("ha: no failed request through `{}`", p.label),
                met: f.failures == 0,
                detail: format!(
                    "{} of {} failed (baseline: {} of {})",
                    f.failures, f.requests, p.figures.baseline.failures, p.figures.baseline.requests
                ),
            }),
            PhaseKind::Zone => out.push(Target {
                name: format!("ha: at most 0.1% failed through `{}`", p.label),
                met: (f.failures as f64) <= ZONE_TARGET * f.requests as f64,
                detail: format!(
                    "{} of {} failed, {:.3}% (baseline: {:.2}%)",
                    f.failures,
                    f.requests,
                    100.0 - f.success_pct,
                    100.0 - p.figures.baseline.success_pct
                ),
            }),
            PhaseKind::Steady | PhaseKind::Several => {}
        }
    }
    for z in switches {
        if z.back_s.is_some() {
            let s = z.ha.fail_back_s;
            out.push(Target {
                name: format!("ha: traffic back on {} within {FAIL_BACK_TARGET_S} s of its return", z.zone),
                met: s.is_some_and(|s| s <= FAIL_BACK_TARGET_S),
                detail: s.map_or_else(|| "never, within the run".to_owned(), |s| format!("{s:.2} s")),
            });
        }
    }
    out
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s"))
}

/// The summary table, as printed at the end of a run.
pub fn summary_table(r: &Report) -> String {
    let mut t = String::new();
    let o = &r.overall;
    let _ = writeln!(
        t,
        "\n== ha cluster demo: {} run, {:.0} s of traffic at {} req/s ({:.0} s wall) ==",
        r.mode, r.ran_s, r.rate, r.wall_s
    );
    if r.interrupted {
        let _ = writeln!(t, "(interrupted: the figures cover the part that ran)");
    }
    let _ = writeln!(t, "{:<44} {:>22} {:>22}", "", "ha", "baseline");
    let row = |t: &mut String, name: &str, a: String, b: String| {
        let _ = writeln!(t, "{name:<44} {a:>22} {b:>22}");
    };
    let fail = |f: &SideFigures| format!("{} / {} ({:.3}%)", f.failures, f.requests, 100.0 - f.success_pct);
    row(&mut t, "user-visible failures, whole run", fail(&o.ha), fail(&o.baseline));
    row(
        &mut t,
        "p50 / p99 latency, whole run",
        format!("{:.1} / {:.1} ms", o.ha.p50_ms, o.ha.p99_ms),
        format!("{:.1} / {:.1} ms", o.baseline.p50_ms, o.baseline.p99_ms),
    );
    for p in &r.phases {
        let f = &p.figures;
        row(
            &mut t,
            &format!("  {:.0}-{:.0} s {}", p.start_s, p.end_s, trim(&p.label, 30)),
            format!("{} fail, p99 {:.0} ms", f.ha.failures, f.ha.p99_ms),
            format!("{} fail, p99 {:.0} ms", f.baseline.failures, f.baseline.p99_ms),
        );
    }
    for z in &r.zone_switches {
        row(
            &mut t,
            &format!("time to fail over ({} lost)", z.zone),
            secs(z.ha.fail_over_s),
            secs(z.baseline.fail_over_s),
        );
        let (ha, baseline) = match z.back_s {
            Some(_) => (secs(z.ha.fail_back_s), secs(z.baseline.fail_back_s)),
            None => ("not back in the run".to_owned(), "-".to_owned()),
        };
        row(&mut t, &format!("time to fail back ({} back)", z.zone), ha, baseline);
    }
    let _ = writeln!(t, "\ntargets:");
    for target in &r.targets {
        let _ = writeln!(t, "  [{}] {}: {}", if target.met { "met" } else { "MISSED" }, target.name, target.detail);
    }
    for (side, reasons) in [("ha", &r.failure_reasons.ha), ("baseline", &r.failure_reasons.baseline)] {
        if !reasons.is_empty() {
            let _ = writeln!(t, "{side}'s failures, by cause:");
            for (why, n) in reasons {
                let _ = writeln!(t, "  {n:>6}  {why}");
            }
        }
    }
    for s in r.steps.iter().filter(|s| s.error.is_some()) {
        let _ = writeln!(t, "step FAILED at {:.1} s: {}: {}", s.t_s, s.label, s.error.as_deref().unwrap_or_default());
    }
    for d in &r.unexpected_exits {
        let _ = writeln!(t, "unexpected exit: {} (pid {}) {}: {}", d.name, d.pid, d.status, d.stderr.join(" | "));
    }
    if r.unfinished.ha + r.unfinished.baseline > 0 {
        let _ = writeln!(
            t,
            "still unanswered at the end (not in the figures): ha {}, baseline {}",
            r.unfinished.ha, r.unfinished.baseline
        );
    }
    if !r.stuck_children.is_empty() || !r.ports_still_in_use.is_empty() {
        let _ = writeln!(t, "clean-up problems: children {:?}, ports {:?}", r.stuck_children, r.ports_still_in_use);
    }
    for f in &r.files {
        let _ = writeln!(t, "wrote {f}");
    }
    t
}

fn trim(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_finds_the_bucket_after_the_last_bad_one() {
        let b = [Some((0.5, 0.0)), None, Some((1.0, 1.0)), Some((0.98, 1.0)), Some((1.0, 1.0)), None];
        assert_eq!(settled(&b, |ok, _| ok >= 0.99), Some(4));
        assert_eq!(settled(&b[..4], |ok, _| ok >= 0.99), None);
        assert_eq!(settled(&[Some((1.0, 1.0))], |ok, _| ok >= 0.99), Some(0));
    }

    #[test]
    fn a_zone_switch_is_measured_on_both_clients() {
        let topo = Topology::new(20000).unwrap();
        let text = "duration_s = 10.0\n[[step]]\nat_s = 2.0\naction = \"kill\"\ntarget = \"zone-a\"\nfor_s = 4.0\n";
        let script = Script::parse(text, &topo).unwrap();
        let mut samples = Vec::new();
        for ms in (0..10_000).step_by(10) {
            let t = f64::from(ms);
            let lost = (2000.0..6000.0).contains(&t);
            // ha: served by zone-b while zone-a is gone (after 300 ms), back home 1 s after its return.
            let ha_home = !(2000.0..7000.0).contains(&t);
            let ha_ok = !(2000.0..2300.0).contains(&t) || ms % 20 == 0;
            samples.push(Sample {
                side: Side::Ha,
                start_ms: t,
                latency_ms: 1.0,
                ok: ha_ok,
                instance: Some(if ha_home { 0 } else { 3 }),
            });
            // baseline: alternates between the zones; half of it fails while the zone is gone.
            let inst = ((ms / 10) % 2 * 3) as u8;
            samples.push(Sample {
                side: Side::Baseline,
                start_ms: t,
                latency_ms: 1.0,
                ok: !(lost && inst == 0),
                instance: Some(inst),
            });
        }
        let phases = phases(&script, &topo, &samples, 10.0);
        assert_eq!(phases.len(), 2);
        assert_eq!(phases[1].kind, PhaseKind::Zone);
        let z = zone_switches(&script, &topo, &samples, &phases);
        assert_eq!(z.len(), 1);
        assert!((z[0].ha.fail_over_s.unwrap() - 0.4).abs() < 1e-9, "{z:?}");
        assert!((z[0].ha.fail_back_s.unwrap() - 1.0).abs() < 1e-9, "{z:?}");
        assert_eq!(z[0].baseline.fail_over_s, None);
        assert_eq!(z[0].baseline.fail_back_s, Some(0.0));
        // Bucket-aligned above; a first served request inside a bucket counts from its start time.
        assert_eq!(first_served(&samples, Side::Ha, 6_000.0, 6_000.0, &[0]), Some(1.0));
        assert_eq!(first_served(&samples, Side::Ha, 2_000.0, 2_000.0, &[3]), Some(0.0));
        let t = targets(&phases, &z);
        assert_eq!(t.len(), 2);
        assert!(!t[0].met, "{t:?}");
        assert!(t[1].met, "{t:?}");
    }
}
