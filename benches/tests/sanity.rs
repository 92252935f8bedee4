//! Sanity checks of the scenario lab: the simulator measures what it should,
//! matches analytic results, and is reproducible.

use std::path::PathBuf;

use ha_benches::lab::contender::{self, Role, CONTENDERS};
use ha_benches::lab::report::Summary;
use ha_benches::lab::run::{run, RunResult, Trace};
use ha_benches::lab::scenario::{Scenario, ScenarioError};

fn scenario_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(format!("{name}.toml"))
}

fn load_quick(name: &str) -> Scenario {
    Scenario::load(&scenario_file(name)).expect("shipped scenario is valid").quick()
}

fn parse(text: &str) -> Scenario {
    Scenario::parse("test", "test.toml", text).expect("test scenario is valid")
}

fn run_named(s: &Scenario, name: &str, seed: u64) -> RunResult {
    run(s, contender::find(name).expect("known contender"), &Trace::draw(s, seed))
}

const MS: u64 = 1_000_000;

#[test]
fn constant_service_without_queueing_gives_exactly_that_latency() {
    let s = parse(
        r#"
        contenders = ["round_robin"]
        [traffic]
        kind = "open"
        rate_per_s = 200
        duration_s = 5
        [[backends]]
        count = 3
        service = { kind = "constant", ms = 10 }
        "#,
    );
    for c in CONTENDERS {
        let r = run(&s, c, &Trace::draw(&s, 1));
        assert!(r.records.len() > 900, "{}: {} requests", c.name, r.records.len());
        for rec in &r.records {
            assert!(rec.ok, "{}: a request failed", c.name);
            assert_eq!(rec.latency_ns, 10 * MS, "{}: latency {} ns", c.name, rec.latency_ns);
        }
    }
}

#[test]
fn a_single_slot_queues_requests_in_fifo_order() {
    // Two users, one backend with one slot, 10 ms each: the first request
    // takes 10 ms, every later one waits for the other user's request.
    let s = parse(
        r#"
        contenders = ["round_robin"]
        [traffic]
        kind = "closed"
        concurrency = 2
        requests = 50
        [[backends]]
        slots = 1
        service = { kind = "constant", ms = 10 }
        "#,
    );
    let r = run_named(&s, "round_robin", 1);
    assert_eq!(r.records[0].latency_ns, 10 * MS);
    assert!(r.records[1..].iter().all(|rec| rec.latency_ns == 20 * MS));
    assert_eq!(r.makespan_ns, 500 * MS, "one slot serves 50 requests of 10 ms back to back");
}

#[test]
fn chains_add_latencies_and_count_attempts_at_the_last_layer() {
    let s = parse(
        r#"
        contenders = ["round_robin"]
        [traffic]
        kind = "open"
        rate_per_s = 100
        duration_s = 3
        fanout = 4
        [[layers]]
        [[layers.backends]]
        count = 2
        service = { kind = "constant", ms = 3 }
        [[layers]]
        [[layers.backends]]
        count = 5
        service = { kind = "constant", ms = 7 }
        "#,
    );
    let r = run_named(&s, "tower_p2c_peak_ewma", 3);
    assert!(r.records.iter().all(|rec| rec.ok && rec.latency_ns == 10 * MS));
    let summary = Summary::of(&s, &r);
    assert_eq!(summary.attempts_per_request, 1.0);
    assert_eq!(summary.backend_share.len(), 5);
    assert_eq!(r.last_layer_attempts.iter().sum::<u64>(), r.records.len() as u64 * 4);
}

#[test]
fn naive_retries_try_four_times_and_timeouts_end_silent_backends() {
    let s = parse(
        r#"
        contenders = ["tower_retry_naive"]
        timeout_ms = 250
        [traffic]
        kind = "open"
        rate_per_s = 100
        duration_s = 2
        [[backends]]
        count = 2
        service = { kind = "constant", ms = 5 }
        fail_fast = 1.0
        "#,
    );
    let summary = Summary::of(&s, &run_named(&s, "tower_retry_naive", 1));
    assert_eq!(summary.success_rate, 0.0);
    assert_eq!(summary.attempts_per_request, 4.0, "1 try + 3 retries");

    let silent = parse(
        r#"
        contenders = ["round_robin"]
        timeout_ms = 250
        [traffic]
        kind = "open"
        rate_per_s = 100
        duration_s = 2
        [[backends]]
        service = { kind = "constant", ms = 5 }
        changes = [{ from_s = 0, blackhole = true }]
        "#,
    );
    let r = run_named(&silent, "round_robin", 1);
    assert!(r.records.iter().all(|rec| !rec.ok && rec.latency_ns == 250 * MS));
}

