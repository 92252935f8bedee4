//! Suspicions: Lifeguard's dynamic timer for each suspected member, and when
//! to send the suspect its check pings.
//!
//! A suspicion starts at its maximum and falls towards its minimum as
//! independent members confirm it, on a log scale, so that a suspicion many
//! agree on ends soon while a lone one (likely this node's own network
//! trouble) leaves the suspect time to refute. What the timer keeps:
//!
//! - the deadline never rises: confirmations and refusals only bring it
//!   forward;
//! - it never falls below its minimum, except through [`Suspicion::refused`]
//!   (a refused stream connection is proof no process is left to refute);
//! - a confirmation counts once per distinct member, the first suspector
//!   is none, and at most `k` count.
//!
//! [`Suspicions`] holds the timers of every member suspected, by name, in
//! the order they were suspected: the order check pings are sent in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ha_core::Instant;

use crate::config::Config;

/// Check pings per suspicion, evenly spread over the timer: with 10% loss
/// each way, all six fail with odds of 1 in 21 000.
pub(crate) const CHECKS: u8 = 6;

/// Lifeguard's dynamic suspicion timer for one member.
#[derive(Debug)]
pub(crate) struct Suspicion {
    start: Instant,
    min: Duration,
    max: Duration,
    k: u32,
    /// The first suspector and every confirmer since.
    confirmers: HashSet<Arc<str>>,
    deadline: Instant,
    /// Check pings sent to the suspect.
    checks: u8,
}

impl Suspicion {
    /// A suspicion raised by `from` at `start`, whose timer runs from `max`
    /// down to `min` as `k` confirmations arrive; with `k = 0`, none is
    /// expected and the timer is `min`.
    pub(crate) fn new(start: Instant, from: Arc<str>, min: Duration, max: Duration, k: u32) -> Self {
        let mut confirmers = HashSet::new();
        confirmers.insert(from);
        let first = if k == 0 { min } else { max };
        Suspicion { start, min, max, k, confirmers, deadline: start + first, checks: 0 }
    }

    /// A suspicion in a cluster of `live` members, with the timer `cfg`
    /// gives: a minimum of `suspicion_mult * max(1, log10 n)` probe
    /// intervals, and with Lifeguard a maximum `suspicion_max_mult` times
    /// that, falling with `suspicion_confirmations` confirmations.
    pub(crate) fn in_cluster(cfg: &Config, live: usize, start: Instant, from: Arc<str>) -> Self {
        let min = cfg.probe_interval.mul_f64(f64::from(cfg.suspicion_mult) * (live.max(1) as f64).log10().max(1.0));
        let (max, k) = if cfg.lifeguard {
            let k = cfg.suspicion_confirmations;
            // Without enough other members to confirm, expect no confirmation.
            let k = if (live as u32).saturating_sub(2) < k { 0 } else { k };
            (min * cfg.suspicion_max_mult, k)
        } else {
            (min, 0)
        };
        Suspicion::new(start, from, min, max, k)
    }

    /// The confirmations this suspicion waits for.
    pub(crate) fn k(&self) -> u32 {
        self.k
    }

    /// When the suspect is declared dead unless it refutes.
    #[cfg(test)]
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// When the next check ping is due, if any is left: at 1/7, 2/7, ...
    /// 6/7 of the timer as it stands.
    pub(crate) fn next_check(&self) -> Option<Instant> {
        (self.checks < CHECKS).then(|| {
            let span = self.deadline.saturating_duration_since(self.start);
            self.start + span.mul_f64(f64::from(self.checks + 1) / f64::from(CHECKS + 1))
        })
    }

    /// Counts an independent confirmation; true when it was new.
    pub(crate) fn confirm(&mut self, from: Arc<str>) -> bool {
        if self.k == 0 || self.confirmers.len() as u32 > self.k || !self.confirmers.insert(from) {
            return false;
        }
        let n = (self.confirmers.len() - 1) as f64;
        let frac = (n + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
        let raw = self.max.as_secs_f64() - frac * (self.max.as_secs_f64() - self.min.as_secs_f64());
        let at = self.start + Duration::from_secs_f64(raw.max(self.min.as_secs_f64()));
        self.deadline = self.deadline.min(at);
        true
    }

    /// The suspect's port refused a connection: no process is left to
    /// refute, so the timer shrinks to `wait` from `now`, the time an
    /// alive member (a firewall rejecting only streams) has to answer the
    /// check pings.
    pub(crate) fn refused(&mut self, now: Instant, wait: Duration) {
        self.deadline = self.deadline.min(now + wait);
    }

    /// Takes the check ping due at `now`, if one is.
    fn take_check(&mut self, now: Instant) -> bool {
        if self.next_check().is_none_or(|at| now < at) {
            return false;
        }
        self.checks += 1;
        true
    }
}

/// The timers of the members suspected, by name, in suspicion order.
///
/// A cleared suspicion leaves the order at the next [`Suspicions::expire`],
/// which walks it anyway, rather than by a search at once; a member
/// suspected again before that walk is listed twice, both places naming
/// its one timer. So every timer's name is in the order, and the order may
/// hold names that have none.
#[derive(Debug, Default)]
pub(crate) struct Suspicions {
    order: Vec<Arc<str>>,
    timers: HashMap<Arc<str>, Suspicion>,
}

impl Suspicions {
    /// Starts the timer of a member not suspected yet.
    pub(crate) fn start(&mut self, name: Arc<str>, suspicion: Suspicion) {
        debug_assert!(!self.timers.contains_key(&name), "{name} is suspected already");
        self.timers.insert(name.clone(), suspicion);
        self.order.push(name);
    }

    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&Suspicion> {
        self.timers.get(name)
    }

