//! Runs SWIM membership scenarios on the deterministic simulator, `ha` and
//! `foca` side by side.
//!
//! ```text
//! cargo run --release -p ha-benches --bin swim-lab -- [--seeds N] [--quick]
//!     [--format json|markdown] [--lifeguard on|off|both] [--impl ha,foca] [--nodes N]
//!     SCENARIO_FILE...
//! ```
//!
//! JSON prints one object per (scenario, implementation, size, seed) per line.

#[path = "../swim/mod.rs"]
mod swim;

use std::path::PathBuf;
use std::process::ExitCode;

use swim::{Implementation, Record};

struct Args {
    seeds: u64,
    quick: bool,
    markdown: bool,
    lifeguard: Vec<bool>,
    foca: bool,
    ha: bool,
    nodes: Option<usize>,
    files: Vec<PathBuf>,
}

const USAGE: &str = "usage: swim-lab [--seeds N] [--quick] [--format json|markdown] [--lifeguard on|off|both] \
                     [--impl ha,foca] [--nodes N] SCENARIO_FILE...";

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 20,
        quick: false,
        markdown: false,
        lifeguard: vec![true],
        foca: true,
        ha: true,
        nodes: None,
        files: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seeds" => a.seeds = value("--seeds")?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--quick" => a.quick = true,
            "--format" => {
                a.markdown = match value("--format")?.as_str() {
                    "json" => false,
                    "markdown" | "md" => true,
                    other => return Err(format!("unknown format {other}")),
                }
            }
            "--lifeguard" => {
                a.lifeguard = match value("--lifeguard")?.as_str() {
                    "on" => vec![true],
                    "off" => vec![false],
                    "both" => vec![true, false],
                    other => return Err(format!("--lifeguard on|off|both, not {other}")),
                }
            }
            "--impl" => {
                let v = value("--impl")?;
                a.ha = v.split(',').any(|s| s == "ha");
                a.foca = v.split(',').any(|s| s == "foca");
            }
            "--nodes" => a.nodes = Some(value("--nodes")?.parse().map_err(|e| format!("--nodes: {e}"))?),
            "-h" | "--help" => return Err(USAGE.into()),
            f if !f.starts_with("--") => a.files.push(f.into()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if a.files.is_empty() {
        return Err(USAGE.into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut impls = Vec::new();
    if args.ha {
        for &lg in &args.lifeguard {
            impls.push(if lg { Implementation::Ha } else { Implementation::HaPlainSwim });
        }
    }
    if args.foca {
        impls.push(Implementation::Foca);
    }
    let mut records: Vec<Record> = Vec::new();
    for file in &args.files {
        let (name, scenario) = match swim::load(file) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let sizes = match (args.nodes, args.quick, &scenario.quick_nodes) {
            (Some(n), _, _) => vec![n],
            (None, true, Some(q)) => q.to_vec(),
            _ => scenario.nodes.to_vec(),
        };
        for &n in &sizes {
            for &implementation in &impls {
                for seed in 1..=args.seeds {
                    match swim::run_one(&name, &scenario, implementation, n, seed, args.quick) {
                        Ok(r) => {
                            if !args.markdown {
                                println!("{}", serde_json::to_string(&r).expect("records serialize"));
                            }
                            records.push(r);
                        }
                        Err(e) => {
                            eprintln!("{name}: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
            }
        }
    }
    if args.markdown {
        print!("{}", swim::report::markdown(&records));
    }
    ExitCode::SUCCESS
}