#[test]
fn round_robin_on_s1_matches_the_analytic_success_rate() {
    // One request in 11 goes to the slow backend; it is slow half the time.
    let analytic = 1.0 - (1.0 / 11.0) * 0.5;
    let s = load_quick("s1_slow_node");
    let summary = Summary::of(&s, &run_named(&s, "round_robin", 1));
    assert!((summary.success_rate - analytic).abs() < 0.005, "success {} vs analytic {analytic}", summary.success_rate);
}

#[test]
fn oracle_is_at_least_as_good_as_every_balancer_at_p99_on_s1_to_s3() {
    for name in ["s1_slow_node", "s2_tower_demo", "s3_queueing"] {
        let s = load_quick(name);
        let trace = Trace::draw(&s, 1);
        let oracle = Summary::of(&s, &run(&s, contender::find("oracle").unwrap(), &trace));
        for c in s.contenders.iter().filter(|c| c.role == Role::Balancer && c.name != "oracle") {
            let other = Summary::of(&s, &run(&s, c, &trace));
            assert!(
                oracle.p99_ms <= other.p99_ms,
                "{name}: oracle p99 {} ms > {} p99 {} ms",
                oracle.p99_ms,
                c.name,
                other.p99_ms
            );
        }
    }
}

#[test]
fn same_seed_same_output_different_seed_different_draws() {
    let s = load_quick("s3_queueing");
    assert_eq!(Trace::draw(&s, 7), Trace::draw(&s, 7));
    assert_ne!(Trace::draw(&s, 7).arrivals_ns, Trace::draw(&s, 8).arrivals_ns);
    for c in &s.contenders {
        let a = Summary::of(&s, &run(&s, c, &Trace::draw(&s, 7))).to_json();
        let b = Summary::of(&s, &run(&s, c, &Trace::draw(&s, 7))).to_json();
        let other = Summary::of(&s, &run(&s, c, &Trace::draw(&s, 8))).to_json();
        assert_eq!(a, b, "{}: same seed, different output", c.name);
        assert_ne!(a, other, "{}: different seeds, same output", c.name);
    }
    // Service times are keyed draws, not traffic order: with no queue and the
    // same trace, every balancer sees the same service time for an attempt
    // on the same backend, so a one-backend run is identical across them.
    let one = parse(
        r#"
        contenders = ["round_robin"]
        [traffic]
        kind = "open"
        rate_per_s = 300
        duration_s = 2
        [[backends]]
        service = { kind = "lognormal", median_ms = 10, sigma = 1.0 }
        "#,
    );
    let trace = Trace::draw(&one, 5);
    let rr = run(&one, contender::find("round_robin").unwrap(), &trace).records;
    let p2c = run(&one, contender::find("tower_p2c_peak_ewma").unwrap(), &trace).records;
    assert_eq!(rr, p2c);
}

#[test]
fn json_lines_carry_the_documented_keys() {
    let s = load_quick("s4_hedging");
    let line = Summary::of(&s, &run_named(&s, "tower_hedge", 1)).to_json();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for key in [
        "scenario",
        "contender",
        "seed",
        "requests",
        "success_rate",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "p9999_ms",
        "attempts_per_request",
        "backend_share",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {line}");
    }
    assert_eq!(v["scenario"], "s4_hedging");
    assert!(v["attempts_per_request"].as_f64().unwrap() > 1.0, "hedging sends extra attempts");
}

#[test]
fn every_shipped_scenario_is_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 7, "{n} scenario files");
}

fn error_of(text: &str) -> ScenarioError {
    Scenario::parse("bad", "bad.toml", text).expect_err("must be rejected")
}

const TRAFFIC: &str = "[traffic]\nkind = \"open\"\nrate_per_s = 10\nduration_s = 1\n";