    /// Counts `from`'s confirmation of the suspicion of `name`; true when
    /// it was new.
    pub(crate) fn confirm(&mut self, name: &str, from: Arc<str>) -> bool {
        self.timers.get_mut(name).is_some_and(|s| s.confirm(from))
    }

    /// See [`Suspicion::refused`]; false when `name` is not suspected.
    pub(crate) fn refused(&mut self, name: &str, now: Instant, wait: Duration) -> bool {
        self.timers.get_mut(name).map(|s| s.refused(now, wait)).is_some()
    }

    /// Ends the suspicion of `name` (refuted, or dead by other news).
    pub(crate) fn clear(&mut self, name: &str) {
        self.timers.remove(name);
    }

    /// The earliest deadline, and with `checks` the earliest check ping.
    pub(crate) fn next_wake(&self, checks: bool) -> Option<Instant> {
        let wake = |s: &Suspicion| {
            let check = if checks { s.next_check() } else { None };
            s.deadline.min(check.unwrap_or(s.deadline))
        };
        self.timers.values().map(wake).min()
    }

    /// Takes the check pings due at `now` and returns whom they go to, in
    /// suspicion order.
    pub(crate) fn due_checks(&mut self, now: Instant) -> Vec<Arc<str>> {
        let mut due = Vec::new();
        for name in &self.order {
            if self.timers.get_mut(name).is_some_and(|s| s.take_check(now)) {
                due.push(name.clone());
            }
        }
        due
    }

    /// Ends the suspicions whose deadline has come and returns their
    /// members, to be declared dead; forgets the names of cleared ones.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Arc<str>> {
        let mut dead = Vec::new();
        let mut i = 0;
        while i < self.order.len() {
            let name = &self.order[i];
            match self.timers.get(name) {
                Some(s) if s.deadline > now => i += 1,
                Some(_) => {
                    let name = self.order.swap_remove(i);
                    self.timers.remove(&name);
                    dead.push(name);
                }
                None => {
                    self.order.swap_remove(i);
                }
            }
        }
        dead
    }

    /// Panics unless every invariant holds.
    #[cfg(test)]
    fn check(&self) {
        assert!(self.timers.keys().all(|n| self.order.contains(n)), "every timer is in the order");
        for s in self.timers.values() {
            let first = if s.k == 0 { s.min } else { s.max };
            assert!(s.deadline <= s.start + first, "the deadline never rises");
            assert!(s.confirmers.len() as u32 <= s.k + 1, "at most k confirmations");
            assert!(s.checks <= CHECKS);
        }
    }
}

#[cfg(test)]
mod tests {
    use ha_core::rng::FastRng;

    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn the_timer_falls_with_independent_confirmations() {
        let t = Instant::now();
        let min = secs(7.2);
        let mut s = Suspicion::new(t, "a".into(), min, min * 6, 2);
        assert_eq!(s.deadline, t + min * 6);
        assert!(!s.confirm("a".into()), "the first suspector is no confirmation");
        assert!(s.confirm("b".into()));
        let one = s.deadline - t;
        assert!(one < min * 6 && one > min, "{one:?}");
        assert!(!s.confirm("b".into()), "only independent confirmations count");
        assert!(s.confirm("c".into()));
        assert_eq!(s.deadline - t, min);
        assert!(!s.confirm("d".into()), "k reached");
        let s0 = Suspicion::new(t, "a".into(), min, min * 6, 0);
        assert_eq!(s0.deadline, t + min);
    }

    #[test]
    fn confirmations_never_raise_the_deadline_nor_pass_the_minimum_and_count_at_most_k() {
        let t = Instant::now();
        let mut rng = FastRng::new(4);
        for k in 0..6 {
            let (min, max) = (secs(2.0), secs(20.0));
            let mut s = Suspicion::new(t, "n0".into(), min, max, k);
            let mut new = HashSet::new();
            for _ in 0..100 {
                let before = s.deadline;
                let from: Arc<str> = format!("n{}", rng.below(12)).into();
                if s.confirm(from.clone()) {
                    assert!(&*from != "n0" && new.insert(from), "a member confirms once; the suspector never");
                }
                assert!(s.deadline <= before, "never rises");
                assert!(s.deadline >= t + min, "never below the minimum");
            }
            assert!(new.len() as u32 <= k, "at most k confirmations: {} of {k}", new.len());
            if k > 0 && k < 11 {
                assert_eq!(new.len() as u32, k, "k distinct confirmers were offered");
                assert_eq!(s.deadline, t + min, "k confirmations: the minimum");
            }
        }
    }

