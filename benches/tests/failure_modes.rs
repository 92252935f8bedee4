//! The lab's newer failure modes measure what they claim: client errors are
//! not retried by the whole stacks, server deadlines drain an overloaded
//! queue, and the per-second timeline accounts for every attempt.

use std::path::PathBuf;

use ha_benches::lab::contender;
use ha_benches::lab::report::Summary;
use ha_benches::lab::run::{run, RunResult, Trace};
use ha_benches::lab::scenario::Scenario;

fn load_full(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(format!("{name}.toml"));
    Scenario::load(&path).expect("shipped scenario is valid")
}

fn load_quick(name: &str) -> Scenario {
    load_full(name).quick()
}

fn run_named(s: &Scenario, name: &str, seed: u64) -> RunResult {
    run(s, contender::find(name).expect("known contender"), &Trace::draw(s, seed))
}

#[test]
fn client_errors_fail_alike_and_the_stacks_do_not_retry_them() {
    let s = load_quick("s14_client_errors");
    let rr = Summary::of(&s, &run_named(&s, "round_robin", 1));
    assert!((rr.success_rate - 0.9).abs() < 0.02, "{}", rr.success_rate);
    for name in ["ha_stack", "tower_stack", "ha_retry", "tower_retry_budget"] {
        let x = Summary::of(&s, &run_named(&s, name, 1));
        assert_eq!(x.success_rate, rr.success_rate, "{name}: the same requests fail");
        assert!(x.attempts_per_request < 1.001, "{name} retried a 4xx: {}", x.attempts_per_request);
        assert_eq!(x.ejections.unwrap_or(0), 0, "{name} ejected a backend for 4xx");
    }
    let naive = Summary::of(&s, &run_named(&s, "tower_retry_naive", 1));
    assert!(naive.attempts_per_request > 1.2, "the naive retry does retry them");
}

fn overloaded(server_deadline: bool) -> Scenario {
    let text = format!(
        "contenders = [\"round_robin\"]\ntimeout_ms = 50\n[traffic]\nkind = \"open\"\nduration_s = 4\n\
         profile = [[0, 50], [1, 50], [1, 200], [2, 200], [2, 50]]\n\
         [[backends]]\nslots = 1\nserver_deadline = {server_deadline}\nservice = {{ kind = \"constant\", ms = 10 }}\n"
    );
    Scenario::parse("t", "t.toml", &text).unwrap()
}

#[test]
fn server_deadlines_drain_the_queue_an_overload_left() {
    let with = Summary::of(&overloaded(true), &run_named(&overloaded(true), "round_robin", 1));
    let without = Summary::of(&overloaded(false), &run_named(&overloaded(false), "round_robin", 1));
    // After the burst (2 s to 4 s), dropping expired work lets the backend
    // serve at once, where without deadlines it works through dead requests.
    let after = |s: &Summary| s.timeline[3].success_rate;
    assert!(after(&with) > 0.9, "with deadlines: {:?}", with.timeline);
    assert!(after(&without) < after(&with), "without: {:?}", without.timeline);
}

#[test]
fn the_timeline_accounts_for_every_attempt_and_request() {
    let s = load_quick("s9_crash_restart");
    let r = run_named(&s, "ha_stack", 1);
    let sum = Summary::of(&s, &r);
    let attempts: u64 = sum.timeline.iter().flat_map(|w| w.attempts.iter()).sum();
    assert_eq!(attempts, r.last_layer_attempts.iter().sum::<u64>());
    assert_eq!(sum.timeline.iter().map(|w| w.requests).sum::<u64>(), r.records.len() as u64);
    let v: serde_json::Value = serde_json::from_str(&sum.to_json()).unwrap();
    for key in ["timeline", "steady_p99_ms", "worst_second_p99_ms"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
}

#[test]
fn pickers_that_weigh_no_latency_let_back_an_endpoint_the_other_needs() {
    // s49: one of two backends fails 30% after its service time. Before
    // responses were timed for every picker, the ejected one never came
    // back and the other drowned: 58% success for both, round robin 92%.
    let s = load_full("s49_slow_errors_one_of_two");
    let rr = Summary::of(&s, &run_named(&s, "round_robin", 1)).success_rate;
    for name in ["ha_p2c_pending", "ha_round_robin"] {
        let x = Summary::of(&s, &run_named(&s, name, 1)).success_rate;
        assert!(x >= rr, "{name}: success {x:.4} under round robin's {rr:.4}");
    }
}

#[test]
fn ring_hash_serves_past_a_ring_mostly_refusing() {
    // s48: seven of ten backends refuse for a while. Before the ring walk
    // passed over them, ring hash served 58% (round robin 64%).
    let s = load_quick("s48_ring_hash_most_refusing");
    let rr = Summary::of(&s, &run_named(&s, "round_robin", 1)).success_rate;
    let ring = Summary::of(&s, &run_named(&s, "ha_ring_hash", 1)).success_rate;
    assert!(ring >= rr + 0.1, "ring hash {ring:.4} against round robin {rr:.4}");
}

#[test]
fn the_stack_does_not_retry_a_fleet_past_its_capacity() {
    // s50: retrying one backend's errors asks the pair for 450 req/s of
    // 400. Before retries were withheld while the endpoints queue, the
    // queues grew past the timeout and stayed there: ha_stack 63% success (seed 1)
    // against round robin's 92% (which never retries).
    let s = load_full("s50_retries_past_capacity");
    let rr = Summary::of(&s, &run_named(&s, "round_robin", 1)).success_rate;
    let ha = Summary::of(&s, &run_named(&s, "ha_stack", 1)).success_rate;
    assert!(ha >= rr, "ha_stack {ha:.4} under round robin's {rr:.4}");
}