#[test]
fn bad_scenario_files_name_the_field_and_the_problem() {
    // A misspelt key: the parser names it.
    let e = error_of(
        "contenders = [\"random\"]\n[traffic]\nkind = \"open\"\nrate_per_sec = 10\nduration_s = 1\n[[backends]]\nservice = { kind = \"constant\", ms = 1 }\n"
    );
    assert!(matches!(e, ScenarioError::Parse { .. }), "{e}");
    assert!(e.to_string().contains("rate_per_sec"), "{e}");

    // An unknown distribution kind.
    let e = error_of(&format!(
        "contenders = [\"random\"]\n{TRAFFIC}[[backends]]\nservice = {{ kind = \"pareto\", ms = 1 }}\n"
    ));
    assert!(e.to_string().contains("pareto"), "{e}");

    // Broken TOML.
    let e = error_of("contenders = [\"random\"\n");
    assert!(matches!(e, ScenarioError::Parse { .. }), "{e}");

    let invalid = |text: String, field: &str, problem: &str| {
        let e = error_of(&text);
        match &e {
            ScenarioError::Invalid { field: f, problem: p, .. } => {
                assert_eq!(f, field, "{e}");
                assert!(p.contains(problem), "{e}");
            }
            other => panic!("expected an invalid field, got {other}"),
        }
    };
    let backend = "[[backends]]\nservice = { kind = \"constant\", ms = 1 }\n";
    invalid(format!("contenders = [\"rr\"]\n{TRAFFIC}{backend}"), "contenders[0]", "unknown contender `rr`");
    invalid(format!("contenders = []\n{TRAFFIC}{backend}"), "contenders", "at least one");
    invalid(
        format!("contenders = [\"random\"]\nbase_balancer = \"tower_hedge\"\n{TRAFFIC}{backend}"),
        "base_balancer",
        "not a balancer",
    );
    invalid(
        format!("contenders = [\"random\"]\n[traffic]\nkind = \"open\"\nduration_s = 1\n{backend}"),
        "traffic.rate_per_s",
        "required",
    );
    invalid(
        format!(
            "contenders = [\"random\"]\n{TRAFFIC}{backend}changes = [{{ from_s = 15, to_s = 5, fail_fast = 1.0 }}]\n"
        ),
        "backends[0].changes[0].to_s",
        "greater than from_s",
    );
    invalid(
        format!("contenders = [\"random\"]\n{TRAFFIC}[[backends]]\nslots = 0\nservice = {{ kind = \"constant\", ms = 1 }}\n"),
        "backends[0].slots",
        "at least 1",
    );
    invalid(
        format!("contenders = [\"random\"]\n{TRAFFIC}[[backends]]\nfail_after = 1.5\nservice = {{ kind = \"constant\", ms = 1 }}\n"),
        "backends[0].fail_after",
        "fraction",
    );
    invalid(
        format!(
            "contenders = [\"random\"]\n{TRAFFIC}[[layers]]\n[[layers.backends]]\nservice = {{ kind = \"mixture\", parts = [{{ weight = -1, dist = {{ kind = \"constant\", ms = 1 }} }}] }}\n"
        ),
        "layers[0].backends[0].service.parts[0].weight",
        "> 0",
    );
    invalid(
        format!("contenders = [\"random\"]\n{TRAFFIC}{backend}changes = [{{ from_s = 1, blackhole = true }}]\n"),
        "timeout_ms",
        "required",
    );
    invalid(format!("contenders = [\"random\"]\n{TRAFFIC}"), "backends", "either");
}

#[test]
fn refused_connections_fail_at_once_and_a_full_queue_refuses_the_overflow() {
    // Round robin over two backends, one refusing connections: exactly
    // every other request fails, at once, and the refusals take no slot of
    // the single-slot backend (its requests never wait).
    let s = parse(
        r#"
        contenders = ["round_robin"]
        [traffic]
        kind = "open"
        rate_per_s = 50
        duration_s = 10
        [[backends]]
        slots = 1
        service = { kind = "constant", ms = 10 }
        changes = [{ from_s = 0, refuse = true }]
        [[backends]]
        service = { kind = "constant", ms = 10 }
        "#,
    );
    let r = run_named(&s, "round_robin", 1);
    let failed: Vec<_> = r.records.iter().filter(|rec| !rec.ok).collect();
    assert!(failed.len().abs_diff(r.records.len() - failed.len()) <= 1, "{} of {}", failed.len(), r.records.len());
    assert!(failed.iter().all(|rec| rec.latency_ns == 0), "a refusal is immediate");
    let summary = Summary::of(&s, &r);
    assert_eq!(summary.faulted_share_on, Some(1.0), "round robin gives the refusing backend its fair share");
    assert_eq!((summary.faulted_share_off, summary.faulted_back_after_s), (None, None), "the fault never ends");
    // One slot, one waiting place, 10 ms each: of three requests at once
    // the first is served, the second waits, the third is refused at once.
    let s = parse(
        r#"
        contenders = ["round_robin"]
        [traffic]
        kind = "closed"
        concurrency = 3
        requests = 3
        [[backends]]
        slots = 1
        max_queue = 1
        service = { kind = "constant", ms = 10 }
        "#,
    );
    let r = run_named(&s, "round_robin", 1);
    let mut outcomes: Vec<(bool, u64)> = r.records.iter().map(|rec| (rec.ok, rec.latency_ns / MS)).collect();
    outcomes.sort_unstable();
    assert_eq!(outcomes, vec![(false, 0), (true, 10), (true, 20)]);
}

