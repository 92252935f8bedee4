//! Scenario files: cluster size, network, faults, as TOML data.

use serde::{Deserialize, Serialize};

use super::dist::Dist;
use super::latency::{self, Tail};
use ha_swim::Config;

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
///
/// The one-way latency is either the short form `latency_ms = [min, max]`
/// (uniform, as scenario files have always written it) or a `latency` table
/// with a distribution (see [`Dist`]), not both; with neither it is
/// uniform in `[0.2, 2.0]` ms. An optional `latency_tail` adds an extra
/// delay to a fraction of datagrams.
///
/// ```toml
/// [network]
/// loss = 0.01
/// latency = { kind = "lognormal", median_ms = 1.0, sigma = 0.5 }
/// latency_tail = { p = 0.01, extra = { kind = "uniform", min_ms = 50, max_ms = 200 } }
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// One-way latency drawn uniformly from `[min, max]` milliseconds (the short form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<[f64; 2]>,
    /// One-way latency distribution (the long form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Dist>,
    /// An extra delay for a fraction of datagrams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_tail: Option<Tail>,
    /// Probability that a datagram is lost (streams are reliable).
    pub loss: f64,
}

impl Network {
    /// The latency distribution the network uses, validated.
    pub fn latency_dist(&self) -> Result<Dist, ScenarioError> {
        let dist = match (self.latency_ms, self.latency.clone()) {
            (Some(_), Some(_)) => {
                return Err(ScenarioError::new(
                    "network.latency",
                    "give either latency_ms = [min, max] or a latency table, not both",
                ))
            }
            (Some([min_ms, max_ms]), None) => Dist::Uniform { min_ms, max_ms },
            (None, Some(l)) => l,
            (None, None) => latency::default_latency(),
        };
        latency::validate(&dist, "network.latency")?;
        Ok(dist)
    }
}

