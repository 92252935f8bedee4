//! The scenario lab: runs every contender of each scenario file on the same
//! seeded traffic, on virtual time, and prints a table (or JSON lines).
//!
//! ```text
//! cargo run --release -p ha-benches --bin lab -- [OPTIONS] SCENARIO_FILE...
//!   --seeds N            seeds per scenario (default 5; 1 with --quick)
//!   --quick              the shortened run CI uses (traffic and faults scaled by the file's quick_scale)
//!   --format F           markdown (default) or json (one object per line per scenario, contender, seed)
//!   --out DIR            also write DIR/<scenario>.svg (latency by percentile),
//!                        DIR/<scenario>.timeline.svg (p99 of each second, seed 1),
//!                        DIR/<scenario>.share.svg (each backend's share of the attempts of each
//!                        second, ha_stack beside round_robin or tower_stack, seed 1) and the table
//!   --contenders a,b     run only these contenders (of those the file lists)
//!   --list               list the contenders and exit
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant as WallClock;

use ha_benches::lab::contender::CONTENDERS;
use ha_benches::lab::report::{aggregate, markdown, plot, sorted_latencies, Summary};
use ha_benches::lab::run::{run, Trace};
use ha_benches::lab::scenario::Scenario;
use ha_benches::lab::share;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Markdown,
    Json,
}

#[derive(Debug)]
struct Options {
    seeds: Option<u64>,
    quick: bool,
    format: Format,
    out: Option<PathBuf>,
    only: Option<Vec<String>>,
    list: bool,
    files: Vec<PathBuf>,
}

const USAGE: &str = "usage: lab [--seeds N] [--quick] [--format json|markdown] [--out DIR] [--contenders a,b] [--list] SCENARIO_FILE...";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        seeds: None,
        quick: false,
        format: Format::Markdown,
        out: None,
        only: None,
        list: false,
        files: vec![],
    };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--seeds" => {
                let v = value("--seeds")?;
                let n: u64 = v.parse().map_err(|_| format!("--seeds: `{v}` is not a number"))?;
                if n == 0 {
                    return Err("--seeds: must be at least 1".into());
                }
                o.seeds = Some(n);
            }
            "--quick" => o.quick = true,
            "--format" => {
                o.format = match value("--format")?.as_str() {
                    "markdown" | "md" => Format::Markdown,
                    "json" => Format::Json,
                    other => return Err(format!("--format: `{other}` is neither json nor markdown")),
                }
            }
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--contenders" => o.only = Some(value("--contenders")?.split(',').map(|s| s.trim().to_string()).collect()),
            "--list" => o.list = true,
            "-h" | "--help" => return Err(USAGE.into()),
            f if f.starts_with("--") => return Err(format!("unknown option {f}\n{USAGE}")),
            f => o.files.push(PathBuf::from(f)),
        }
    }
    if o.files.is_empty() && !o.list {
        return Err(format!("no scenario file given\n{USAGE}"));
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if opts.list {
        for c in CONTENDERS {
            println!("{:<22} {:?}: {}", c.name, c.role, c.about);
        }
        return ExitCode::SUCCESS;
    }
    // Validate every file before running any, so a typo fails in a second.
    let mut scenarios = Vec::new();
    for f in &opts.files {
        match Scenario::load(f) {
            Ok(s) => scenarios.push(if opts.quick { s.quick() } else { s }),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(only) = &opts.only {
        for name in only {
            if ha_benches::lab::contender::find(name).is_none() {
                eprintln!("error: --contenders: unknown contender `{name}`");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(dir) = &opts.out {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("error: --out {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    }
    let seeds = opts.seeds.unwrap_or(if opts.quick { 1 } else { 5 });
    let total = WallClock::now();
    for scenario in &scenarios {
        let wall = WallClock::now();
        let contenders: Vec<_> = scenario
            .contenders
            .iter()
            .copied()
            .filter(|c| opts.only.as_ref().is_none_or(|o| o.iter().any(|n| n == c.name)))
            .collect();
        let mut summaries = Vec::new();
        let mut pooled: Vec<(String, Vec<u64>)> = contenders.iter().map(|c| (c.name.to_string(), vec![])).collect();
        let mut json_lines = String::new();
        let mut timelines = Vec::new();
        for seed in 1..=seeds {
            let seeded = scenario.for_seed(seed);
            let trace = Trace::draw(&seeded, seed);
            for (ci, c) in contenders.iter().enumerate() {
                let result = run(&seeded, c, &trace);
                let summary = Summary::of(&seeded, &result);
                if opts.format == Format::Json {
                    let line = summary.to_json();
                    println!("{line}");
                    json_lines.push_str(&line);
                    json_lines.push('\n');
                }
                if opts.out.is_some() {
                    pooled[ci].1.extend(sorted_latencies(&result));
                    if seed == 1 {
                        timelines.push((c.name.to_string(), summary.timeline.clone()));
                    }
                }
                summaries.push(summary);
            }
        }
        let table = markdown(scenario, &aggregate(&summaries));
        if opts.format == Format::Markdown {
            println!("{table}");
        }
        if let Some(dir) = &opts.out {
            for (_, l) in &mut pooled {
                l.sort_unstable();
            }
            let svg = dir.join(format!("{}.svg", scenario.name));
            if let Err(e) = plot(&svg, scenario, &pooled) {
                eprintln!("error: writing {}: {e}", svg.display());
                return ExitCode::FAILURE;
            }
            let svg = dir.join(format!("{}.timeline.svg", scenario.name));
            if let Err(e) = ha_benches::lab::timeline::plot(&svg, &scenario.name, &timelines) {
                eprintln!("error: writing {}: {e}", svg.display());
                return ExitCode::FAILURE;
            }
            let ran: Vec<&str> = timelines.iter().map(|(n, _)| n.as_str()).collect();
            let panels: Vec<_> = share::panel_contenders(&ran)
                .into_iter()
                .filter_map(|name| timelines.iter().find(|(n, _)| n == name).cloned())
                .collect();
            if !panels.is_empty() {
                let end_s = panels.iter().map(|(_, s)| s.len()).max().unwrap_or(0) as f64;
                let marks = share::marks(&scenario.for_seed(1), end_s);
                let svg = dir.join(format!("{}.share.svg", scenario.name));
                if let Err(e) = std::fs::write(&svg, share::svg(&scenario.name, &panels, &marks)) {
                    eprintln!("error: writing {}: {e}", svg.display());
                    return ExitCode::FAILURE;
                }
            }
            let (name, text) = match opts.format {
                Format::Markdown => (format!("{}.md", scenario.name), table),
                Format::Json => (format!("{}.jsonl", scenario.name), json_lines),
            };
            if let Err(e) = std::fs::write(dir.join(&name), text) {
                eprintln!("error: writing {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
        eprintln!(
            "{}: {} contenders x {} seeds in {:.1} s wall",
            scenario.name,
            contenders.len(),
            seeds,
            wall.elapsed().as_secs_f64()
        );
    }
    eprintln!("all scenarios in {:.1} s wall", total.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
