//! The main job, live: six service instances in two zones as real
//! processes, open-loop traffic through ha and through a plain round-robin
//! client side by side, a fault script that kills, degrades, freezes and
//! cuts off a zone, a live view, and a summary with JSON and an SVG timeline.
//!
//! ```text
//! cargo run --release -p ha-examples --bin cluster            # about 80 s
//! cargo run --release -p ha-examples --bin cluster -- --quick # under 30 s
//! cargo run --release -p ha-examples --bin cluster -- --help
//! ```
#![forbid(unsafe_code)]

use std::process::ExitCode;

use ha_examples::cluster::cli::{self, Command, USAGE};
use ha_examples::cluster::script::DEFAULT_SCRIPT;
use ha_examples::cluster::{instance, run};

fn runtime(multi: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if multi {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::PrintScript => {
            print!("{DEFAULT_SCRIPT}");
            ExitCode::SUCCESS
        }
        Command::Instance(args) => {
            let name = args.name.clone();
            let done = runtime(false).map_err(|e| e.to_string()).and_then(|rt| rt.block_on(instance::run(args)));
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: instance {name}: {e}");
                    ExitCode::from(3)
                }
            }
        }
        Command::Run(opts) => {
            let done = runtime(true).map_err(|e| e.to_string()).and_then(|rt| {
                let code = rt.block_on(run(opts));
                // Request tasks still waiting on a frozen instance must not hold the exit.
                rt.shutdown_timeout(std::time::Duration::from_millis(200));
                code
            });
            match done {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
