//! The markdown summary: one row per (scenario, implementation, size) over all seeds.

use std::fmt::Write;

use super::Record;

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// A markdown table of `records`.
pub fn markdown(records: &[Record]) -> String {
    let mut keys: Vec<(String, &'static str, usize)> = Vec::new();
    for r in records {
        let k = (r.scenario.clone(), r.implementation, r.outcome.nodes);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = String::new();
    out.push_str(
        "| scenario | impl | N | seeds | first suspect p50 / p99 s | all dead p50 / p99 / max s | never all dead | rejoin p50 / p99 / max s | never rejoined | removals | false dead | old-life dead | false suspect | starved node suspect / dead | heal max s | not converged | bytes/member/s | msgs/member/s | wall s (mean) |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (scenario, implementation, n) in keys {
        let rs: Vec<&Record> = records
            .iter()
            .filter(|r| r.scenario == scenario && r.implementation == implementation && r.outcome.nodes == n)
            .collect();
        let mut first: Vec<f64> = rs.iter().filter_map(|r| r.outcome.first_suspect_s).collect();
        first.sort_by(f64::total_cmp);
        let mut dead: Vec<f64> = rs.iter().filter_map(|r| r.outcome.all_dead_s).collect();
        dead.sort_by(f64::total_cmp);
        let crash = rs.iter().any(|r| r.outcome.removals.is_some() || r.outcome.restarts > 0);
        let back: u32 = rs.iter().map(|r| r.outcome.back_before_dead).sum();
        // Runs with a crash that counts for `all_dead_s` (still down at the
        // end, or held dead everywhere before it restarted) and none.
        let missed = rs
            .iter()
            .filter(|r| {
                let o = &r.outcome;
                (o.removals.is_some() || o.restarts > o.back_before_dead) && o.all_dead_s.is_none()
            })
            .count();
        let never = match (crash, back) {
            (false, _) => "-".into(),
            (true, 0) => missed.to_string(),
            (true, b) => format!("{missed} ({b} back first)"),
        };
        let mut rejoin: Vec<f64> = rs.iter().filter_map(|r| r.outcome.rejoin_s).collect();
        rejoin.sort_by(f64::total_cmp);
        let restarts = rs.iter().any(|r| r.outcome.restarts > 0);
        let (rejoin_cell, never_rejoined) = if restarts {
            (
                format!(
                    "{} / {} / {}",
                    fmt(percentile(&rejoin, 50.0)),
                    fmt(percentile(&rejoin, 99.0)),
                    fmt(rejoin.last().copied())
                ),
                rs.iter().filter(|r| r.outcome.restarts > 0 && r.outcome.rejoin_s.is_none()).count().to_string(),
            )
        } else {
            ("-".into(), "-".into())
        };
        let removals = rs
            .iter()
            .filter_map(|r| r.outcome.removals)
            .fold(None, |acc: Option<[u32; 2]>, [lo, hi]| Some(acc.map_or([lo, hi], |[a, b]| [a.min(lo), b.max(hi)])));
        let heal =
            rs.iter().filter_map(|r| r.outcome.heal_s).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let heals_expected = rs.iter().any(|r| r.outcome.heal_s.is_some());
        let not_healed = rs.iter().filter(|r| heals_expected && r.outcome.heal_s.is_none()).count();
        let mean = |f: &dyn Fn(&Record) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / rs.len().max(1) as f64;
        let _ = writeln!(
            out,
            "| {scenario} | {implementation} | {n} | {} | {} / {} | {} / {} / {} | {never} | {rejoin_cell} | {never_rejoined} | {} | {} | {} | {} | {} / {} | {}{} | {} | {:.0} | {:.2} | {:.2} |",
            rs.len(),
            fmt(percentile(&first, 50.0)),
            fmt(percentile(&first, 99.0)),
            fmt(percentile(&dead, 50.0)),
            fmt(percentile(&dead, 99.0)),
            fmt(dead.last().copied()),
            removals.map_or("-".into(), |[lo, hi]| format!("{lo}..{hi}")),
            rs.iter().map(|r| r.outcome.false_dead).sum::<u64>(),
            rs.iter().map(|r| r.outcome.old_life_dead).sum::<u64>(),
            rs.iter().map(|r| r.outcome.false_suspect).sum::<u64>(),
            rs.iter().map(|r| r.outcome.paused_suspect).sum::<u64>(),
            rs.iter().map(|r| r.outcome.paused_dead).sum::<u64>(),
            fmt(heal),
            if not_healed > 0 { format!(" ({not_healed} never)") } else { String::new() },
            rs.iter().filter(|r| !r.outcome.converged).count(),
            mean(&|r| r.outcome.bytes_per_member_per_s),
            mean(&|r| r.outcome.msgs_per_member_per_s),
            mean(&|r| r.wall_s),
        );
    }
    out.push_str(
        "\nCounts are summed over seeds; a suspicion or death counts once per observing node. \
         Rejoin: restart to the node being back in every view, both ways, for good. \
         Old-life dead: deaths of a restarted node's previous life, declared by nodes that had \
         not heard of the new one (late detection, not a false death).\n",
    );
    out
}
