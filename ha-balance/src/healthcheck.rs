//! Active health checks: a background task probes every endpoint each
//! interval (each probe delayed by its own random jitter, so probes do not
//! arrive in bursts) through a user-supplied service called with the
//! endpoint's key. `unhealthy_threshold` failed probes in a row take the
//! endpoint out of selection, like an ejection; `healthy_threshold` passed
//! probes in a row bring it back.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Weak;
use std::time::Duration;

use ha_core::rng::FastRng;
use ha_core::EndpointId;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tower::{BoxError, Service, ServiceExt};

use crate::shared::Shared;

#[derive(Default)]
struct Streak {
    passed: u32,
    failed: u32,
}

pub(crate) fn spawn<K, S, P>(core: Weak<Shared<K, S>>, probe: P, seed: u64, mut shutdown: oneshot::Receiver<()>)
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Send + Sync + 'static,
    P: Service<K> + Clone + Send + 'static,
    P::Future: Send,
    P::Error: Into<BoxError>,
{
    tokio::spawn(async move {
        let mut rng = FastRng::new(seed);
        let mut streaks: HashMap<EndpointId, Streak> = HashMap::new();
        loop {
            // Read each round: a reconfiguration applies from the next one.
            let Some(cfg) = core.upgrade().map(|c| c.table().tuning().cfg.health_check) else { return };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(cfg.interval) => {}
            }
            let Some(targets) = core.upgrade().map(|c| c.table().keys()) else { return };
            let mut probes = JoinSet::new();
            for (key, slot) in targets {
                let delay = Duration::from_nanos(rng.below(u64::try_from(cfg.jitter.as_nanos()).unwrap_or(u64::MAX)));
                let probe = probe.clone();
                let timeout = cfg.timeout;
                probes.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let passed = matches!(tokio::time::timeout(timeout, probe.oneshot(key)).await, Ok(Ok(_)));
                    (slot, passed)
                });
            }
            let mut seen = std::collections::HashSet::new();
            while let Some(done) = probes.join_next().await {
                let Ok((slot, passed)) = done else { continue };
                seen.insert(slot.id);
                let streak = streaks.entry(slot.id).or_default();
                if passed {
                    streak.passed = streak.passed.saturating_add(1);
                    streak.failed = 0;
                } else {
                    streak.failed = streak.failed.saturating_add(1);
                    streak.passed = 0;
                }
                let Some(core) = core.upgrade() else { return };
                if streak.failed >= cfg.unhealthy_threshold {
                    core.set_probe_verdict(&slot, true);
                } else if streak.passed >= cfg.healthy_threshold {
                    core.set_probe_verdict(&slot, false);
                }
            }
            streaks.retain(|id, _| seen.contains(id));
        }
    });
}
