//! The probe cycle: when this node probes next, the one probe in flight and
//! its phases, and the sequence numbers every ping draws from.
//!
//! A probe pings its target directly; at `indirect_at` with no ack it asks
//! helpers to ping it too, pings it once more, and asks the driver for a
//! stream check; at `deadline` it has failed. With Lifeguard a failed probe
//! of a live member first goes on its last call (the target is told, and
//! gets a probe timeout to answer) and the next round waits for it. What
//! the cycle keeps:
//!
//! - at most one probe is in flight, and it ends exactly once: by an ack, a
//!   refused stream check, its target's death, or its deadline;
//! - an ack, nack or refusal carrying another sequence number than the
//!   probe's is stale (an earlier probe, or a forgery) and changes nothing;
//! - sequence numbers are drawn from one counter for all pings (probes,
//!   relays, check pings), so an ack matches one purpose only;
//! - stream checks the driver does not collect are bounded, oldest dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use ha_core::Instant;

use crate::swim::StreamCheck;

/// Stream checks that may wait for a driver that does not poll them.
const MAX_QUEUED_CHECKS: usize = 16;

/// The probe in flight.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) target: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) seq: u32,
    indirect_at: Instant,
    deadline: Instant,
    indirect_sent: bool,
    expected_nacks: u32,
    nacks: u32,
    /// Lifeguard: the probe failed and the target was told so directly
    /// (buddy system); it is suspected at `deadline` unless it answers.
    last_call: bool,
}

impl Probe {
    /// True once the probe failed and waits on its last call.
    pub(crate) fn on_last_call(&self) -> bool {
        self.last_call
    }

    /// How far the failed probe lowers this node's health (Lifeguard):
    /// each nack that did not come back is a sign this node, not the
    /// target, lost the messages; with no helper to nack, one point.
    pub(crate) fn health_penalty(&self) -> i32 {
        if self.expected_nacks > 0 {
            (self.expected_nacks.saturating_sub(self.nacks)) as i32
        } else {
            1
        }
    }
}

/// The probe cycle of one node.
#[derive(Debug)]
pub(crate) struct ProbeCycle {
    seq: u32,
    probe: Option<Probe>,
    /// A member someone else just began to suspect, to probe next.
    urgent: Option<Arc<str>>,
    /// When the next round starts.
    next: Instant,
    stream_checks: VecDeque<StreamCheck>,
}

impl ProbeCycle {
    /// A cycle whose first round starts at `first`.
    pub(crate) fn new(first: Instant) -> Self {
        ProbeCycle { seq: 0, probe: None, urgent: None, next: first, stream_checks: VecDeque::new() }
    }

    /// The next sequence number, for a ping of any kind.
    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// When the next round starts.
    #[cfg(test)]
    pub(crate) fn next_round(&self) -> Instant {
        self.next
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.probe.is_some()
    }

    fn on_last_call(&self) -> bool {
        self.probe.as_ref().is_some_and(Probe::on_last_call)
    }

    /// Whether a round starts at `now`: a probe on its last call finishes
    /// before the next one starts.
    pub(crate) fn round_due(&self, now: Instant) -> bool {
        now >= self.next && !self.on_last_call()
    }

    /// Schedules the next round.
    pub(crate) fn schedule(&mut self, at: Instant) {
        self.next = at;
    }

    /// When the cycle next needs a tick; `rounds` is false once this node
    /// stopped probing (it left), when only the probe in flight counts.
    pub(crate) fn next_wake(&self, rounds: bool) -> Option<Instant> {
        // While a probe is on its last call the next round waits for it (its deadline is below).
        let round = (rounds && !self.on_last_call()).then_some(self.next);
        let probe = self.probe.as_ref().map(|p| if p.indirect_sent { p.deadline } else { p.indirect_at });
        round.into_iter().chain(probe).min()
    }

    /// Starts a probe of `target` at `addr`, asking helpers at `indirect_at`
    /// and failing at `deadline`; returns its sequence number.
    pub(crate) fn start(&mut self, target: Arc<str>, addr: SocketAddr, indirect_at: Instant, deadline: Instant) -> u32 {
        debug_assert!(self.probe.is_none(), "one probe in flight at most");
        let seq = self.next_seq();
        self.probe = Some(Probe {
            target,
            addr,
            seq,
            indirect_at,
            deadline,
            indirect_sent: false,
            expected_nacks: 0,
            nacks: 0,
            last_call: false,
        });
        seq
    }

