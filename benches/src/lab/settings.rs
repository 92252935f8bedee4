//! Contender settings from the scenario file: a `[settings.<contender>]`
//! table replaces a contender's default configuration for that scenario.
//!
//! - `ha_stack`: an `ha::Config` (the facade's whole configuration file);
//! - `ha_p2c_ewma`, `ha_p2c_pending`, `ha_round_robin`, `ha_ring_hash`: the
//!   `[balance]` section of one (the contender's picker still wins);
//! - `ha_retry`: its `[retry]` section; `ha_hedge`: its `[hedge]` section;
//! - `tower_stack`: [`TowerStackConfig`].
//!
//! ha's sections are checked by `ha::Config` itself, so a scenario file
//! gets the same errors (naming the field) as a production config file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The settings of `tower_stack`: what a tower user picks when assembling
/// retry, budget, per-try timeout, buffer and p2c PeakEWMA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TowerStackConfig {
    /// Per-try timeout, ms (`tower::timeout` under the retry). Default 2000,
    /// ha's default per-try timeout, so the two stacks give up alike.
    pub attempt_timeout_ms: u64,
    /// Attempts per request, the first included. Default 3, as ha's.
    pub max_attempts: u32,
    /// `TpsBudget` ttl, s (1 to 60). Default 10.
    pub budget_ttl_s: u64,
    /// `TpsBudget` retries per second always allowed. Default 10.
    pub budget_min_per_s: u32,
    /// `TpsBudget` retries per request. Default 0.2.
    pub budget_ratio: f32,
    /// PeakEWMA default RTT, ms. Default 30 (tower's demo).
    pub rtt_ms: u64,
    /// PeakEWMA decay, s. Default 10 (tower's demo).
    pub decay_s: u64,
    /// `Buffer` capacity. Default 1024.
    pub buffer: usize,
}

impl Default for TowerStackConfig {
    fn default() -> Self {
        TowerStackConfig {
            attempt_timeout_ms: 2000,
            max_attempts: 3,
            budget_ttl_s: 10,
            budget_min_per_s: 10,
            budget_ratio: 0.2,
            rtt_ms: 30,
            decay_s: 10,
            buffer: 1024,
        }
    }
}

impl TowerStackConfig {
    // tower panics on these (TpsBudget asserts, Buffer of 0), so they are
    // file errors instead.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, p: &str| Err((f.to_string(), p.to_string()));
        if self.attempt_timeout_ms == 0 {
            return bad("attempt_timeout_ms", "must be > 0");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if !(1..=60).contains(&self.budget_ttl_s) {
            return bad("budget_ttl_s", "must be in 1..=60 (TpsBudget)");
        }
        if !(self.budget_ratio.is_finite() && (0.0..=1000.0).contains(&self.budget_ratio)) {
            return bad("budget_ratio", "must be in [0, 1000] (TpsBudget)");
        }
        if self.budget_min_per_s >= i32::MAX as u32 {
            return bad("budget_min_per_s", "too large (TpsBudget)");
        }
        if self.rtt_ms == 0 || self.decay_s == 0 {
            return bad(if self.rtt_ms == 0 { "rtt_ms" } else { "decay_s" }, "must be > 0");
        }
        if self.buffer == 0 {
            return bad("buffer", "must be at least 1");
        }
        Ok(())
    }
}

/// Which part of an `ha::Config` a contender's table is.
fn ha_section(contender: &str) -> Option<Option<&'static str>> {
    match contender {
        "ha_stack" => Some(None),
        "ha_p2c_ewma" | "ha_p2c_pending" | "ha_round_robin" | "ha_ring_hash" => Some(Some("balance")),
        "ha_retry" => Some(Some("retry")),
        "ha_hedge" => Some(Some("hedge")),
        _ => None,
    }
}

/// The validated settings of one scenario's contenders.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    ha: BTreeMap<String, ha::Config>,
    tower_stack: Option<TowerStackConfig>,
}

