//! The TCP listener backs off on accept errors: with the process out of
//! file descriptors and connections waiting in the backlog, every accept
//! fails at once, and a listener that retried at once would spin. The node
//! pauses (10 ms, doubling to 1 s) instead, and accepts again once
//! descriptors are free.
//!
//! The descriptor limit is this test process's own (set with util-linux's
//! `prlimit`), so this file holds this one test only.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use ha_membership::{Cluster, Config, MemberState};

/// The current soft and hard `RLIMIT_NOFILE` of this process.
fn nofile() -> Option<(String, String)> {
    let pid = std::process::id().to_string();
    let out = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile", "--raw", "--noheadings", "--output", "SOFT,HARD"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.to_string(), it.next()?.to_string()))
}

fn set_nofile(soft: &str, hard: &str) -> bool {
    let pid = std::process::id().to_string();
    Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={soft}:{hard}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The highest descriptor open now.
fn highest_fd() -> u64 {
    let fds: Vec<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own descriptor is the highest one listed or a hole
    // once closed; either way the limit below leaves no free slot above.
    fds.into_iter().max().unwrap_or(0)
}

/// Puts the original limit back, even on panic.
struct Restore(String, String);

impl Drop for Restore {
    fn drop(&mut self) {
        if !set_nofile(&self.0, &self.1) {
            eprintln!("could not restore the descriptor limit to {}:{}", self.0, self.1);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn accept_errors_back_off_and_the_listener_recovers() {
    let Some((soft, hard)) = nofile() else {
        eprintln!("skipped: `prlimit` (util-linux) is not available to lower the descriptor limit");
        return;
    };
    let mut a =
        Cluster::builder("a").config(Config::local()).bind("127.0.0.1:0".parse().unwrap()).start().await.unwrap();
    let restore = Restore(soft, hard);
    // Declared after `restore`, so dropped before it on panic: `prlimit` needs descriptors to start.
    let mut fillers: Vec<std::fs::File> = Vec::new();

    // On a current-thread runtime the node cannot run while these connect,
    // so all of them wait in its backlog (the kernel completed the handshakes).
    let mut clients: Vec<TcpStream> =
        (0..64).map(|_| TcpStream::connect(a.addr()).expect("connects while descriptors remain")).collect();
    let limit = highest_fd() + 1;
    assert!(set_nofile(&limit.to_string(), &restore.1), "prlimit lowers this process's soft limit to {limit}");

    // Inherited descriptors may leave holes below the limit: fill them, so
    // that not one is free and every accept fails (EMFILE).
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.counters().accept_errors == 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "accept never failed under a limit of {limit} descriptors");
        let _ = tokio::time::timeout(left, a.changed()).await;
    }
    // A fixed window in which to count: a spinning listener fails thousands
    // of times a second; one that backs off 10, 20, 40 ... 1000 ms, about 9 times in 3 s.
    let first = a.counters().accept_errors;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let in_window = a.counters().accept_errors - first;
    assert!(in_window >= 2, "the listener keeps retrying: {in_window} errors in 3 s");
    assert!(in_window <= 20, "the listener backs off: {in_window} accept errors in 3 s");

    // Descriptors back: the listener serves a join again.
    fillers.clear();
    clients.clear();
    drop(restore);
    let mut b =
        Cluster::builder("b").config(Config::local()).bind("127.0.0.1:0".parse().unwrap()).start().await.unwrap();
    b.join(&[a.addr()]).await.expect("join through a's listener, which accepts again");
    let both = async {
        while !b.members().iter().any(|m| &*m.name == "a" && m.state == MemberState::Alive) {
            b.changed().await.unwrap();
        }
        while !a.members().iter().any(|m| &*m.name == "b" && m.state == MemberState::Alive) {
            a.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), both).await.expect("a and b see each other alive");
    eprintln!("{in_window} accept errors in a 3 s window out of descriptors; the listener accepted again afterwards");
}
