//! The SWIM scenario runner behind the `swim-lab` binary: runs each
//! scenario file on the deterministic simulator of `ha-membership`, for
//! every seed, with `ha` and `foca` on the same simulated network and
//! faults, and reports one JSON object per run or a markdown summary.

pub mod foca_node;
pub mod report;

use std::path::Path;
use std::time::Instant as WallInstant;

use ha_membership_sim::{self as sim, scenario::Scenario, Outcome, RunSpec};
use serde::Serialize;

/// Which protocol runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// This workspace's `ha-membership`, Lifeguard on.
    Ha,
    /// `ha-membership` with Lifeguard off: plain SWIM.
    HaPlainSwim,
    /// The `foca` crate.
    Foca,
}

impl Implementation {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Ha => "ha",
            Implementation::HaPlainSwim => "ha-plain-swim",
            Implementation::Foca => "foca",
        }
    }
}

/// One line of the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Scenario file name without `.toml`.
    pub scenario: String,
    /// `ha`, `ha-plain-swim` or `foca`.
    pub implementation: &'static str,
    /// Lifeguard on (for `ha`).
    pub lifeguard: bool,
    /// The seed.
    pub seed: u64,
    /// What the simulator measured.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall-clock seconds the run took on this machine.
    pub wall_s: f64,
}

/// Runs one scenario for one implementation, size and seed.
pub fn run_one(
    name: &str,
    scenario: &Scenario,
    implementation: Implementation,
    nodes: usize,
    seed: u64,
    quick: bool,
) -> Result<Record, sim::scenario::ScenarioError> {
    let lifeguard = implementation != Implementation::HaPlainSwim;
    let spec = RunSpec { nodes, seed, quick, lifeguard };
    let start = WallInstant::now();
    let outcome = match implementation {
        Implementation::Ha | Implementation::HaPlainSwim => {
            sim::run(scenario, &spec, &mut sim::ha_spawner(scenario, &spec)?)?
        }
        Implementation::Foca => sim::run(scenario, &spec, &mut foca_node::spawner(nodes, &scenario.preset))?,
    };
    Ok(Record {
        scenario: name.to_string(),
        implementation: implementation.name(),
        lifeguard,
        seed,
        outcome,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Reads a scenario file; its name is the file stem.
pub fn load(path: &Path) -> Result<(String, Scenario), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let scenario: Scenario = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((name, scenario))
}
