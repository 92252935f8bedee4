//! The settings issue 13 added: documented defaults, serde names, and
//! validation errors that name the field.

use std::time::Duration;

use ha_balance::BalanceConfig;

#[test]
fn the_new_settings_have_documented_defaults_and_named_errors() {
    let d = BalanceConfig::default();
    assert_eq!(d.outlier.max_peer_failure_rate, 0.1);
    assert_eq!(d.outlier.peer_failure_factor, 2.0);
    assert_eq!(d.outlier.probe_interval, Duration::from_secs(1));
    assert_eq!(d.outlier.max_probe_interval, Duration::from_secs(1));
    assert_eq!(d.outlier.failure_percentage, Some(ha_balance::FailurePercentageConfig::fleet_relative()));
    assert_eq!(d.load.failure_penalty, 2.0);
    let parsed: BalanceConfig = serde_json::from_str(
        r#"{"outlier": {"max_peer_failure_rate": 0.3, "probe_interval_ms": 500, "max_probe_interval_ms": 4000},
            "load": {"failure_penalty": 3.0}}"#,
    )
    .unwrap();
    assert_eq!(parsed.outlier.probe_interval, Duration::from_millis(500));
    assert!(serde_json::from_str::<BalanceConfig>(r#"{"outlier": {"probe_intervals": 5}}"#).is_err(), "unknown field");
    let bad = |f: &dyn Fn(&mut BalanceConfig)| {
        let mut c = BalanceConfig::default();
        f(&mut c);
        c.validate().unwrap_err().field().to_owned()
    };
    assert_eq!(bad(&|c| c.outlier.max_peer_failure_rate = 1.5), "outlier.max_peer_failure_rate");
    assert_eq!(bad(&|c| c.outlier.peer_failure_factor = -1.0), "outlier.peer_failure_factor");
    assert_eq!(bad(&|c| c.outlier.probe_interval = Duration::from_secs(3)), "outlier.probe_interval");
    assert_eq!(bad(&|c| c.load.failure_penalty = 0.5), "load.failure_penalty");
}