    /// The probe in flight outlived its round (timeouts grew): its deadline
    /// is `now`, with no indirect phase left.
    pub(crate) fn cut_short(&mut self, now: Instant) {
        if let Some(p) = &mut self.probe {
            p.indirect_sent = true;
            p.deadline = now;
        }
    }

    /// The probe whose indirect phase is due at `now`: its target, address
    /// and sequence number. Due once per probe (see [`ProbeCycle::indirect_sent`]).
    pub(crate) fn indirect_due(&self, now: Instant) -> Option<(Arc<str>, SocketAddr, u32)> {
        let p = self.probe.as_ref().filter(|p| !p.indirect_sent && now >= p.indirect_at)?;
        Some((p.target.clone(), p.addr, p.seq))
    }

    /// The indirect phase went out, with `expected_nacks` helpers asked to
    /// nack; queues the stream check of the target (true when that dropped
    /// an older one).
    pub(crate) fn indirect_sent(&mut self, expected_nacks: u32) -> bool {
        let Some(p) = &mut self.probe else { return false };
        p.indirect_sent = true;
        p.expected_nacks = expected_nacks;
        let check = StreamCheck { to: p.addr, seq: p.seq };
        self.check(check)
    }

    /// Queues a stream check the driver has not taken yet; the oldest goes
    /// when too many wait (true then, for the caller to count).
    pub(crate) fn check(&mut self, check: StreamCheck) -> bool {
        let dropped = self.stream_checks.len() >= MAX_QUEUED_CHECKS;
        if dropped {
            self.stream_checks.pop_front();
        }
        self.stream_checks.push_back(check);
        dropped
    }

