//! Protocol configuration: the LAN, WAN and local presets, and validation.
//!
//! Every timing of the protocol lives here, as serde data, so a deployment can
//! keep its tuning in a file. [`Config::lan`] is the default and the
//! recommended production setting inside one data centre.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The largest UDP payload the protocol ever sends (safe under a 1500-byte MTU).
pub const MAX_PACKET: usize = 1400;

/// Upper bound of `probe_interval` and `probe_timeout`.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Upper bound of `gossip_interval`.
pub const MAX_GOSSIP_INTERVAL: Duration = Duration::from_secs(10);
/// Upper bound of `push_pull_interval` and `reconnect_interval`.
pub const MAX_SLOW_INTERVAL: Duration = Duration::from_secs(3600);
/// Upper bound of `dead_retention`.
pub const MAX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Tuning of the SWIM protocol and its Lifeguard extensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The cluster label: packets from clusters with another label fail to
    /// decode (and are counted as dropped). At most 255 bytes.
    pub label: String,
    /// How often one member is probed (scaled by the local health multiplier).
    #[serde(with = "ha_core::config::duration")]
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking `indirect_checks`
    /// members to probe (scaled by the local health multiplier).
    #[serde(with = "ha_core::config::duration")]
    pub probe_timeout: Duration,
    /// How many members are asked to probe indirectly (`k`).
    pub indirect_checks: usize,
    /// Updates are retransmitted `retransmit_mult * ceil(log10(n + 1))` times.
    pub retransmit_mult: u32,
    /// How often queued updates are gossiped on their own (not piggy-backed).
    #[serde(with = "ha_core::config::duration")]
    pub gossip_interval: Duration,
    /// How many random members receive each gossip round.
    pub gossip_nodes: usize,
    /// The minimum suspicion timeout is
    /// `suspicion_mult * max(1, log10(n)) * probe_interval`.
    pub suspicion_mult: u32,
    /// The suspicion timeout starts at `suspicion_max_mult` times its
    /// minimum and falls toward the minimum with each independent confirmation.
    pub suspicion_max_mult: u32,
    /// Lifeguard's `K`: independent confirmations that bring the suspicion
    /// timeout down to its minimum.
    pub suspicion_confirmations: u32,
    /// Lifeguard's local health multiplier never exceeds this (probe interval
    /// and timeout are scaled by up to this factor).
    pub awareness_max: u32,
    /// Full-state push-pull with a random member this often, for clusters up
    /// to 16 members; beyond that the interval grows with `n / 16`, so that
    /// the anti-entropy traffic per member (whose state grows with `n`) stays flat.
    #[serde(with = "ha_core::config::duration")]
    pub push_pull_interval: Duration,
    /// A dead member (or a seed while this node knows nobody) is probed
    /// again this often, so a healed partition merges by itself.
    #[serde(with = "ha_core::config::duration")]
    pub reconnect_interval: Duration,
    /// How long dead and departed members are remembered (and re-probed).
    #[serde(with = "ha_core::config::duration")]
    pub dead_retention: Duration,
    /// The largest encoded member metadata accepted, in bytes.
    pub max_metadata: usize,
    /// Lifeguard (health multiplier, dynamic suspicion, buddy system, nacks).
    /// Off gives plain SWIM, for comparison.
    pub lifeguard: bool,
    /// An update about a live member (or this node) whose incarnation is
    /// more than this above the one known is dropped, and so is one about
    /// any other member above `u64::MAX` minus this: a forged incarnation
    /// near `u64::MAX` would otherwise leave the member nothing to refute
    /// with. A node that restarts while still held live must pass an
    /// incarnation within this of its last one; one held dead may come back
    /// with any (a clock-based incarnation, say). Default 2^20.
    pub max_incarnation_jump: u64,
    /// The most members (dead and departed ones included) this node holds;
    /// beyond it the longest-dead is forgotten, or, with none dead, the
    /// newcomer is dropped and counted.
    pub max_members: usize,
    /// State syncs per second this node opens toward probers it does not
    /// know (a token bucket with a burst of twice this).
    pub unknown_syncs_per_sec: u32,
    /// The largest push-pull state accepted or sent over TCP, in bytes.
    pub max_state_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config::lan()
    }
}