#[test]
fn errors_before_ejection_count_what_a_bad_backend_served_until_ejected() {
    // Round robin at 100 req/s over three backends: backend 0 fails every
    // request at once, one at a time, so ha-balance's consecutive-failure
    // rule (5) ejects it after exactly five errors. It stays ejected to the
    // end of the run, but is probed: one request 1 s after the ejection
    // (at about 1.15 s), then every 0.5 to 1 s while the probes fail (the
    // 1 s `max_probe_interval` drawn down by up to half): 3 to 7 more by 5 s.
    let s = parse(
        r#"
        contenders = ["ha_round_robin", "round_robin"]
        [traffic]
        kind = "open"
        rate_per_s = 100
        duration_s = 5
        [[backends]]
        service = { kind = "constant", ms = 10 }
        fail_fast = 1.0
        [[backends]]
        count = 2
        service = { kind = "constant", ms = 10 }
        "#,
    );
    let ha = Summary::of(&s, &run_named(&s, "ha_round_robin", 1));
    assert_eq!(ha.ejections, Some(1));
    assert_eq!(ha.errors_before_ejection, Some(5));
    let errors = ha.requests - (ha.success_rate * ha.requests as f64).round() as u64;
    assert!((5 + 4..=5 + 8).contains(&errors), "no error after the ejection but its probes: {errors}");
    let rr = Summary::of(&s, &run_named(&s, "round_robin", 1));
    assert_eq!((rr.ejections, rr.errors_before_ejection), (None, None), "round_robin does not eject");
}

#[test]
fn jittered_faults_move_per_seed_within_their_jitter_and_the_same_for_every_contender() {
    let text = "contenders = [\"round_robin\", \"ha_p2c_ewma\"]\n\
        [traffic]\nkind = \"open\"\nrate_per_s = 200\nduration_s = 20\n\
        [[backends]]\nservice = { kind = \"constant\", ms = 1 }\n\
        changes = [{ from_s = 5, to_s = 10, refuse = true, jitter_s = 4 }, { from_s = 12, to_s = 13, refuse = true }]\n\
        [[backends]]\nservice = { kind = \"constant\", ms = 1 }\n";
    let s = parse(text);
    let window = |s: &Scenario, i: usize| {
        let c = &s.layers[0].backends[0].changes[i];
        (c.from_ns, c.to_ns.unwrap())
    };
    let sec = 1_000 * MS;
    let mut starts = std::collections::BTreeSet::new();
    for seed in 1..=8 {
        let seeded = s.for_seed(seed);
        let (from, to) = window(&seeded, 0);
        assert!((5 * sec..9 * sec).contains(&from), "seed {seed}: starts at {from} ns");
        assert_eq!(to - from, 5 * sec, "seed {seed}: the change keeps its length");
        assert_eq!(window(&seeded, 1), (12 * sec, 13 * sec), "a change without jitter stays put");
        assert_eq!(window(&s.for_seed(seed), 0), (from, to), "seed {seed}: not deterministic");
        starts.insert(from);
    }
    assert!(starts.len() >= 6, "8 seeds drew {} distinct start times", starts.len());
    // The run follows the seeded times: backend 0 refuses from its drawn start.
    let seeded = s.for_seed(3);
    let (from, to) = window(&seeded, 0);
    let r = run_named(&seeded, "round_robin", 3);
    let failed_at = |lo: u64, hi: u64| r.records.iter().filter(|x| (lo..hi).contains(&x.sent_ns) && !x.ok).count();
    assert_eq!(failed_at(0, from), 0, "failures before the drawn start");
    assert!(failed_at(from, to) > 0, "no failures while the drawn fault is on");
    // Negative jitter is refused.
    let bad = text.replace("jitter_s = 4", "jitter_s = -1");
    assert!(matches!(
        Scenario::parse("test", "test.toml", &bad),
        Err(ScenarioError::Invalid { ref field, .. }) if field.ends_with("changes[0].jitter_s")
    ));
}

