//! Scenario files: cluster size, network, faults, as TOML data.

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// One node count or several (the runner runs each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sizes {
    /// One size.
    One(usize),
    /// Several sizes.
    Many(Vec<usize>),
}

impl Sizes {
    /// The sizes as a list.
    pub fn to_vec(&self) -> Vec<usize> {
        match self {
            Sizes::One(n) => vec![*n],
            Sizes::Many(v) => v.clone(),
        }
    }
}

/// The simulated network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// One-way latency drawn uniformly from `[min, max]` milliseconds.
    pub latency_ms: [f64; 2],
    /// Probability that a datagram is lost (streams are reliable).
    pub loss: f64,
}

impl Default for Network {
    fn default() -> Self {
        Network { latency_ms: [0.2, 2.0], loss: 0.0 }
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum FaultKind {
    /// The nodes stop at `at_s` without leaving (and restart at `until_s` if given).
    Crash {
        /// Node indices.
        nodes: Vec<usize>,
    },
    /// The nodes leave gracefully at `at_s`.
    Leave {
        /// Node indices.
        nodes: Vec<usize>,
    },
    /// Nodes `[0, split)` and `[split, n)` cannot reach each other (or, when
    /// `one_way`, the first group's packets to the second are lost).
    Partition {
        /// The first index of the second group.
        split: usize,
        /// Only the first group's packets to the second are lost.
        #[serde(default)]
        one_way: bool,
    },
    /// Every message the nodes handle, and every timer, runs late by a
    /// uniform `[min_ms, max_ms]` (CPU starvation).
    Pause {
        /// Node indices.
        nodes: Vec<usize>,
        /// Least delay.
        min_ms: u64,
        /// Largest delay.
        max_ms: u64,
    },
    /// Extra uniform datagram loss.
    Loss {
        /// Probability of loss.
        rate: f64,
    },
}

/// A fault active from `at_s` until `until_s` (seconds after the warm-up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Start, in seconds after the warm-up.
    pub at_s: f64,
    /// End (restart, heal, resume); absent means until the end.
    #[serde(default)]
    pub until_s: Option<f64>,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// A scenario: a cluster, its network, its faults, and how long to watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// Cluster size(s).
    pub nodes: Sizes,
    /// Sizes with `--quick` (default: `nodes`).
    #[serde(default)]
    pub quick_nodes: Option<Sizes>,
    /// Seconds for the cluster to form before faults and measurement start.
    #[serde(default = "default_warmup")]
    pub warmup_s: f64,
    /// Seconds measured after the warm-up.
    pub duration_s: f64,
    /// Seconds measured with `--quick`.
    #[serde(default)]
    pub quick_duration_s: Option<f64>,
    /// `lan`, `wan` or `local`.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// The network.
    #[serde(default)]
    pub network: Network,
    /// The faults.
    #[serde(default)]
    pub faults: Vec<Fault>,
}

fn default_warmup() -> f64 {
    30.0
}

fn default_preset() -> String {
    "lan".into()
}

/// A scenario that cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError(pub String);

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid scenario: {}", self.0)
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// The protocol configuration of its preset.
    pub fn config(&self) -> Result<Config, ScenarioError> {
        match self.preset.as_str() {
            "lan" => Ok(Config::lan()),
            "wan" => Ok(Config::wan()),
            "local" => Ok(Config::local()),
            other => Err(ScenarioError(format!("unknown preset `{other}`"))),
        }
    }

    /// Checks node indices, times and probabilities against a size `n`.
    pub fn validate(&self, n: usize) -> Result<(), ScenarioError> {
        let err = |s: String| Err(ScenarioError(s));
        self.config()?;
        if n < 2 {
            return err("at least 2 nodes".into());
        }
        let [lo, hi] = self.network.latency_ms;
        if !(0.0..=60_000.0).contains(&lo) || hi < lo || hi > 60_000.0 {
            return err("latency_ms must be [min, max] within 0..60000".into());
        }
        if !(0.0..1.0).contains(&self.network.loss) {
            return err("loss must be in [0, 1)".into());
        }
        if !(self.duration_s > 0.0 && self.warmup_s >= 0.0) {
            return err("duration_s must be positive".into());
        }
        for f in &self.faults {
            if f.at_s < 0.0 || f.until_s.is_some_and(|u| u < f.at_s) {
                return err(format!("fault times out of order: {f:?}"));
            }
            let nodes: &[usize] = match &f.kind {
                FaultKind::Crash { nodes } | FaultKind::Leave { nodes } | FaultKind::Pause { nodes, .. } => nodes,
                FaultKind::Partition { split, .. } => {
                    if *split == 0 || *split >= n {
                        return err(format!("partition split {split} out of 1..{n}"));
                    }
                    &[]
                }
                FaultKind::Loss { rate } => {
                    if !(0.0..1.0).contains(rate) {
                        return err("loss rate must be in [0, 1)".into());
                    }
                    &[]
                }
            };
            if let Some(bad) = nodes.iter().find(|&&i| i >= n) {
                return err(format!("node {bad} out of 0..{n}"));
            }
            if let FaultKind::Pause { min_ms, max_ms, .. } = f.kind {
                if max_ms < min_ms {
                    return err("pause max_ms below min_ms".into());
                }
            }
        }
        Ok(())
    }
}
