//! Every part of the configuration can be named and built by a user, not
//! only reached through `BalanceConfig::default()`.

use std::time::Duration;

use ha_balance::{
    BalanceConfig, FailurePercentageConfig, HealthCheckConfig, LoadConfig, OutlierConfig, Picker, SlowStartConfig,
    SuccessRateConfig, TierConfig,
};

#[test]
fn a_config_built_from_named_parts_validates_and_round_trips() {
    let config = BalanceConfig {
        picker: Picker::ring_hash(),
        tiers: TierConfig { overprovisioning: 1.2, ..TierConfig::default() },
        slow_start: SlowStartConfig { window: Duration::from_secs(30), min_factor: 0.2 },
        load: LoadConfig { default_rtt: Duration::from_millis(50), ..LoadConfig::default() },
        outlier: OutlierConfig {
            consecutive_failures: 7,
            success_rate: Some(SuccessRateConfig { stdev_factor: 2.0, ..SuccessRateConfig::default() }),
            failure_percentage: Some(FailurePercentageConfig { threshold: 0.6, ..FailurePercentageConfig::default() }),
            ..OutlierConfig::default()
        },
        health_check: HealthCheckConfig { unhealthy_threshold: 3, ..HealthCheckConfig::default() },
        ..BalanceConfig::default()
    };
    config.validate().unwrap();
    let json = serde_json::to_string(&config).unwrap();
    let back: BalanceConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);

    let disabled = BalanceConfig { outlier: OutlierConfig::disabled(), ..BalanceConfig::default() };
    disabled.validate().unwrap();
    assert_ne!(disabled.outlier.consecutive_failures, config.outlier.consecutive_failures);
}