/// A tiny scenario whose backend 1 joins discovery at 5 s and backend 2
/// leaves it at 5 s, for `contender`.
fn flux_scenario(contender: &str) -> Scenario {
    parse(&format!(
        r#"
        contenders = ["{contender}"]
        timeout_ms = 1000
        [traffic]
        kind = "open"
        rate_per_s = 200
        duration_s = 10
        [[backends]]
        service = {{ kind = "constant", ms = 5 }}
        [[backends]]
        service = {{ kind = "constant", ms = 5 }}
        joins_at_s = 5
        [[backends]]
        service = {{ kind = "constant", ms = 5 }}
        leaves_at_s = 5
        "#
    ))
}

#[test]
fn joins_and_leaves_are_parsed_scaled_and_drawn_per_seed() {
    let s = flux_scenario("round_robin");
    let b = &s.layers[0].backends;
    assert_eq!((b[1].joins_ns, b[1].leaves_ns), (Some(5_000 * MS), None));
    assert_eq!((b[2].joins_ns, b[2].leaves_ns), (None, Some(5_000 * MS)));
    assert!(!b[1].listed_at(4_999 * MS) && b[1].listed_at(5_000 * MS));
    assert!(b[2].listed_at(4_999 * MS) && !b[2].listed_at(5_000 * MS));
    assert_eq!(s.fault_window_ns(), Some((5_000 * MS, 5_000 * MS)), "joins and leaves mark the fault window");
    let q = s.quick();
    assert_eq!(q.layers[0].backends[1].joins_ns, Some(1_250 * MS), "--quick scales join times");

    let jittered = parse(&format!(
        "contenders = [\"round_robin\"]\n{TRAFFIC}[[backends]]\nservice = {{ kind = \"constant\", ms = 1 }}\n\
         [[backends]]\ncount = 2\nservice = {{ kind = \"constant\", ms = 1 }}\njoins_at_s = 1\nleaves_at_s = 3\n\
         discovery_jitter_s = 2\n"
    ));
    let joins: Vec<Option<u64>> = (1..=4).map(|seed| jittered.for_seed(seed).layers[0].backends[1].joins_ns).collect();
    for (seed, j) in joins.iter().enumerate() {
        let j = j.expect("joins");
        assert!((1_000 * MS..3_000 * MS).contains(&j), "seed {}: {j}", seed + 1);
        let b = &jittered.for_seed(seed as u64 + 1).layers[0].backends[1];
        assert_eq!(b.leaves_ns.unwrap() - j, 2_000 * MS, "one draw moves the join and the leave");
    }
    assert!(joins.windows(2).any(|w| w[0] != w[1]), "drawn per seed: {joins:?}");
    let one = jittered.for_seed(1);
    assert_ne!(one.layers[0].backends[1].joins_ns, one.layers[0].backends[2].joins_ns, "each backend draws its own");
}