impl Settings {
    /// Checks each `[settings.<contender>]` table; the error is the dotted
    /// field (`settings.ha_stack.retry.max_attempts`) and the problem.
    pub fn parse(raw: &BTreeMap<String, toml::Table>) -> Result<Settings, (String, String)> {
        let mut s = Settings::default();
        for (name, table) in raw {
            let at = format!("settings.{name}");
            if name == "tower_stack" {
                let c: TowerStackConfig = toml::Value::Table(table.clone())
                    .try_into()
                    .map_err(|e: toml::de::Error| (at.clone(), e.message().to_string()))?;
                c.validate().map_err(|(f, p)| (format!("{at}.{f}"), p))?;
                s.tower_stack = Some(c);
                continue;
            }
            let Some(section) = ha_section(name) else {
                let takes = "ha_stack, tower_stack, ha_p2c_ewma, ha_p2c_pending, ha_round_robin, ha_ring_hash, ha_retry, ha_hedge";
                return Err((at, format!("no such contender with settings; these take them: {takes}")));
            };
            let mut doc = toml::Table::new();
            match section {
                None => doc = table.clone(),
                Some(sec) => {
                    doc.insert(sec.to_string(), toml::Value::Table(table.clone()));
                }
            }
            let text = toml::to_string(&doc).map_err(|e| (at.clone(), e.to_string()))?;
            let config = ha::Config::from_toml_str(&text).map_err(|e| {
                // ha names the field from the top of its config; the
                // scenario's table starts at the section.
                let field = e.field();
                let field =
                    section.and_then(|sec| field.strip_prefix(sec).map(|f| f.trim_start_matches('.'))).unwrap_or(field);
                let full = if field.is_empty() { at.clone() } else { format!("{at}.{field}") };
                (full, e.reason().to_string())
            })?;
            s.ha.insert(name.clone(), config);
        }
        Ok(s)
    }

    /// The `ha::Config` a file gave `contender`, if any.
    pub fn ha(&self, contender: &str) -> Option<&ha::Config> {
        self.ha.get(contender)
    }

    /// `tower_stack`'s settings (the defaults unless the file gave some).
    pub fn tower_stack(&self) -> TowerStackConfig {
        self.tower_stack.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, (String, String)> {
        let raw: BTreeMap<String, toml::Table> = toml::from_str(text).unwrap();
        Settings::parse(&raw)
    }

    #[test]
    fn ha_sections_are_checked_by_ha_and_name_the_field() {
        let s = parse("[ha_stack.retry]\nmax_attempts = 4\n[ha_p2c_ewma.outlier]\nconsecutive_failures = 3\n").unwrap();
        assert_eq!(s.ha("ha_stack").unwrap().retry.max_attempts, 4);
        assert_eq!(s.ha("ha_p2c_ewma").unwrap().balance.outlier.consecutive_failures, 3);
        let (field, _) = parse("[ha_stack.retry]\nmax_attempts = 0\n").unwrap_err();
        assert_eq!(field, "settings.ha_stack.retry.max_attempts");
        let (field, problem) = parse("[ha_retry]\nmax_attemps = 3\n").unwrap_err();
        assert_eq!(field, "settings.ha_retry.max_attemps", "{problem}");
        let (field, _) = parse("[ha_hedge]\nmax_hedges = 100\n").unwrap_err();
        assert_eq!(field, "settings.ha_hedge.max_hedges");
    }

    #[test]
    fn tower_stack_rejects_unknown_keys_and_values_tower_would_panic_on() {
        assert_eq!(parse("[tower_stack]\nmax_attempts = 2\n").unwrap().tower_stack().max_attempts, 2);
        let (field, problem) = parse("[tower_stack]\nretries = 2\n").unwrap_err();
        assert_eq!(field, "settings.tower_stack");
        assert!(problem.contains("retries"), "{problem}");
        let (field, _) = parse("[tower_stack]\nbudget_ttl_s = 90\n").unwrap_err();
        assert_eq!(field, "settings.tower_stack.budget_ttl_s");
    }

    #[test]
    fn contenders_without_settings_are_named() {
        let (field, _) = parse("[round_robin]\nx = 1\n").unwrap_err();
        assert_eq!(field, "settings.round_robin");
    }
}