impl Config {
    /// Inside one data centre: 1 s probe period, 500 ms probe timeout.
    ///
    /// The suspicion timeout runs from `2 * log10(n)` probe periods (3.6 s
    /// at 64 members), once `K = 2` other members confirmed the suspicion,
    /// up to ten times that for a suspicion nobody confirms: a slow or
    /// lossy observer alone cannot get a healthy member declared dead, and a
    /// crashed one is declared dead in under 10 s at 64 members.
    pub fn lan() -> Self {
        Config {
            label: String::new(),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            suspicion_mult: 2,
            suspicion_max_mult: 10,
            suspicion_confirmations: 2,
            awareness_max: 8,
            push_pull_interval: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(10),
            dead_retention: Duration::from_secs(3600),
            max_metadata: 8 * 1024,
            lifeguard: true,
            max_incarnation_jump: 1 << 20,
            max_members: 1024,
            unknown_syncs_per_sec: 4,
            max_state_bytes: 2 * 1024 * 1024,
        }
    }

    /// Across data centres: 5 s probe period, 3 s probe timeout.
    pub fn wan() -> Self {
        Config {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            suspicion_mult: 6,
            suspicion_max_mult: 6,
            push_pull_interval: Duration::from_secs(60),
            reconnect_interval: Duration::from_secs(30),
            ..Config::lan()
        }
    }

    /// One machine (tests, development): 1 s period, 200 ms timeout, quick gossip.
    pub fn local() -> Self {
        Config {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(200),
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(100),
            suspicion_mult: 3,
            suspicion_max_mult: 4,
            push_pull_interval: Duration::from_secs(15),
            reconnect_interval: Duration::from_secs(3),
            ..Config::lan()
        }
    }

