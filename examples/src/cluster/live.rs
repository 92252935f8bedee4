//! Builds each second's [`Frame`] from the samples, ha's endpoint and retry
//! counters, the client's membership view and the supervisor's states.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ha::membership::{Cluster, MemberState};

use super::stats::{quantile, Recorder, Side};
use super::supervisor::ProcState;
use super::topology::Topology;
use super::traffic::HaClient;
use super::view::{ClientRow, Frame, InstanceRow};

/// Shared between the script runner, the supervisor's reports and the view.
#[derive(Debug, Default)]
pub struct Live {
    /// The faults in force: (step index, label).
    pub faults: Mutex<Vec<(usize, String)>>,
    /// The event log, newest last.
    pub events: Mutex<VecDeque<String>>,
    /// Events logged since the start (the log keeps the last 200).
    pub events_total: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Live {
    /// Logs an event.
    pub fn event(&self, line: String) {
        let mut e = lock(&self.events);
        if e.len() == 200 {
            e.pop_front();
        }
        e.push_back(line);
        self.events_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The faults in force, by label.
    pub fn faults(&self) -> Vec<String> {
        lock(&self.faults).iter().map(|(_, l)| l.clone()).collect()
    }
}

/// Turns counters into per-second deltas.
#[derive(Debug, Default)]
pub struct FrameBuilder {
    cursor: usize,
    retries: u64,
    failures: HashMap<Arc<str>, u64>,
    totals: [(u64, u64); 2],
}

impl FrameBuilder {
    /// The frame of the second that just ended.
    #[allow(clippy::too_many_arguments)]
    pub fn frame(
        &mut self,
        elapsed_s: f64,
        total_s: f64,
        recorder: &Recorder,
        client: &HaClient,
        node: &Cluster,
        topology: &Topology,
        states: &Mutex<Vec<ProcState>>,
        live: &Live,
    ) -> Frame {
        let fresh = recorder.since(self.cursor);
        self.cursor += fresh.len();
        let n = topology.instances.len();
        let mut lat = [Vec::new(), Vec::new()];
        let mut fails = [0u64; 2];
        let mut per: Vec<[(u64, u64, Vec<f64>); 2]> =
            (0..n).map(|_| [(0, 0, Vec::new()), (0, 0, Vec::new())]).collect();
        let mut answered = [0u64; 2];
        for s in &fresh {
            let k = usize::from(s.side == Side::Baseline);
            lat[k].push(s.latency_ms);
            fails[k] += u64::from(!s.ok);
            if let Some(i) = s.instance.map(usize::from).filter(|&i| i < n) {
                let counted = k == 1 || s.ok;
                if counted {
                    per[i][k].0 += 1;
                    answered[k] += 1;
                }
                per[i][k].1 += u64::from(!s.ok);
                per[i][k].2.push(s.latency_ms);
            }
        }
        let retries = client.retry_stats().retries;
        let new_retries = retries.saturating_sub(self.retries);
        self.retries = retries;
        let mut rows = [ClientRow::default(); 2];
        for k in 0..2 {
            let count = lat[k].len() as u64;
            self.totals[k].0 += count;
            self.totals[k].1 += fails[k];
            rows[k] = ClientRow {
                success_pct: if count == 0 { 100.0 } else { 100.0 * (count - fails[k]) as f64 / count as f64 },
                p50_ms: quantile(&mut lat[k], 0.5),
                p99_ms: quantile(&mut lat[k], 0.99),
                attempts: if count == 0 {
                    0.0
                } else if k == 0 {
                    1.0 + new_retries as f64 / count as f64
                } else {
                    1.0
                },
                requests: self.totals[k].0,
                failures: self.totals[k].1,
            };
        }
        let endpoints: HashMap<Arc<str>, _> =
            client.endpoint_stats().into_iter().map(|e| (e.name.clone(), e)).collect();
        let members = node.all_members();
        let states = lock(states).clone();
        let instances = topology
            .instances
            .iter()
            .map(|spec| {
                let ep = endpoints.iter().find(|(k, _)| ***k == *spec.name).map(|(_, e)| e);
                let ha_errors = ep.map_or(0, |e| {
                    let before = self.failures.insert(e.name.clone(), e.failures).unwrap_or(0);
                    e.failures.saturating_sub(before)
                });
                let endpoint = ep.map_or_else(
                    || "-".to_owned(),
                    |e| {
                        // Short enough for an 80-column terminal.
                        let mut flags = format!("t{}", e.tier);
                        if e.ejected {
                            flags.push_str(" ejected");
                        }
                        if e.breaker_open {
                            flags.push_str(if e.ejected { "+open" } else { " open" });
                        }
                        flags
                    },
                );
                let membership = members.iter().find(|m| *m.name == *spec.name).map_or("-", |m| match m.state {
                    MemberState::Alive => "alive",
                    MemberState::Suspect => "suspect",
                    MemberState::Dead => "dead",
                    MemberState::Left => "left",
                });
                let share = |k: usize| {
                    if answered[k] == 0 {
                        0.0
                    } else {
                        100.0 * per[spec.index][k].0 as f64 / answered[k] as f64
                    }
                };
                InstanceRow {
                    name: spec.name.clone(),
                    zone: spec.zone.clone(),
                    process: states.get(spec.index).copied().unwrap_or(ProcState::NotStarted),
                    membership: membership.to_owned(),
                    endpoint,
                    ha_share: share(0),
                    ha_errors,
                    ha_latency_ms: ep.map_or(0.0, |e| e.latency.as_secs_f64() * 1e3),
                    baseline_share: share(1),
                    baseline_errors: per[spec.index][1].1,
                    baseline_p50_ms: quantile(&mut per[spec.index][1].2, 0.5),
                }
            })
            .collect();
        Frame {
            elapsed_s,
            total_s,
            faults: live.faults(),
            instances,
            ha: rows[0],
            baseline: rows[1],
            events: lock(&live.events).iter().cloned().collect(),
            events_total: live.events_total.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}
