//! Properties over random endpoint sets, and the configuration contract.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{backend, req, Backend, Req, Switch};
use ha_balance::config::OutlierConfig;
use ha_balance::{Balance, BalanceConfig, Endpoint, Picker};
use ha_core::{AttemptContext, EndpointId, HasAttemptContext, NoHealthyEndpoint};
use proptest::prelude::*;
use tower::{Service, ServiceExt};

const NAMES: [&str; 12] = ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10", "e11"];

fn pickers() -> impl Strategy<Value = Picker> {
    prop_oneof![
        Just(Picker::P2cPeakEwma),
        Just(Picker::P2cPending),
        Just(Picker::WeightedP2c),
        Just(Picker::RoundRobin),
        Just(Picker::Random),
        Just(Picker::ring_hash()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the set, tiers, health and history: the pick is an available
    /// endpoint, an untried one when any is available, and the request fails
    /// with `NoHealthyEndpoint` only when none is available.
    #[test]
    fn picks_respect_health_and_history(
        picker in pickers(),
        eps in prop::collection::vec((0u8..3, 1u32..5, any::<bool>()), 1..12),
        tried in prop::collection::vec(any::<bool>(), 12),
        key in any::<u64>(),
        seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let cfg = BalanceConfig {
                picker,
                no_healthy_timeout: Duration::ZERO,
                outlier: OutlierConfig::disabled(),
                ..BalanceConfig::default()
            };
            let mut endpoints = Vec::new();
            let mut down = HashSet::new();
            for (i, &(tier, weight, is_down)) in eps.iter().enumerate() {
                let sw = Switch::default();
                sw.set_down(is_down);
                if is_down {
                    down.insert(NAMES[i]);
                }
                endpoints.push((NAMES[i], Endpoint::new(backend(NAMES[i])).tier(tier).weight(weight).health_gate(sw)));
            }
            let mut b: Balance<&'static str, Backend, Req> = Balance::builder()
                .config(cfg)
                .hash_key(|r: &Req| Some(r.request))
                .seed(seed)
                .build_with(endpoints)
                .unwrap();
            let ctx = AttemptContext::new();
            let mut tried_names = HashSet::new();
            for (i, _) in eps.iter().enumerate() {
                if tried[i] {
                    ctx.record_tried(EndpointId::from_key(&NAMES[i]));
                    tried_names.insert(NAMES[i]);
                }
            }
            let mut r = req(key);
            r.set_attempt_context(ctx.next_attempt());
            let available: Vec<&str> = NAMES[..eps.len()].iter().copied().filter(|n| !down.contains(n)).collect();
            let result = b.ready().await.unwrap().call(r).await;
            match result {
                Ok(who) => {
                    prop_assert!(!down.contains(who), "picked {} which is down", who);
                    if available.iter().any(|n| !tried_names.contains(n)) {
                        prop_assert!(!tried_names.contains(who), "picked {} again", who);
                    }
                    prop_assert!(ctx.was_tried(EndpointId::from_key(&who)));
                }
                Err(e) => {
                    prop_assert!(e.is::<NoHealthyEndpoint>());
                    prop_assert!(available.is_empty(), "failed with {:?} available", available);
                }
            }
            Ok(())
        })?;
    }
}

#[test]
fn the_default_config_round_trips_and_is_valid() {
    let cfg = BalanceConfig::default();
    cfg.validate().unwrap();
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(json.contains("\"kind\":\"p2c_peak_ewma\""), "{json}");
    assert!(json.contains("\"base_ejection_time\":30000"), "{json}");
    let back: BalanceConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cfg);
    // Partial documents take the defaults for the rest.
    let partial: BalanceConfig =
        serde_json::from_str(r#"{"picker":{"kind":"ring_hash"},"tiers":{"overprovisioning":2.0}}"#).unwrap();
    assert_eq!(partial.picker, Picker::ring_hash());
    assert_eq!(partial.tiers.overprovisioning, 2.0);
    assert_eq!(partial.tiers.panic_threshold, 0.5);
    assert_eq!(partial.outlier.consecutive_failures, 5);
    assert_eq!(partial.outlier.max_ejection_percent, 10.0);
    assert!(serde_json::from_str::<BalanceConfig>(r#"{"pickr":{}}"#).is_err(), "unknown fields are refused");
}

#[test]
fn bad_values_are_typed_errors_naming_the_field() {
    let cases: Vec<(BalanceConfig, &str)> = vec![
        (
            BalanceConfig { picker: Picker::RingHash { vnodes: 0, load_factor: 1.25 }, ..Default::default() },
            "picker.vnodes",
        ),
        (
            BalanceConfig { picker: Picker::RingHash { vnodes: 10, load_factor: 0.9 }, ..Default::default() },
            "picker.load_factor",
        ),
        (
            BalanceConfig {
                tiers: ha_balance::config::TierConfig { overprovisioning: 0.5, ..Default::default() },
                ..Default::default()
            },
            "tiers.overprovisioning",
        ),
        (
            BalanceConfig {
                tiers: ha_balance::config::TierConfig { panic_threshold: 1.5, ..Default::default() },
                ..Default::default()
            },
            "tiers.panic_threshold",
        ),
        (
            BalanceConfig {
                load: ha_balance::LoadConfig { pending_bias: 1.5, ..Default::default() },
                ..Default::default()
            },
            "load.pending_bias",
        ),
        (
            BalanceConfig {
                load: ha_balance::LoadConfig { pending_bias: f64::NAN, ..Default::default() },
                ..Default::default()
            },
            "load.pending_bias",
        ),
        (
            BalanceConfig {
                outlier: OutlierConfig { max_ejection_percent: f64::NAN, ..Default::default() },
                ..Default::default()
            },
            "outlier.max_ejection_percent",
        ),
        (
            BalanceConfig {
                outlier: OutlierConfig { base_ejection_time: Duration::from_secs(600), ..Default::default() },
                ..Default::default()
            },
            "outlier.base_ejection_time",
        ),
        (
            BalanceConfig {
                slow_start: ha_balance::config::SlowStartConfig { min_factor: 0.0, ..Default::default() },
                ..Default::default()
            },
            "slow_start.min_factor",
        ),
    ];
    for (cfg, field) in cases {
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        let built = Balance::<&str, Backend, Req>::builder().config(cfg).build();
        assert_eq!(built.unwrap_err().field(), field);
    }
    let no_key = Balance::<&str, Backend, Req>::builder()
        .config(BalanceConfig { picker: Picker::ring_hash(), ..Default::default() })
        .build();
    assert_eq!(no_key.unwrap_err().field(), "picker");
}

#[test]
fn durations_take_units_and_the_old_ms_names() {
    let with_units: BalanceConfig =
        serde_json::from_str(r#"{"outlier": {"base_ejection_time": "45s", "interval": 2500}}"#).unwrap();
    let old_names: BalanceConfig =
        serde_json::from_str(r#"{"outlier": {"base_ejection_time_ms": 45000, "interval_ms": 2500}}"#).unwrap();
    assert_eq!(with_units, old_names);
    assert_eq!(with_units.outlier.base_ejection_time, Duration::from_secs(45));
    assert!(serde_json::from_str::<BalanceConfig>(r#"{"outlier": {"interval": "soon"}}"#).is_err());
}