    /// Checks every field; the core and the driver call it when built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &'static str| Err(ConfigError::new(field, reason));
        let durations = [
            ("probe_interval", self.probe_interval, MAX_PROBE_INTERVAL),
            ("probe_timeout", self.probe_timeout, MAX_PROBE_INTERVAL),
            ("gossip_interval", self.gossip_interval, MAX_GOSSIP_INTERVAL),
            ("push_pull_interval", self.push_pull_interval, MAX_SLOW_INTERVAL),
            ("reconnect_interval", self.reconnect_interval, MAX_SLOW_INTERVAL),
            ("dead_retention", self.dead_retention, MAX_RETENTION),
        ];
        for (field, value, max) in durations {
            if value > max {
                return Err(ConfigError::new(field, "is above its upper bound (see `Config::validate`)"));
            }
        }
        if self.label.len() > 255 {
            return bad("label", "at most 255 bytes");
        }
        if self.probe_interval.is_zero() {
            return bad("probe_interval", "must be positive");
        }
        if self.probe_timeout.is_zero() || self.probe_timeout >= self.probe_interval {
            return bad("probe_timeout", "must be positive and shorter than probe_interval");
        }
        if self.indirect_checks > 16 {
            return bad("indirect_checks", "at most 16");
        }
        if self.retransmit_mult == 0 || self.retransmit_mult > 64 {
            return bad("retransmit_mult", "between 1 and 64");
        }
        if self.gossip_interval.is_zero() {
            return bad("gossip_interval", "must be positive");
        }
        if self.gossip_nodes == 0 || self.gossip_nodes > 64 {
            return bad("gossip_nodes", "between 1 and 64");
        }
        if self.suspicion_mult == 0 || self.suspicion_mult > 64 {
            return bad("suspicion_mult", "between 1 and 64");
        }
        if self.suspicion_max_mult == 0 || self.suspicion_max_mult > 64 {
            return bad("suspicion_max_mult", "between 1 and 64");
        }
        if self.suspicion_confirmations > 32 {
            return bad("suspicion_confirmations", "at most 32");
        }
        if self.awareness_max == 0 || self.awareness_max > 64 {
            return bad("awareness_max", "between 1 and 64");
        }
        if self.push_pull_interval.is_zero() {
            return bad("push_pull_interval", "must be positive");
        }
        if self.reconnect_interval.is_zero() {
            return bad("reconnect_interval", "must be positive");
        }
        if self.dead_retention < self.reconnect_interval {
            return bad("dead_retention", "must be at least reconnect_interval");
        }
        if self.max_metadata > 64 * 1024 {
            return bad("max_metadata", "at most 64 KiB");
        }
        if self.max_incarnation_jump == 0 || self.max_incarnation_jump > 1 << 40 {
            return bad("max_incarnation_jump", "between 1 and 2^40");
        }
        if self.max_members < 2 || self.max_members > 1 << 20 {
            return bad("max_members", "between 2 and 2^20");
        }
        if self.unknown_syncs_per_sec == 0 || self.unknown_syncs_per_sec > 1000 {
            return bad("unknown_syncs_per_sec", "between 1 and 1000");
        }
        if self.max_state_bytes < 64 * 1024 || self.max_state_bytes > crate::wire::MAX_STREAM {
            return bad("max_state_bytes", "between 64 KiB and 16 MiB");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_lan_is_default() {
        for c in [Config::lan(), Config::wan(), Config::local()] {
            c.validate().unwrap();
        }
        assert_eq!(Config::default(), Config::lan());
        assert_eq!(Config::lan().probe_interval, Duration::from_secs(1));
        assert_eq!(Config::lan().probe_timeout, Duration::from_millis(500));
    }

    #[test]
    fn invalid_fields_are_rejected_with_their_name() {
        let c = Config { probe_timeout: Duration::from_secs(2), ..Config::lan() };
        assert_eq!(c.validate().unwrap_err().field(), "probe_timeout");
        let c = Config { label: "x".repeat(300), ..Config::lan() };
        assert_eq!(c.validate().unwrap_err().field(), "label");
        let c = Config { awareness_max: 0, ..Config::lan() };
        assert_eq!(c.validate().unwrap_err().field(), "awareness_max");
    }

    #[test]
    fn every_duration_has_an_upper_bound() {
        let huge = Duration::from_millis(u64::MAX);
        type Set = fn(&mut Config, Duration);
        let cases: [(&str, Set); 6] = [
            ("probe_interval", |c, d| c.probe_interval = d),
            ("probe_timeout", |c, d| c.probe_timeout = d),
            ("gossip_interval", |c, d| c.gossip_interval = d),
            ("push_pull_interval", |c, d| c.push_pull_interval = d),
            ("reconnect_interval", |c, d| c.reconnect_interval = d),
            ("dead_retention", |c, d| c.dead_retention = d),
        ];
        for (field, set) in cases {
            let mut c = Config::lan();
            set(&mut c, huge);
            assert_eq!(c.validate().unwrap_err().field(), field);
        }
        // From a file too: a huge `probe_interval` no longer switches detection off.
        let c: Config = toml::from_str(&format!("probe_interval = {}", i64::MAX)).unwrap();
        assert_eq!(c.validate().unwrap_err().field(), "probe_interval");
        let c = Config { max_incarnation_jump: 0, ..Config::lan() };
        assert_eq!(c.validate().unwrap_err().field(), "max_incarnation_jump");
        let c = Config { max_members: 1, ..Config::lan() };
        assert_eq!(c.validate().unwrap_err().field(), "max_members");
    }

    #[test]
    fn round_trips_through_toml_with_defaults() {
        let c: Config = toml::from_str("probe_interval = 2000\nlabel = \"prod\"").unwrap();
        assert_eq!(c.probe_interval, Duration::from_secs(2));
        assert_eq!(c.label, "prod");
        assert_eq!(c.probe_timeout, Config::lan().probe_timeout);
        let back: Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
    }
}