#[test]
fn bad_discovery_and_retry_after_keys_name_the_field() {
    let backend = |extra: &str| {
        error_of(&format!(
            "contenders = [\"random\"]\n{TRAFFIC}[[backends]]\nservice = {{ kind = \"constant\", ms = 1 }}\n\
             [[backends]]\nservice = {{ kind = \"constant\", ms = 1 }}\n{extra}\n"
        ))
        .to_string()
    };
    let cases = [
        ("joins_at_s = -1", "backends[1].joins_at_s"),
        ("leaves_at_s = nan", "backends[1].leaves_at_s"),
        ("joins_at_s = 5\nleaves_at_s = 3", "backends[1].leaves_at_s"),
        ("discovery_jitter_s = 1", "backends[1].discovery_jitter_s"),
        ("joins_at_s = 1\ndiscovery_jitter_s = -2", "backends[1].discovery_jitter_s"),
        ("retry_after_ms = 100", "backends[1].retry_after_ms"),
        ("fail_fast = 0.5\nretry_after_ms = -1", "backends[1].retry_after_ms"),
        ("fail_fast = 0.5\nretry_after_share = 0.5", "backends[1].retry_after_share"),
        ("fail_fast = 0.5\nretry_after_ms = 100\nretry_after_share = 2", "backends[1].retry_after_share"),
        ("joins_at_sec = 1", "joins_at_sec"),
    ];
    for (extra, field) in cases {
        let e = backend(extra);
        assert!(e.contains(field), "{extra:?}: {e}");
    }
    // Nobody listed at some moment.
    let e = error_of(&format!(
        "contenders = [\"random\"]\n{TRAFFIC}[[backends]]\nservice = {{ kind = \"constant\", ms = 1 }}\njoins_at_s = 1\n"
    ))
    .to_string();
    assert!(e.contains("`backends`") && e.contains("no backend is listed at 0 s"), "{e}");
}

#[test]
fn a_backend_joining_at_5_s_gets_nothing_before_and_one_leaving_nothing_after() {
    for name in ["round_robin", "random", "oracle", "tower_p2c_pending", "tower_p2c_peak_ewma", "ha_p2c_ewma"]
        .into_iter()
        .chain(["ha_round_robin", "ha_ring_hash", "ha_stack", "tower_stack"])
    {
        let s = flux_scenario(name);
        let r = run_named(&s, name, 1);
        let per = &r.arrivals_per_backend;
        let sum = |b: usize, from: usize, to: usize| -> u64 { per[b].iter().take(to).skip(from).sum() };
        assert_eq!(sum(1, 0, 5), 0, "{name}: the newcomer got attempts before 5 s: {:?}", per[1]);
        assert!(sum(1, 5, 10) > 100, "{name}: the newcomer got too few after 5 s: {:?}", per[1]);
        assert!(sum(2, 0, 5) > 100, "{name}: the leaver got too few before 5 s: {:?}", per[2]);
        // tower's balancers learn of the leave at their next poll: allow a
        // handful in the second it leaves, none later.
        assert!(sum(2, 5, 6) <= 5 && sum(2, 6, 10) == 0, "{name}: the leaver got attempts after 5 s: {:?}", per[2]);
        let ok = r.records.iter().filter(|x| x.ok).count();
        assert_eq!(ok, r.records.len(), "{name}: every request succeeds");
    }
}

#[test]
fn rejections_carry_retry_after_and_the_ha_stack_waits_it_out() {
    let text = |retry_after: &str| {
        format!(
            r#"
            contenders = ["ha_stack", "tower_stack"]
            timeout_ms = 5000
            [traffic]
            kind = "open"
            rate_per_s = 100
            duration_s = 5
            [[backends]]
            count = 2
            service = {{ kind = "constant", ms = 5 }}
            fail_fast = 0.3
            {retry_after}
            "#
        )
    };
    let plain = parse(&text(""));
    let after = parse(&text("retry_after_ms = 300"));
    assert_eq!(after.layers[0].backends[0].retry_after, Some((300 * MS, 1.0)));
    let slowest = |s: &Scenario, name: &str| {
        let r = run_named(s, name, 1);
        r.records.iter().map(|x| x.latency_ns).max().unwrap()
    };
    // Without Retry-After the ha stack retries at once; with it, it waits
    // at least 300 ms; tower's retry policy ignores the header.
    assert!(slowest(&plain, "ha_stack") < 100 * MS, "{}", slowest(&plain, "ha_stack"));
    assert!(slowest(&after, "ha_stack") >= 300 * MS, "{}", slowest(&after, "ha_stack"));
    assert_eq!(slowest(&after, "tower_stack"), slowest(&plain, "tower_stack"));
    // A share of rejections: some retries wait, not all.
    let half = parse(&text("retry_after_ms = 300\nretry_after_share = 0.5"));
    let r = run_named(&half, "ha_stack", 1);
    let waited = r.records.iter().filter(|x| x.latency_ns >= 300 * MS).count();
    let full = run_named(&after, "ha_stack", 1).records.iter().filter(|x| x.latency_ns >= 300 * MS).count();
    assert!(waited > 0 && waited < full, "half {waited}, all {full}");
}