    #[test]
    fn a_refusal_may_go_below_the_minimum_but_never_raises_the_deadline() {
        let t = Instant::now();
        let mut s = Suspicion::new(t, "a".into(), secs(4.0), secs(40.0), 2);
        s.refused(t + secs(1.0), secs(1.0));
        assert_eq!(s.deadline, t + secs(2.0), "below the minimum of 4 s");
        s.refused(t + secs(1.5), secs(1.0));
        assert_eq!(s.deadline, t + secs(2.0), "a later refusal does not push it back");
        assert!(s.confirm("b".into()));
        assert_eq!(s.deadline, t + secs(2.0), "nor does a confirmation");
    }

    #[test]
    fn check_pings_are_spread_evenly_before_the_deadline_and_number_six() {
        let t = Instant::now();
        let mut s = Suspicion::new(t, "a".into(), secs(7.0), secs(7.0), 0);
        let mut at = Vec::new();
        while let Some(next) = s.next_check() {
            assert!(!s.take_check(next - secs(0.001)), "not before it is due");
            assert!(s.take_check(next));
            at.push(((next - t).as_secs_f64() * 1000.0).round() as u64);
        }
        assert_eq!(at, [1000, 2000, 3000, 4000, 5000, 6000]);
        assert!(!s.take_check(t + secs(100.0)), "six at most");
    }

    #[test]
    fn the_set_expires_in_order_and_forgets_cleared_names() {
        let t = Instant::now();
        let mut set = Suspicions::default();
        let timer = |s: f64| Suspicion::new(t, "x".into(), secs(s), secs(s), 0);
        set.start("a".into(), timer(3.0));
        set.start("b".into(), timer(1.0));
        set.start("c".into(), timer(2.0));
        set.check();
        assert_eq!(set.next_wake(false), Some(t + secs(1.0)));
        assert_eq!(set.next_wake(true), Some(t + secs(1.0 / 7.0)), "the first check of b");
        set.clear("c");
        assert!(set.get("c").is_none());
        assert!(set.expire(t + secs(0.5)).is_empty());
        assert_eq!(set.order.len(), 2, "the cleared name left the order");
        assert_eq!(set.expire(t + secs(1.0)), ["b".into()] as [Arc<str>; 1]);
        assert!(set.get("b").is_none());
        assert_eq!(set.expire(t + secs(5.0)), ["a".into()] as [Arc<str>; 1]);
        assert_eq!(set.next_wake(true), None);
        assert!(set.order.is_empty());
        set.check();
    }

    #[test]
    fn a_member_suspected_again_before_the_walk_keeps_one_timer() {
        let t = Instant::now();
        let mut set = Suspicions::default();
        set.start("a".into(), Suspicion::new(t, "x".into(), secs(7.0), secs(7.0), 0));
        set.clear("a");
        set.start("a".into(), Suspicion::new(t, "y".into(), secs(14.0), secs(14.0), 0));
        set.check();
        assert_eq!(set.get("a").map(Suspicion::deadline), Some(t + secs(14.0)), "the new timer");
        assert_eq!(set.due_checks(t + secs(2.0)), ["a".into()] as [Arc<str>; 1], "one check due, sent once");
        assert!(set.expire(t + secs(7.0)).is_empty());
        assert_eq!(set.expire(t + secs(14.0)), ["a".into()] as [Arc<str>; 1], "declared dead once");
        assert!(set.order.is_empty());
    }

    #[test]
    fn the_timer_of_a_cluster_follows_the_config() {
        let t = Instant::now();
        let cfg = Config::lan();
        // n = 100: a minimum of 2 * log10(100) = 4 probe intervals, a maximum ten times that.
        let s = Suspicion::in_cluster(&cfg, 100, t, "a".into());
        assert_eq!((s.min, s.max, s.k()), (secs(4.0), secs(40.0), 2));
        assert_eq!(s.deadline(), t + secs(40.0));
        let s = Suspicion::in_cluster(&cfg, 3, t, "a".into());
        assert_eq!((s.min, s.k()), (secs(2.0), 0), "too few members to confirm");
        assert_eq!(s.deadline(), t + secs(2.0));
        let s = Suspicion::in_cluster(&Config { lifeguard: false, ..Config::lan() }, 100, t, "a".into());
        assert_eq!((s.min, s.max, s.k()), (secs(4.0), secs(4.0), 0));
    }
}
