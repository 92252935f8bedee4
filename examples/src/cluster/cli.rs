//! The command line: the demo's options, and the hidden `instance` role the
//! demo re-executes itself with.

use std::path::PathBuf;

use super::instance::InstanceArgs;
use super::topology::DEFAULT_BASE_PORT;

/// What `--help` prints.
pub const USAGE: &str = "\
cluster: starts 6 service instances (separate processes, two zones of 3), sends open-loop
traffic through ha and through a plain round-robin client side by side, breaks the
instances by a fault script, and shows every request ha saved.

usage: cluster [options]
  --quick            the same script compressed to a third (under 30 s)
  --script FILE      a fault script in TOML instead of the built-in one
                     (--print-script shows the built-in one, with the format)
  --rate N           request pairs per second (default 500)
  --base-port PORT   first of the ports used, PORT..PORT+30 (default 17100)
  --out DIR          where the JSON and SVG go (default results/cluster/<mode>)
  --plain            one plain line per second even on a terminal
  --check            exit with status 1 when ha misses one of its targets
  --print-script     print the built-in fault script and exit
  -h, --help         this text";

/// The demo's options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Compress the script to a third.
    pub quick: bool,
    /// A custom script.
    pub script: Option<PathBuf>,
    /// Request pairs per second.
    pub rate: u32,
    /// The first port.
    pub base_port: u16,
    /// The results folder (`None`: the default for the mode).
    pub out: Option<PathBuf>,
    /// Plain lines even on a terminal.
    pub plain: bool,
    /// Exit non-zero when a target is missed.
    pub check: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quick: false,
            script: None,
            rate: 500,
            base_port: DEFAULT_BASE_PORT,
            out: None,
            plain: false,
            check: false,
        }
    }
}

impl Options {
    /// The run's name: `quick`, `default`, or `custom`.
    pub fn mode(&self) -> &'static str {
        match (self.script.is_some(), self.quick) {
            (true, true) => "custom-quick",
            (true, false) => "custom",
            (false, true) => "quick",
            (false, false) => "default",
        }
    }

    /// Where the results go.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from("results/cluster").join(self.mode()))
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the demo.
    Run(Options),
    /// Be one instance (the supervisor's children).
    Instance(InstanceArgs),
    /// Print the built-in script.
    PrintScript,
    /// Print the usage.
    Help,
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, String> {
    if args.first().map(String::as_str) == Some("instance") {
        return InstanceArgs::parse(&args[1..]).map(Command::Instance);
    }
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--print-script" => return Ok(Command::PrintScript),
            "--quick" => o.quick = true,
            "--plain" => o.plain = true,
            "--check" => o.check = true,
            "--script" => o.script = Some(PathBuf::from(value("--script")?)),
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--rate" => {
                let v = value("--rate")?;
                o.rate = v.parse().map_err(|_| format!("--rate takes a number of requests per second, not `{v}`"))?;
                if !(1..=5000).contains(&o.rate) {
                    return Err(format!("--rate must be in 1..=5000, not {}", o.rate));
                }
            }
            "--base-port" => {
                let v = value("--base-port")?;
                o.base_port = v.parse().map_err(|_| format!("--base-port takes a port number, not `{v}`"))?;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Command::Run(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_parse() {
        assert_eq!(parse(&[]).unwrap(), Command::Run(Options::default()));
        let Command::Run(o) =
            parse(&args("--quick --rate 200 --base-port 20000 --out /tmp/x --plain --check")).unwrap()
        else {
            panic!()
        };
        assert!(o.quick && o.plain && o.check);
        assert_eq!((o.rate, o.base_port), (200, 20000));
        assert_eq!(o.out_dir(), PathBuf::from("/tmp/x"));
        assert_eq!(Options { quick: true, ..Options::default() }.out_dir(), PathBuf::from("results/cluster/quick"));
    }

    #[test]
    fn bad_input_is_an_error_that_says_what() {
        for (a, says) in [
            ("--rate fast", "--rate"),
            ("--rate 0", "--rate"),
            ("--base-port 99999", "--base-port"),
            ("--script", "needs a value"),
            ("--frobnicate", "--frobnicate"),
        ] {
            let e = parse(&args(a)).unwrap_err();
            assert!(e.contains(says), "{a}: {e}");
        }
    }
}
