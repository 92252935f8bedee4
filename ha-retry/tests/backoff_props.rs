//! Properties of the backoff and the retry decision, for any config.

use std::time::Duration;

use ha_core::rng::FastRng;
use ha_core::{Instant, Outcome};
use ha_retry::backoff::Backoff;
use ha_retry::config::{BackoffConfig, Jitter, RetryConfig};
use ha_retry::policy::{RetryState, Stop};
use proptest::prelude::*;

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::Decorrelated)]
}

fn backoff_config() -> impl Strategy<Value = BackoffConfig> {
    (0u64..5_000, 0u64..60_000, 1.0f64..10.0, jitter(), any::<bool>()).prop_map(
        |(base, extra, multiplier, jitter, immediate_first)| BackoffConfig {
            immediate_first,
            base: Duration::from_millis(base),
            max: Duration::from_millis(base + extra),
            multiplier,
            jitter,
        },
    )
}

proptest! {
    #[test]
    fn delays_never_exceed_the_cap(cfg in backoff_config(), seed in any::<u64>(), n in 1usize..64) {
        cfg.validate().unwrap();
        let mut b = Backoff::new(&cfg, FastRng::new(seed));
        for _ in 0..n {
            let d = b.next_delay();
            prop_assert!(d <= cfg.max, "{d:?} > cap {:?}", cfg.max);
        }
    }

    #[test]
    fn retries_never_run_past_the_deadline(
        backoff in backoff_config(),
        seed in any::<u64>(),
        deadline_ms in 1u64..120_000,
        max_attempts in 1u32..50,
        attempt_ms in proptest::collection::vec(0u64..5_000, 50),
        retry_after_ms in proptest::option::of(0u64..30_000),
    ) {
        let cfg = RetryConfig {
            max_attempts,
            deadline: Some(Duration::from_millis(deadline_ms)),
            backoff,
            ..RetryConfig::default()
        };
        let start = Instant::now();
        let deadline = start + Duration::from_millis(deadline_ms);
        let mut state = RetryState::new(&cfg, start, None, FastRng::new(seed));
        let mut now = start;
        let mut backoff_sum = Duration::ZERO;
        let outcome = Outcome::RetryableFailure { retry_after: retry_after_ms.map(Duration::from_millis) };
        for took in attempt_ms {
            now += Duration::from_millis(took);
            match state.on_outcome(now, outcome) {
                Ok(delay) => {
                    prop_assert!(delay <= cfg.backoff.max.max(cfg.max_retry_after));
                    backoff_sum += delay;
                    now += delay;
                    // The next attempt starts before the deadline, so no backoff crossed it.
                    prop_assert!(now < deadline);
                    prop_assert!(start + backoff_sum < deadline);
                }
                Err(stop) => {
                    prop_assert!(matches!(stop, Stop::Deadline | Stop::MaxAttempts));
                    break;
                }
            }
        }
        prop_assert!(state.attempt() <= max_attempts);
    }
}
