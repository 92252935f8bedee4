//! The cluster demo end to end, with real processes: `cluster --quick` with
//! a non-terminal stdout, checked through the JSON it writes; and the
//! errors it gives for bad input.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cluster");

/// A fresh folder for one test's results.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ha-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

struct Output {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args`, killing it if it has not exited within `limit`.
fn run(args: &[&str], limit: Duration) -> Output {
    let mut child: Child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the cluster binary starts");
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send((true, s));
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx2.send((false, s));
    });
    // Both pipes close when the process exits: wait for that, bounded.
    let (mut stdout, mut stderr) = (None, None);
    while stdout.is_none() || stderr.is_none() {
        match rx.recv_timeout(limit) {
            Ok((true, s)) => stdout = Some(s),
            Ok((false, s)) => stderr = Some(s),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cluster {args:?} overran {limit:?}; stdout so far: {stdout:?}");
            }
        }
    }
    let status = child.wait().expect("reaped");
    Output { status, stdout: stdout.unwrap_or_default(), stderr: stderr.unwrap_or_default() }
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// True while `pid` is an instance of the demo (a reused pid is not).
fn instance_alive(pid: u64) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let cmdline = String::from_utf8_lossy(&cmdline);
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
            cmdline.contains("instance") && !zombie
        }
        Err(_) => false,
    }
}

#[test]
fn quick_run_with_real_processes_keeps_every_ha_request_alive() {
    let dir = scratch("quick");
    let out = dir.to_str().expect("utf-8 path");
    let o = run(&["--quick", "--base-port", "27100", "--out", out], Duration::from_secs(90));
    assert!(o.status.success(), "status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, o.stdout, o.stderr);
    // Not a terminal: plain lines, no escape codes.
    assert!(!o.stdout.contains('\x1b'), "{}", o.stdout);
    assert!(o.stdout.lines().filter(|l| l.starts_with("t=")).count() >= 15, "{}", o.stdout);
    assert!(o.stdout.contains("time to fail over"), "{}", o.stdout);

    let r = json(&dir.join("summary.json"));
    let svg = std::fs::read_to_string(dir.join("timeline.svg")).expect("the SVG timeline");
    assert!(svg.contains("<svg") && svg.contains("success rate"), "{}", &svg[..svg.len().min(300)]);
    let summary = &o.stdout;

    assert!(r["ran_s"].as_f64().unwrap() <= 30.0, "{summary}");
    assert!(r["wall_s"].as_f64().unwrap() <= 30.0, "{summary}");
    // ha: every target met (no failure through each single-instance fault,
    // at most 0.1% through the zone loss, back home within 10 s); the
    // baseline: visibly not.
    let targets = r["targets"].as_array().expect("targets");
    assert!(targets.len() >= 5, "{summary}");
    assert!(targets.iter().any(|t| t["name"].as_str().unwrap().contains("back on zone-a")), "{summary}");
    for t in targets {
        assert!(t["met"].as_bool().unwrap(), "missed: {t}\n{summary}");
    }
    let zone = &r["zone_switches"][0];
    assert!(zone["ha"]["fail_over_s"].is_number(), "{summary}");
    assert!(zone["baseline"]["fail_over_s"].is_null(), "{summary}");
    assert!(r["overall"]["baseline"]["failures"].as_u64().unwrap() > 100, "{summary}");
    assert!(r["overall"]["ha"]["requests"].as_u64().unwrap() > 5000, "{summary}");
    assert_eq!(r["unexpected_exits"].as_array().unwrap().len(), 0, "{summary}");
    assert_eq!(r["unfinished"]["ha"].as_u64(), Some(0), "{summary}");
    assert_eq!(r["unfinished"]["baseline"].as_u64(), Some(0), "{summary}");

    // A clean end: every step ran, every child reaped, every port free.
    for step in r["steps"].as_array().unwrap() {
        assert!(step["error"].is_null(), "{step}");
    }
    assert_eq!(r["steps"].as_array().unwrap().len(), 8, "{summary}");
    assert!(r["stuck_children"].as_array().unwrap().is_empty(), "{summary}");
    assert!(r["ports_still_in_use"].as_array().unwrap().is_empty(), "{summary}");
    let pids: Vec<u64> = r["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert!(pids.len() >= 6 + 4, "six instances and four restarts: {pids:?}");
    let left: Vec<u64> = pids.into_iter().filter(|&p| instance_alive(p)).collect();
    assert!(left.is_empty(), "instances left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_script_is_rejected_naming_the_line_and_field() {
    let dir = scratch("bad-script");
    let script = dir.join("bad.toml");
    std::fs::write(&script, "duration_s = 10.0\n\n[[step]]\nat_s = 1.0\naction = \"kill\"\ntarget = \"c7\"\n").unwrap();
    let o = run(&["--script", script.to_str().unwrap(), "--out", dir.to_str().unwrap()], Duration::from_secs(20));
    assert!(!o.status.success());
    assert!(o.stderr.contains("line 6") && o.stderr.contains("step.target") && o.stderr.contains("c7"), "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);

    std::fs::write(&script, "duration_s = 10.0\n[[step]]\nat_s = 1.0\nactoin = \"kill\"\n").unwrap();
    let o = run(&["--script", script.to_str().unwrap(), "--out", dir.to_str().unwrap()], Duration::from_secs(20));
    assert!(!o.status.success());
    assert!(o.stderr.contains("line 4") && o.stderr.contains("actoin"), "{}", o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_and_taken_ports_are_clear_errors() {
    let o = run(&["--rate", "lots"], Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stderr.contains("--rate") && o.stderr.contains("usage"), "{}", o.stderr);

    let dir = scratch("port");
    // Hold the admin port of a2 at base 27300.
    let _held = std::net::TcpListener::bind("127.0.0.1:27311").expect("a free port to hold");
    let o = run(&["--quick", "--base-port", "27300", "--out", dir.to_str().unwrap()], Duration::from_secs(20));
    assert!(!o.status.success());
    assert!(o.stderr.contains("27311") && o.stderr.contains("already in use"), "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
