//! One membership node as an OS process, for real-process tests.
//!
//! `ha-member-node NAME BIND [SEED]` starts a node (LAN-local preset) bound
//! at BIND, joins through SEED if given, prints `ADDR <addr>` once, then a
//! `VIEW name=state ...` line (every member known, in table order) at every change.

use std::net::SocketAddr;

use ha_membership::{Cluster, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: ha-member-node NAME BIND [SEED]");
        std::process::exit(2);
    }
    let bind: SocketAddr = args[2].parse().expect("BIND is an address");
    let node = Cluster::builder(args[1].as_str()).config(Config::local()).bind(bind).start().await;
    let mut node = node.unwrap_or_else(|e| {
        eprintln!("cannot start: {e}");
        std::process::exit(1);
    });
    println!("ADDR {}", node.addr());
    if let Some(seed) = args.get(3) {
        let seed: SocketAddr = seed.parse().expect("SEED is an address");
        if let Err(e) = node.join(&[seed]).await {
            eprintln!("join: {e} (retrying in the background)");
        }
    }
    loop {
        let view: Vec<String> =
            node.all_members().iter().map(|m| format!("{}={:?}", m.name, m.state).to_lowercase()).collect();
        println!("VIEW {}", view.join(" "));
        if node.changed().await.is_err() {
            return;
        }
    }
}