/// What a fault does.
///
/// ```toml
/// [[faults]]                 # two halves, as scenario files have always written it
/// kind = "partition"
/// split = 16
/// [[faults]]                 # any node sets; nodes in no group form one more group
/// kind = "partition"
/// groups = [[0, 5, 9], [1, 2]]
/// [[faults]]                 # single links, both ways unless one_way
/// kind = "link_cut"
/// links = [[3, 4], [3, 7]]
/// [[faults]]                 # loss on single links, on top of the network's
/// kind = "link_loss"
/// links = [[0, 1]]
/// rate = 0.3
/// ```
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
    /// Groups of nodes cannot reach each other: `[0, split)` and `[split, n)`
    /// (`split`), or the listed `groups` and, as one more group, every node
    /// in none (give one of the two). With `one_way`, only the first group's
    /// packets to the others are lost.
    Partition {
        /// The first index of the second group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        split: Option<usize>,
        /// Disjoint node sets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        groups: Option<Vec<Vec<usize>>>,
        /// Only the first group's packets to the others are lost.
        #[serde(default)]
        one_way: bool,
    },
    /// Datagrams and streams between each pair `[a, b]` are lost (with
    /// `one_way`, only from `a` to `b`); every other path stays, so the
    /// protocol can still reach `b` through a third node.
    LinkCut {
        /// Node pairs.
        links: Vec<[usize; 2]>,
        /// Only `a`'s packets to `b` are lost.
        #[serde(default)]
        one_way: bool,
    },
    /// Extra datagram loss on each pair `[a, b]`, both ways unless `one_way`.
    LinkLoss {
        /// Node pairs.
        links: Vec<[usize; 2]>,
        /// Probability of loss on those links, added to the network's.
        rate: f64,
        /// Only `a`'s packets to `b`.
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

impl FaultKind {
    /// For a partition of `n` nodes, each node's group (0 is the first
    /// group, the one a one-way partition silences); `None` for other faults.
    pub fn partition_groups(&self, n: usize) -> Option<Vec<u32>> {
        match self {
            FaultKind::Partition { split: Some(split), .. } => Some((0..n).map(|i| u32::from(i >= *split)).collect()),
            FaultKind::Partition { groups: Some(groups), .. } => {
                let rest = groups.len() as u32;
                let mut g = vec![rest; n];
                for (k, group) in groups.iter().enumerate() {
                    for &i in group {
                        if i < n {
                            g[i] = k as u32;
                        }
                    }
                }
                Some(g)
            }
            _ => None,
        }
    }
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

/// A scenario that cannot run: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The field, as a path into the file (`faults[2].links[0]`, `network.loss`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ScenarioError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ScenarioError { field: field.into(), problem: problem.into() }
    }
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid scenario: `{}`: {}", self.field, self.problem)
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
            other => Err(ScenarioError::new("preset", format!("unknown preset `{other}` (lan, wan or local)"))),
        }
    }

    /// Checks node indices, times and probabilities against a size `n`.
    pub fn validate(&self, n: usize) -> Result<(), ScenarioError> {
        let err = |field: String, problem: String| Err(ScenarioError::new(field, problem));
        self.config()?;
        if n < 2 {
            return err("nodes".into(), format!("{n}: at least 2 nodes"));
        }
        self.network.latency_dist()?;
        if let Some(tail) = &self.network.latency_tail {
            tail.validate()?;
        }
        if !(0.0..1.0).contains(&self.network.loss) {
            return err("network.loss".into(), format!("{} must be in [0, 1)", self.network.loss));
        }
        if self.duration_s.is_nan() || self.duration_s <= 0.0 {
            return err("duration_s".into(), format!("{} must be positive", self.duration_s));
        }
        if self.warmup_s.is_nan() || self.warmup_s < 0.0 {
            return err("warmup_s".into(), format!("{} must not be negative", self.warmup_s));
        }
        let node = |field: String, i: usize| if i < n { Ok(()) } else { err(field, format!("node {i} out of 0..{n}")) };
        let rate = |field: String, r: f64| {
            if (0.0..1.0).contains(&r) {
                Ok(())
            } else {
                err(field, format!("{r} must be in [0, 1)"))
            }
        };
        for (k, f) in self.faults.iter().enumerate() {
            let at = |field: &str| format!("faults[{k}].{field}");
            if f.at_s.is_nan() || f.at_s < 0.0 {
                return err(at("at_s"), format!("{} must not be negative", f.at_s));
            }
            if let Some(u) = f.until_s.filter(|u| u.is_nan() || *u < f.at_s) {
                return err(at("until_s"), format!("{u} is before at_s = {}", f.at_s));
            }
            match &f.kind {
                FaultKind::Crash { nodes } | FaultKind::Leave { nodes } | FaultKind::Pause { nodes, .. } => {
                    for (j, &i) in nodes.iter().enumerate() {
                        node(at(&format!("nodes[{j}]")), i)?;
                    }
                }
                FaultKind::Partition { split, groups, .. } => match (split, groups) {
                    (Some(_), Some(_)) | (None, None) => {
                        return err(at("split"), "give either split or groups, not both or neither".into())
                    }
                    (Some(split), None) => {
                        if *split == 0 || *split >= n {
                            return err(at("split"), format!("{split} out of 1..{n}"));
                        }
                    }
                    (None, Some(groups)) => {
                        let mut seen = vec![false; n];
                        for (g, group) in groups.iter().enumerate() {
                            if group.is_empty() {
                                return err(at(&format!("groups[{g}]")), "an empty group".into());
                            }
                            for (j, &i) in group.iter().enumerate() {
                                let field = at(&format!("groups[{g}][{j}]"));
                                node(field.clone(), i)?;
                                if std::mem::replace(&mut seen[i], true) {
                                    return err(field, format!("node {i} is in two groups"));
                                }
                            }
                        }
                        let rest = seen.iter().filter(|s| !**s).count();
                        if groups.len() + usize::from(rest > 0) < 2 {
                            return err(at("groups"), "a partition needs at least two groups".into());
                        }
                    }
                },
                FaultKind::LinkCut { links, .. } | FaultKind::LinkLoss { links, .. } => {
                    if links.is_empty() {
                        return err(at("links"), "no links".into());
                    }
                    for (j, &[a, b]) in links.iter().enumerate() {
                        let field = at(&format!("links[{j}]"));
                        node(field.clone(), a)?;
                        node(field.clone(), b)?;
                        if a == b {
                            return err(field, format!("[{a}, {b}] is not a link"));
                        }
                    }
                    if let FaultKind::LinkLoss { rate: r, .. } = f.kind {
                        rate(at("rate"), r)?;
                    }
                }
                FaultKind::Loss { rate: r } => rate(at("rate"), *r)?,
            }
            if let FaultKind::Pause { min_ms, max_ms, .. } = f.kind {
                if max_ms < min_ms {
                    return err(at("max_ms"), format!("{max_ms} is below min_ms = {min_ms}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(network: &str) -> Result<Scenario, toml::de::Error> {
        toml::from_str(&format!("nodes = 4\nduration_s = 10\n[network]\n{network}\n"))
    }

    #[test]
    fn the_short_latency_form_still_means_uniform() {
        let s = parse("latency_ms = [0.5, 3.0]\nloss = 0.1").unwrap();
        assert_eq!(s.network.latency_dist(), Ok(Dist::Uniform { min_ms: 0.5, max_ms: 3.0 }));
        assert!(s.validate(4).is_ok());
        // No latency at all is the old default, uniform 0.2..2 ms.
        let s = parse("loss = 0.0").unwrap();
        assert_eq!(s.network.latency_dist(), Ok(Dist::Uniform { min_ms: 0.2, max_ms: 2.0 }));
    }

    #[test]
    fn every_distribution_parses_from_toml() {
        for (text, want) in [
            (r#"latency = { kind = "constant", ms = 2 }"#, Dist::Constant { ms: 2.0 }),
            (r#"latency = { kind = "uniform", min_ms = 1, max_ms = 2 }"#, Dist::Uniform { min_ms: 1.0, max_ms: 2.0 }),
            (
                r#"latency = { kind = "normal", mean_ms = 5, stddev_ms = 1.5 }"#,
                Dist::Normal { mean_ms: 5.0, stddev_ms: 1.5 },
            ),
            (
                r#"latency = { kind = "lognormal", median_ms = 1, sigma = 0.5 }"#,
                Dist::Lognormal { median_ms: 1.0, sigma: 0.5 },
            ),
        ] {
            let s = parse(text).unwrap();
            assert_eq!(s.network.latency_dist(), Ok(want));
            assert!(s.validate(4).is_ok());
        }
        let s = parse(
            "latency_tail = { p = 0.01, extra = { kind = \"constant\", ms = 100 } }\n\
             [network.latency]\nkind = \"normal\"\nmean_ms = 1\nstddev_ms = 0.2",
        )
        .unwrap();
        assert_eq!(s.network.latency_tail, Some(Tail { p: 0.01, extra: Dist::Constant { ms: 100.0 } }));
        assert!(s.validate(4).is_ok());
    }

    #[test]
    fn bad_latency_is_an_error_not_a_panic() {
        // Unknown shapes and fields fail to parse.
        assert!(parse(r#"latency = { kind = "pareto", ms = 1 }"#).is_err());
        assert!(parse(r#"latency = { kind = "constant", ms = 1, sigma = 2 }"#).is_err());
        assert!(parse(r#"latency = { kind = "lognormal", median_ms = 1 }"#).is_err());
        // Values out of range fail validation.
        for text in [
            "latency_ms = [3.0, 1.0]",
            "latency_ms = [-1.0, 1.0]",
            r#"latency = { kind = "lognormal", median_ms = 0, sigma = 0.5 }"#,
            r#"latency = { kind = "normal", mean_ms = -2, stddev_ms = 1 }"#,
            r#"latency = { kind = "constant", ms = nan }"#,
            "latency_tail = { p = 2.0, extra = { kind = \"constant\", ms = 1 } }",
            "latency_ms = [0.2, 2.0]\nlatency = { kind = \"constant\", ms = 1 }",
        ] {
            let s = parse(text).unwrap();
            let e = s.validate(4).expect_err(text);
            assert!(e.field.starts_with("network.latency"), "{e}");
        }
    }

    fn faults(faults: &str) -> Result<Scenario, toml::de::Error> {
        toml::from_str(&format!("nodes = 8\nduration_s = 10\n{faults}\n"))
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        assert!(toml::from_str::<Scenario>("nodes = 8\nduration_s = 10\nseeds = 3").is_err());
        assert!(parse("los = 0.1").is_err());
        // A typo in a fault's own key or in its time.
        assert!(faults("[[faults]]\nkind = \"crash\"\nat_s = 1\nnode = [3]").is_err());
        assert!(faults("[[faults]]\nkind = \"crash\"\nat_s = 1\nuntill_s = 4\nnodes = [3]").is_err());
        assert!(faults("[[faults]]\nkind = \"link_cut\"\nat_s = 1\nlinks = [[1, 2]]\nrate = 0.5").is_err());
        assert!(faults("[[faults]]\nkind = \"blackhole\"\nat_s = 1").is_err());
    }

    #[test]
    fn bad_faults_name_the_field() {
        for (text, field) in [
            ("kind = \"crash\"\nat_s = 1\nnodes = [3, 8]", "faults[0].nodes[1]"),
            ("kind = \"crash\"\nat_s = 5\nuntil_s = 4\nnodes = [3]", "faults[0].until_s"),
            ("kind = \"crash\"\nat_s = -1\nnodes = [3]", "faults[0].at_s"),
            ("kind = \"partition\"\nat_s = 1\nsplit = 8", "faults[0].split"),
            ("kind = \"partition\"\nat_s = 1", "faults[0].split"),
            ("kind = \"partition\"\nat_s = 1\nsplit = 2\ngroups = [[1]]", "faults[0].split"),
            ("kind = \"partition\"\nat_s = 1\ngroups = [[1, 2], [2, 3]]", "faults[0].groups[1][0]"),
            ("kind = \"partition\"\nat_s = 1\ngroups = [[1], []]", "faults[0].groups[1]"),
            ("kind = \"partition\"\nat_s = 1\ngroups = [[0, 1, 2, 3, 4, 5, 6, 7]]", "faults[0].groups"),
            ("kind = \"link_cut\"\nat_s = 1\nlinks = [[1, 2], [3, 3]]", "faults[0].links[1]"),
            ("kind = \"link_cut\"\nat_s = 1\nlinks = [[1, 9]]", "faults[0].links[0]"),
            ("kind = \"link_cut\"\nat_s = 1\nlinks = []", "faults[0].links"),
            ("kind = \"link_loss\"\nat_s = 1\nlinks = [[1, 2]]\nrate = 1.5", "faults[0].rate"),
            ("kind = \"loss\"\nat_s = 1\nrate = -0.1", "faults[0].rate"),
            ("kind = \"pause\"\nat_s = 1\nnodes = [1]\nmin_ms = 5\nmax_ms = 1", "faults[0].max_ms"),
        ] {
            let s = faults(&format!("[[faults]]\n{text}")).expect(text);
            let e = s.validate(8).expect_err(text);
            assert_eq!(e.field, field, "{text}: {e}");
        }
        let e = parse("loss = 1.0").unwrap().validate(8).unwrap_err();
        assert_eq!(e.field, "network.loss");
        let e = toml::from_str::<Scenario>("nodes = 8\nduration_s = 10\npreset = \"moon\"").unwrap().validate(8);
        assert_eq!(e.unwrap_err().field, "preset");
    }

    #[test]
    fn partition_groups_put_the_unlisted_in_one_more_group() {
        let s = faults("[[faults]]\nkind = \"partition\"\nat_s = 1\ngroups = [[5, 1], [2]]").unwrap();
        assert!(s.validate(8).is_ok());
        assert_eq!(s.faults[0].kind.partition_groups(8), Some(vec![2, 0, 1, 2, 2, 0, 2, 2]));
        let s = faults("[[faults]]\nkind = \"partition\"\nat_s = 1\nsplit = 3").unwrap();
        assert_eq!(s.faults[0].kind.partition_groups(5), Some(vec![0, 0, 0, 1, 1]));
        let s = faults("[[faults]]\nkind = \"link_cut\"\nat_s = 1\nlinks = [[1, 2]]\none_way = true").unwrap();
        assert!(s.validate(8).is_ok());
        assert_eq!(s.faults[0].kind.partition_groups(8), None);
    }
}