    /// Ends and returns the probe whose deadline has come at `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Probe> {
        self.probe.take_if(|p| p.indirect_sent && now >= p.deadline)
    }

    /// Puts a failed probe back on its last call, until `deadline`.
    pub(crate) fn last_call(&mut self, probe: Probe, deadline: Instant) {
        debug_assert!(self.probe.is_none(), "one probe in flight at most");
        self.probe = Some(Probe { last_call: true, indirect_sent: true, deadline, ..probe });
    }

    /// Ends and returns the probe `seq` names, if it is the one in flight
    /// (its target answered, or refused a stream connection).
    pub(crate) fn answered(&mut self, seq: u32) -> Option<Probe> {
        self.probe.take_if(|p| p.seq == seq)
    }

    /// A helper reports the target silent to it too.
    pub(crate) fn nack(&mut self, seq: u32) {
        if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) {
            p.nacks += 1;
        }
    }

    /// `name` is dead or gone: a probe of it has nothing left to learn.
    pub(crate) fn drop_target(&mut self, name: &str) {
        if self.probe.as_ref().is_some_and(|p| *p.target == *name) {
            self.probe = None;
        }
    }

    /// Probes `name` next, in the next round. Not sooner: bringing rounds
    /// forward synchronised probers after a healed partition (heal p99 17
    /// to 33 s over 100 seeds), and a suspect's own stream check already
    /// brings the evidence that matters sooner.
    pub(crate) fn urge(&mut self, name: Arc<str>) {
        self.urgent = Some(name);
    }

    /// The member to probe next out of turn, if any.
    pub(crate) fn take_urgent(&mut self) -> Option<Arc<str>> {
        self.urgent.take()
    }

    /// The next stream check for the driver to try.
    pub(crate) fn poll_stream_check(&mut self) -> Option<StreamCheck> {
        self.stream_checks.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn addr() -> SocketAddr {
        "10.0.0.2:7946".parse().unwrap()
    }

    /// A cycle with a probe of "b" started at `t`: indirect at +500 ms, deadline at +1 s.
    fn probing(t: Instant) -> (ProbeCycle, u32) {
        let mut c = ProbeCycle::new(t);
        let seq = c.start("b".into(), addr(), t + 500 * MS, t + 1000 * MS);
        (c, seq)
    }

    #[test]
    fn sequence_numbers_never_repeat_and_wrap() {
        let mut c = ProbeCycle::new(Instant::now());
        let (a, b) = (c.next_seq(), c.next_seq());
        assert!(b == a + 1);
        c.seq = u32::MAX;
        assert_eq!(c.next_seq(), 0);
        let t = Instant::now();
        let s = c.start("b".into(), addr(), t, t);
        assert_eq!(s, 1, "a probe draws from the same counter");
    }

    #[test]
    fn a_stale_sequence_number_changes_nothing() {
        let t = Instant::now();
        let (mut c, seq) = probing(t);
        c.nack(seq + 1);
        assert!(c.answered(seq.wrapping_sub(1)).is_none());
        assert!(c.in_flight());
        c.nack(seq);
        let p = c.answered(seq).expect("the probe in flight");
        assert_eq!(p.nacks, 1);
        assert!(!c.in_flight());
        assert!(c.answered(seq).is_none(), "ended once");
    }

    #[test]
    fn the_indirect_phase_is_due_once_and_queues_a_stream_check() {
        let t = Instant::now();
        let (mut c, seq) = probing(t);
        assert_eq!(c.next_wake(true), Some(t), "the round itself");
        c.schedule(t + 2000 * MS);
        assert_eq!(c.next_wake(true), Some(t + 500 * MS));
        assert!(c.indirect_due(t + 499 * MS).is_none());
        assert_eq!(c.indirect_due(t + 500 * MS), Some(("b".into(), addr(), seq)));
        assert!(c.expire(t + 2000 * MS).is_none(), "not before the indirect phase went out");
        c.indirect_sent(3);
        assert!(c.indirect_due(t + 600 * MS).is_none(), "once");
        assert_eq!(c.poll_stream_check(), Some(StreamCheck { to: addr(), seq }));
        assert_eq!(c.poll_stream_check(), None);
        assert_eq!(c.next_wake(true), Some(t + 1000 * MS));
        assert!(c.expire(t + 999 * MS).is_none());
        c.nack(seq);
        let p = c.expire(t + 1000 * MS).expect("failed at its deadline");
        assert_eq!(p.health_penalty(), 2, "two of three nacks missing");
        assert!(!c.in_flight() && c.expire(t + 5000 * MS).is_none(), "ended once");
    }

    #[test]
    fn a_probe_on_its_last_call_holds_the_next_round() {
        let t = Instant::now();
        let (mut c, seq) = probing(t);
        c.schedule(t + 1000 * MS);
        c.indirect_sent(0);
        let p = c.expire(t + 1000 * MS).unwrap();
        assert_eq!(p.health_penalty(), 1, "no helper: one point");
        assert!(c.round_due(t + 1000 * MS));
        c.last_call(p, t + 1500 * MS);
        assert!(!c.round_due(t + 1200 * MS), "the round waits");
        assert_eq!(c.next_wake(true), Some(t + 1500 * MS));
        let p = c.expire(t + 1500 * MS).unwrap();
        assert!(p.on_last_call() && p.seq == seq);
        assert!(c.round_due(t + 1500 * MS));
        assert_eq!(c.next_wake(false), None, "no rounds once stopped");
    }

    #[test]
    fn a_probe_cut_short_fails_now() {
        let t = Instant::now();
        let (mut c, _) = probing(t);
        c.cut_short(t + 100 * MS);
        assert!(c.indirect_due(t + 100 * MS).is_none(), "no indirect phase left");
        assert!(c.expire(t + 100 * MS).is_some());
        assert!(c.poll_stream_check().is_none());
    }

    #[test]
    fn the_death_of_its_target_ends_the_probe() {
        let t = Instant::now();
        let (mut c, _) = probing(t);
        c.drop_target("c");
        assert!(c.in_flight());
        c.drop_target("b");
        assert!(!c.in_flight());
    }

    #[test]
    fn an_urgent_member_is_probed_next_in_its_round() {
        let t = Instant::now();
        let mut c = ProbeCycle::new(t + 1000 * MS);
        c.urge("x".into());
        assert_eq!(c.next_round(), t + 1000 * MS, "the round keeps its time");
        let seq = c.start("b".into(), addr(), t + 500 * MS, t + 1000 * MS);
        c.urge("y".into());
        assert_eq!(c.take_urgent().as_deref(), Some("y"), "the latest wins");
        assert_eq!(c.take_urgent(), None);
        assert!(c.answered(seq).is_some());
    }

    #[test]
    fn stream_checks_the_driver_leaves_are_bounded_oldest_dropped() {
        let t = Instant::now();
        let mut c = ProbeCycle::new(t);
        let mut seqs = Vec::new();
        let n = MAX_QUEUED_CHECKS + 6;
        for _ in 0..n {
            let seq = c.start("b".into(), addr(), t, t);
            c.indirect_sent(0);
            seqs.push(seq);
            assert!(c.expire(t).is_some());
        }
        let kept: Vec<u32> = std::iter::from_fn(|| c.poll_stream_check()).map(|s| s.seq).collect();
        assert_eq!(kept, seqs[n - MAX_QUEUED_CHECKS..]);
    }
}
