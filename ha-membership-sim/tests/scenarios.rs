//! The scenario files of `benches/scenarios/swim`, in their quick form,
//! on the deterministic simulator, with the simulator's invariants.

use std::path::PathBuf;

use ha_membership_sim::{self as sim, scenario::Scenario, Outcome, RunSpec};

fn load(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/scenarios/swim").join(name);
    toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn run(s: &Scenario, nodes: usize, seed: u64, lifeguard: bool) -> Outcome {
    let spec = RunSpec { nodes, seed, quick: true, lifeguard };
    let out = sim::run(s, &spec, &mut sim::ha_spawner(s, &spec).unwrap()).unwrap();
    eprintln!("{nodes} nodes seed {seed} lifeguard {lifeguard}: {out:?}");
    assert_eq!(out.invariant_violations, 0, "incarnations went back");
    out
}

fn first_size(s: &Scenario) -> usize {
    s.quick_nodes.as_ref().unwrap_or(&s.nodes).to_vec()[0]
}

#[test]
fn crash_is_detected_by_everyone_and_removed_exactly_once() {
    let s = load("crash_64.toml");
    for seed in 1..=2 {
        let out = run(&s, first_size(&s), seed, true);
        assert!(out.all_dead_s.expect("every survivor marks it dead") <= 15.0);
        assert_eq!(out.removals, Some([1, 1]));
        assert_eq!(out.false_dead, 0);
        assert!(out.converged);
    }
}

#[test]
fn uniform_loss_kills_nobody() {
    let s = load("loss_64.toml");
    let out = run(&s, first_size(&s), 1, true);
    assert_eq!(out.false_dead, 0);
    assert!(out.converged);
}

#[test]
fn a_starved_node_gets_no_healthy_node_declared_dead() {
    let s = load("starved_64.toml");
    let on = run(&s, first_size(&s), 1, true);
    assert_eq!(on.false_dead, 0);
    let off = run(&s, first_size(&s), 1, false);
    assert!(on.false_suspect <= off.false_suspect, "lifeguard on {on:?} off {off:?}");
}

#[test]
fn lifeguard_raises_no_more_false_suspicions_than_plain_swim_under_random_loss() {
    // 5% uniform loss, no faults: a probe that fails outright is rare (about
    // one every two runs), but a suspicion gossiped at once reaches every
    // member before the refutation does; before the last call Lifeguard
    // counted 174 over these seeds against plain SWIM's 0.
    let s = load("loss5_64.toml");
    let (mut on, mut off) = (0, 0);
    for seed in 1..=5 {
        let a = run(&s, first_size(&s), seed, true);
        let b = run(&s, first_size(&s), seed, false);
        assert_eq!(a.false_dead + b.false_dead, 0);
        on += a.false_suspect;
        off += b.false_suspect;
    }
    assert!(on <= off, "false suspicions: lifeguard on {on}, off {off}");
}

#[test]
fn a_healed_partition_merges_without_an_external_join() {
    let s = load("partition_32.toml");
    let out = run(&s, first_size(&s), 1, true);
    assert!(out.heal_s.expect("merged") <= 60.0, "{out:?}");
    assert!(out.converged);
}

#[test]
fn traffic_per_member_stays_flat_with_size() {
    let s = load("scale.toml");
    let outs: Vec<Outcome> = [16, 64].iter().map(|&n| run(&s, n, 1, true)).collect();
    let b: Vec<f64> = outs.iter().map(|o| o.bytes_per_member_per_s).collect();
    assert!(b[1] / b[0] < 1.5 && b[0] / b[1] < 1.5, "{b:?}");
    assert!(outs.iter().all(|o| o.converged && o.false_dead == 0));
}

#[test]
fn same_seed_same_outcome() {
    let s = load("crash_64.toml");
    let a = run(&s, 64, 7, true);
    let b = run(&s, 64, 7, true);
    assert_eq!(a, b);
}

#[test]
fn a_crashed_node_that_restarts_rejoins_and_the_views_converge() {
    let s: Scenario = toml::from_str(
        r#"
        nodes = 16
        warmup_s = 20
        duration_s = 90
        [[faults]]
        kind = "crash"
        at_s = 5
        until_s = 40
        nodes = [3]
    "#,
    )
    .unwrap();
    let out = run(&s, 16, 3, true);
    assert!(out.converged, "the restarted node is back in every view");
    assert_eq!(out.false_dead, 0);
}

#[test]
fn a_one_way_partition_heals_too() {
    let s: Scenario = toml::from_str(
        r#"
        nodes = 16
        warmup_s = 20
        duration_s = 120
        [[faults]]
        kind = "partition"
        one_way = true
        split = 8
        at_s = 5
        until_s = 60
    "#,
    )
    .unwrap();
    let out = run(&s, 16, 4, true);
    assert!(out.heal_s.expect("healed") <= 60.0, "{out:?}");
    assert!(out.converged);
}

#[test]
fn a_graceful_leave_is_no_false_death() {
    let s: Scenario = toml::from_str(
        r#"
        nodes = 16
        warmup_s = 20
        duration_s = 30
        [[faults]]
        kind = "leave"
        at_s = 5
        nodes = [2]
    "#,
    )
    .unwrap();
    let out = run(&s, 16, 5, true);
    assert_eq!(out.false_dead, 0);
    assert!(out.converged);
}

#[test]
fn a_crash_is_detected_under_heavy_tailed_latency_with_no_false_death() {
    use ha_membership_sim::dist::Dist;
    use ha_membership_sim::latency::Tail;

    // The file's network, built through the API as a test would, on crash_64's faults.
    let mut s = load("crash_64.toml");
    s.network.latency_ms = None;
    s.network.latency = Some(Dist::Lognormal { median_ms: 1.0, sigma: 0.8 });
    s.network.latency_tail = Some(Tail { p: 0.01, extra: Dist::Uniform { min_ms: 50.0, max_ms: 250.0 } });
    assert_eq!(s.network, load("crash_64_lognormal.toml").network);
    let n = first_size(&s);
    for seed in 1..=2 {
        let out = run(&s, n, seed, true);
        assert!(out.all_dead_s.expect("every survivor marks the crashed node dead") <= 15.0, "{out:?}");
        assert_eq!(out.removals, Some([1, 1]));
        assert_eq!(out.false_dead, 0, "no healthy node declared dead");
        assert!(out.converged);
    }
    // The distribution is drawn from the run's seed: the same seed replays exactly.
    assert_eq!(run(&s, n, 1, true), run(&s, n, 1, true));
}

#[test]
fn a_restart_is_detected_then_rejoins_with_no_false_death() {
    let s = load("restart_64.toml");
    for seed in 1..=2 {
        let out = run(&s, first_size(&s), seed, true);
        assert_eq!(out.restarts, 2);
        assert_eq!(out.back_before_dead, 0, "40 s is time enough to detect");
        assert!(out.all_dead_s.expect("held dead everywhere before the restart") <= 15.0, "{out:?}");
        assert!(out.rejoin_s.expect("back in every view") <= 10.0, "{out:?}");
        assert_eq!(out.false_dead, 0);
        assert!(out.converged);
    }
}

#[test]
fn a_restart_before_detection_counts_apart_and_rejoins() {
    let s = load("quick_restart_64.toml");
    let out = run(&s, first_size(&s), 1, true);
    assert_eq!((out.restarts, out.back_before_dead), (1, 1));
    // Its crash was cut short, so there is no dead-everywhere figure, but
    // someone noticed it.
    assert_eq!(out.all_dead_s, None);
    assert!(out.first_suspect_s.is_some(), "{out:?}");
    assert!(out.rejoin_s.expect("back in every view") <= 10.0, "{out:?}");
    assert_eq!(out.false_dead, 0);
}

#[test]
fn a_node_crashing_again_before_it_is_back_never_rejoined() {
    let s: Scenario = toml::from_str(
        r#"
        nodes = 16
        warmup_s = 20
        duration_s = 60
        [[faults]]
        kind = "crash"
        at_s = 5
        until_s = 30
        nodes = [3]
        [[faults]]
        kind = "crash"
        at_s = 30
        nodes = [3]
    "#,
    )
    .unwrap();
    let out = run(&s, 16, 1, true);
    assert_eq!(out.restarts, 1);
    assert_eq!(out.rejoin_s, None, "{out:?}");
}

#[test]
fn cut_links_are_routed_around_and_an_isolated_set_merges_back() {
    let s = load("link_cut_64.toml");
    for seed in 1..=2 {
        let out = run(&s, first_size(&s), seed, true);
        assert_eq!(out.false_dead, 0, "a cut link is no reason to declare anyone dead");
        assert!(out.partitioned_dead > 0, "the isolated three and the rest lose each other");
        assert!(out.heal_s.expect("merged") <= 60.0, "{out:?}");
        assert!(out.converged);
    }
}

#[test]
fn a_partition_cuts_only_between_its_groups() {
    // Nodes 0-3 and 4-7 are cut from each other; 8-15, in no group, from both.
    let s: Scenario = toml::from_str(
        r#"
        nodes = 16
        warmup_s = 20
        duration_s = 120
        [[faults]]
        kind = "partition"
        groups = [[0, 1, 2, 3], [4, 5, 6, 7]]
        at_s = 5
    "#,
    )
    .unwrap();
    let out = run(&s, 16, 2, true);
    // Each node ends up holding exactly the members of its own group alive.
    assert!(!out.converged);
    assert!(out.partitioned_dead >= 4 * 12 + 4 * 12 + 8 * 8, "{out:?}");
    assert_eq!(out.false_dead, 0);
}

#[test]
fn link_loss_hits_only_its_link() {
    // Every datagram from node 1 to node 2 is (almost) lost: node 2 never
    // hears from 1 directly, yet nobody is declared dead.
    let s: Scenario = toml::from_str(
        r#"
        nodes = 8
        warmup_s = 20
        duration_s = 120
        [[faults]]
        kind = "link_loss"
        links = [[1, 2]]
        one_way = true
        rate = 0.99
        at_s = 0
    "#,
    )
    .unwrap();
    let out = run(&s, 8, 3, true);
    assert_eq!(out.false_dead, 0, "{out:?}");
    assert!(out.converged);
}

#[test]
fn the_heal_clock_restarts_when_views_come_apart_again() {
    let base = r#"
        nodes = 16
        warmup_s = 20
        duration_s = 120
        [[faults]]
        kind = "partition"
        split = 8
        at_s = 5
        until_s = 35
    "#;
    let healed = run(&toml::from_str(base).unwrap(), 16, 1, true).heal_s.expect("merged");
    // A crash 40 s after the heal splits the views again until it is
    // detected: the views settled only after that.
    let s: Scenario = toml::from_str(&format!(
        "{base}\n[[faults]]\nkind = \"crash\"\nat_s = {}\nnodes = [12]\n",
        35.0 + healed.ceil() + 10.0
    ))
    .unwrap();
    let out = run(&s, 16, 1, true);
    let heal = out.heal_s.expect("settled again");
    assert!(heal > healed + 10.0, "heal {heal} s, first merge {healed} s");
    assert!(out.converged);
}
