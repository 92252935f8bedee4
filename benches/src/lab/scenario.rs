//! Scenario files: what a lab run simulates, read from TOML and validated.
//!
//! A scenario names its backends (or a chain of backend layers), its traffic,
//! its faults, the client timeout and the contenders that apply. The raw
//! serde form ([`ScenarioSpec`]) mirrors the file; [`Scenario`] is the
//! validated model the simulator runs. Every problem in a file is reported as
//! a [`ScenarioError`] naming the file, the field and the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::contender::{self, Contender, Role};
use super::dist::Dist;
use super::settings::Settings;

/// A scenario file as written (see `benches/scenarios/*.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// Free text shown in reports.
    #[serde(default)]
    pub description: String,
    /// Names of the contenders that run on this scenario (see
    /// [`contender::CONTENDERS`]).
    pub contenders: Vec<String>,
    /// The balancer under request-level contenders (retries, hedging).
    #[serde(default = "default_base_balancer")]
    pub base_balancer: String,
    /// Client timeout of a user request, in ms (none: wait for ever).
    #[serde(default)]
    pub timeout_ms: Option<f64>,
    /// Factor applied to the traffic length and to fault times by `--quick`.
    #[serde(default = "default_quick_scale")]
    pub quick_scale: f64,
    /// The offered traffic.
    pub traffic: TrafficSpec,
    /// The backends of a single-layer scenario (exclusive with `layers`).
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// The layers of a chain: the user calls layer 0, whose backends call
    /// layer 1 through their own client stack, and so on.
    #[serde(default)]
    pub layers: Vec<LayerSpec>,
    /// Per-contender settings, `[settings.<contender>]` (see
    /// [`super::settings`]).
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Table>,
}

fn default_base_balancer() -> String {
    "round_robin".into()
}

fn default_quick_scale() -> f64 {
    0.25
}

/// Open or closed loop traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficKind {
    /// Poisson arrivals at `rate_per_s` for `duration_s`.
    Open,
    /// `concurrency` users each sending their next request when the last is
    /// done, `requests` in total.
    Closed,
}

/// The `[traffic]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// `open` or `closed`.
    pub kind: TrafficKind,
    /// Open loop: user requests per second.
    #[serde(default)]
    pub rate_per_s: Option<f64>,
    /// Open loop: how long requests arrive, in seconds.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Closed loop: users in flight.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Closed loop: user requests in total.
    #[serde(default)]
    pub requests: Option<u64>,
    /// Sub-requests per user request; the user request is done when all are.
    #[serde(default = "one_u32")]
    pub fanout: u32,
    /// Open loop: a rate that varies over time, as `[seconds, req/s]`
    /// points joined by straight lines (two points at one time make a
    /// step); flat before the first and after the last. Replaces
    /// `rate_per_s`.
    #[serde(default)]
    pub profile: Option<Vec<[f64; 2]>>,
}

fn one_u32() -> u32 {
    1
}

/// One `[[layers]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// A label for reports.
    #[serde(default)]
    pub name: String,
    /// Timeout of one call into this layer through its client stack (all its
    /// retries included), in ms.
    #[serde(default)]
    pub timeout_ms: Option<f64>,
    /// The callers' timeout of one attempt to a backend of this layer, in ms
    /// (a timed-out attempt is a failure the caller's retry policy sees).
    #[serde(default)]
    pub attempt_timeout_ms: Option<f64>,
    /// The backends of this layer finish their downstream calls (retries
    /// included) even when their caller gave up, as servers that never learn
    /// of the cancellation do. Default: cancellation propagates.
    #[serde(default)]
    pub finish_abandoned: bool,
    /// The backends of this layer.
    pub backends: Vec<BackendSpec>,
}

/// A group of identical backends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// How many backends this entry stands for.
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Worker slots; requests beyond them wait in a FIFO queue. Absent: no
    /// limit (every request starts at once).
    #[serde(default)]
    pub slots: Option<u32>,
    /// Admission control (with `slots`): at most this many requests wait
    /// in the queue; one more is refused at once, without taking a slot.
    /// Absent: the queue is unbounded.
    #[serde(default)]
    pub max_queue: Option<u32>,
    /// Service time of one request.
    pub service: Dist,
    /// Fraction of requests rejected fast: a rejection takes `fail_fast_ms`
    /// of a worker slot instead of a service time.
    #[serde(default)]
    pub fail_fast: f64,
    /// Fraction of requests that fail after their service time.
    #[serde(default)]
    pub fail_after: f64,
    /// How long a fast failure takes, in ms.
    #[serde(default = "default_fail_fast_ms")]
    pub fail_fast_ms: f64,
    /// Fraction of requests answered with a client error (a 4xx: the
    /// caller's mistake) after `fail_fast_ms`; a failure for the user, but
    /// says nothing about the backend's health and is not worth a retry.
    /// Drawn per request: a request that gets one gets it on every attempt.
    #[serde(default)]
    pub fail_client: f64,
    /// Service time grows with concurrency: each request takes
    /// `service * (1 + slowdown * others_in_service)` (contention).
    #[serde(default)]
    pub slowdown: f64,
    /// Server deadlines: a request whose caller's deadline has passed when
    /// a worker takes it from the queue is dropped without doing the work.
    #[serde(default)]
    pub server_deadline: bool,
    /// Scheduled changes of behaviour.
    #[serde(default)]
    pub changes: Vec<ChangeSpec>,
    /// Discovery: the backend is not listed before this time (seconds
    /// from the start of traffic) and joins then, cold. Absent: listed
    /// from the start.
    #[serde(default)]
    pub joins_at_s: Option<f64>,
    /// Discovery: the backend leaves the list at this time; work already
    /// sent to it finishes. Absent: listed to the end.
    #[serde(default)]
    pub leaves_at_s: Option<f64>,
    /// Join and leave times drawn per seed: each seed shifts this
    /// backend's `joins_at_s` and `leaves_at_s` later by one uniform draw
    /// in `[0, discovery_jitter_s)`, the same for every contender (each
    /// backend of a `count` group draws its own). Default 0.
    #[serde(default)]
    pub discovery_jitter_s: Option<f64>,
    /// Retry-After: rejections (fast failures and admission-control
    /// refusals, not refused connections) carry a Retry-After of this many
    /// ms, as a 503 or 429 would. Absent: none does.
    #[serde(default)]
    pub retry_after_ms: Option<f64>,
    /// The fraction of rejections that carry `retry_after_ms` (drawn per
    /// attempt). Default 1.
    #[serde(default)]
    pub retry_after_share: Option<f64>,
}

fn default_fail_fast_ms() -> f64 {
    1.0
}

/// A scheduled change: from `from_s` (to `to_s`, if given) the listed fields
/// replace the backend's own. With `flap_period_s`, the change is on and off
/// in alternate periods.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeSpec {
    /// Start, seconds from the beginning of traffic.
    pub from_s: f64,
    /// End (exclusive); absent: for ever.
    #[serde(default)]
    pub to_s: Option<f64>,
    /// Service time while the change is on.
    #[serde(default)]
    pub service: Option<Dist>,
    /// Fast-failure fraction while on (`1.0`: the backend is down).
    #[serde(default)]
    pub fail_fast: Option<f64>,
    /// Fail-after-service fraction while on.
    #[serde(default)]
    pub fail_after: Option<f64>,
    /// While on, the backend stops answering (requests never complete).
    #[serde(default)]
    pub blackhole: Option<bool>,
    /// While on, connections are refused: every request fails at once,
    /// taking no worker slot (a crashed server's port).
    #[serde(default)]
    pub refuse: Option<bool>,
    /// While on, the backend's workers stop (a GC pause, a stalled disk):
    /// requests queued and in service make no progress until it ends.
    #[serde(default)]
    pub stall: Option<bool>,
    /// Flap: on for this many seconds, off for as many, repeatedly.
    #[serde(default)]
    pub flap_period_s: Option<f64>,
    /// Fault times drawn per seed: each seed shifts the change (its start,
    /// its end, and so a flap's phase) later by a uniform draw in
    /// `[0, jitter_s)`, the same for every contender. Default 0.
    #[serde(default)]
    pub jitter_s: Option<f64>,
    /// Correlated faults: changes naming the same group (on any backends)
    /// share one `jitter_s` draw per seed, so they start and flap together.
    #[serde(default)]
    pub group: Option<String>,
}

/// What is wrong with a scenario file.
#[derive(Debug, Clone, PartialEq)]
pub enum ScenarioError {
    /// The file could not be read.
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        error: String,
    },
    /// The file is not valid TOML for this schema (the message carries the
    /// line, column and key).
    Parse {
        /// The file.
        file: String,
        /// The parser's message.
        message: String,
    },
    /// A field has a value the lab cannot run.
    Invalid {
        /// The file.
        file: String,
        /// Dotted path of the field, e.g. `layers[0].backends[1].slots`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Io { file, error } => write!(f, "{file}: cannot read: {error}"),
            ScenarioError::Parse { file, message } => write!(f, "{file}: {}", message.trim_end()),
            ScenarioError::Invalid { file, field, problem } => write!(f, "{file}: `{field}`: {problem}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

/// Open or closed loop traffic, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Traffic {
    /// Poisson arrivals.
    Open {
        /// User requests per second.
        rate_per_s: f64,
        /// Arrival period in ns.
        duration_ns: u64,
    },
    /// Fixed concurrency.
    Closed {
        /// Users in flight.
        concurrency: u32,
        /// User requests in total.
        requests: u64,
    },
}

/// A validated scenario, ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// File name without `.toml`.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Contenders to run, in file order.
    pub contenders: Vec<&'static Contender>,
    /// Balancer under request-level contenders.
    pub base_balancer: &'static Contender,
    /// Client timeout of a user request, ns.
    pub timeout_ns: Option<u64>,
    /// Traffic.
    pub traffic: Traffic,
    /// Sub-requests per user request.
    pub fanout: u32,
    /// Layers, outermost first (one for a plain scenario).
    pub layers: Vec<Layer>,
    /// `--quick` factor.
    pub quick_scale: f64,
    /// Open loop: the rate over time, `(ns, req/s)` points (empty: flat).
    pub profile: Vec<(u64, f64)>,
    /// Contender settings from the file.
    pub settings: Settings,
}

/// One layer of backends.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Label.
    pub name: String,
    /// Timeout of a call into this layer, ns.
    pub timeout_ns: Option<u64>,
    /// Timeout of one attempt to one of its backends, ns.
    pub attempt_timeout_ns: Option<u64>,
    /// Backends finish downstream work their caller abandoned.
    pub finish_abandoned: bool,
    /// Its backends, one entry per backend (groups expanded).
    pub backends: Vec<Backend>,
}

/// One simulated backend's behaviour over time.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Worker slots (`None`: unlimited).
    pub slots: Option<u32>,
    /// Waiting requests beyond which one more is refused (`None`: unbounded).
    pub max_queue: Option<u32>,
    /// Duration of a fast failure, ns.
    pub fail_fast_ns: u64,
    /// Client-error fraction.
    pub fail_client: f64,
    /// Service-time growth per other request in service.
    pub slowdown: f64,
    /// Drops queued work whose caller gave up.
    pub server_deadline: bool,
    /// Behaviour when no change is on.
    pub normal: BackendState,
    /// Scheduled changes, later entries win when several are on.
    pub changes: Vec<Change>,
    /// Joins discovery at this time, ns (`None`: listed from the start).
    pub joins_ns: Option<u64>,
    /// Leaves discovery at this time, ns (`None`: listed to the end).
    pub leaves_ns: Option<u64>,
    /// The per-seed shift of both is drawn in `[0, discovery_jitter_ns)`.
    pub discovery_jitter_ns: u64,
    /// Rejections carry a Retry-After: its value in ns, and the fraction
    /// of rejections that carry it.
    pub retry_after: Option<(u64, f64)>,
}

/// A backend's behaviour at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendState {
    /// Service time.
    pub service: Dist,
    /// Fast-failure fraction.
    pub fail_fast: f64,
    /// Fail-after-service fraction.
    pub fail_after: f64,
    /// Never answers.
    pub blackhole: bool,
    /// Refuses connections.
    pub refuse: bool,
}

/// A scheduled change, validated (times in ns from the start of traffic).
#[derive(Debug, Clone)]
pub struct Change {
    /// Start.
    pub from_ns: u64,
    /// End (exclusive).
    pub to_ns: Option<u64>,
    /// Flap half-period.
    pub flap_ns: Option<u64>,
    /// The per-seed shift is drawn in `[0, jitter_ns)` (see [`Scenario::for_seed`]).
    pub jitter_ns: u64,
    /// Replacements.
    pub service: Option<Dist>,
    /// Replacement.
    pub fail_fast: Option<f64>,
    /// Replacement.
    pub fail_after: Option<f64>,
    /// Replacement.
    pub blackhole: Option<bool>,
    /// Replacement.
    pub refuse: Option<bool>,
    /// Workers stop while on.
    pub stall: bool,
    /// Jitter group: changes with the same key share a draw.
    pub group: Option<u64>,
}

/// The effective behaviour of a backend at one instant (borrowed, no copy).
#[derive(Debug, Clone, Copy)]
pub struct Effective<'a> {
    /// Service time.
    pub service: &'a Dist,
    /// Fast-failure fraction.
    pub fail_fast: f64,
    /// Fail-after-service fraction.
    pub fail_after: f64,
    /// Never answers.
    pub blackhole: bool,
    /// Refuses connections: fails at once, no worker slot.
    pub refuse: bool,
}

impl Change {
    /// Whether the change is on at `now_ns`.
    pub fn is_on(&self, now_ns: u64) -> bool {
        if now_ns < self.from_ns || self.to_ns.is_some_and(|to| now_ns >= to) {
            return false;
        }
        match self.flap_ns {
            Some(p) => ((now_ns - self.from_ns) / p) % 2 == 0,
            None => true,
        }
    }

    /// When the on-period containing `t` ends (the change is on at `t`).
    fn on_until(&self, t: u64) -> u64 {
        let end = self.to_ns.unwrap_or(u64::MAX);
        match self.flap_ns {
            Some(p) => end.min(self.from_ns + ((t - self.from_ns) / p + 1) * p),
            None => end,
        }
    }

    /// The next time after `t` the change turns on (it is off at `t`).
    fn next_on(&self, t: u64) -> Option<u64> {
        let next = if t < self.from_ns {
            self.from_ns
        } else {
            let p = self.flap_ns?;
            self.from_ns + ((t - self.from_ns) / p + 1) * p
        };
        (self.to_ns.is_none_or(|to| next < to)).then_some(next)
    }
}

impl Backend {
    /// Whether discovery lists it at `now_ns`.
    pub fn listed_at(&self, now_ns: u64) -> bool {
        self.joins_ns.is_none_or(|j| now_ns >= j) && self.leaves_ns.is_none_or(|l| now_ns < l)
    }

    /// Whether it joins or leaves discovery during the run.
    pub fn in_flux(&self) -> bool {
        self.joins_ns.is_some() || self.leaves_ns.is_some()
    }

    /// Whether any of its scheduled changes is on at `now_ns`.
    pub fn faulted_at(&self, now_ns: u64) -> bool {
        self.changes.iter().any(|c| c.is_on(now_ns))
    }

    /// When work of `work_ns` started at `start_ns` is done, its progress
    /// paused while a stall is on.
    pub fn finish_ns(&self, start_ns: u64, work_ns: u64) -> u64 {
        // Far enough never to matter, near enough not to overflow an Instant.
        const NEVER: u64 = 1_000_000 * 1_000_000_000;
        let stalls = || self.changes.iter().filter(|c| c.stall);
        if stalls().next().is_none() {
            return start_ns + work_ns;
        }
        let (mut t, mut left) = (start_ns, work_ns);
        loop {
            while let Some(end) = stalls().filter(|c| c.is_on(t)).map(|c| c.on_until(t)).max() {
                if end >= NEVER {
                    return NEVER;
                }
                t = end;
            }
            match stalls().filter_map(|c| c.next_on(t)).min() {
                Some(n) if n < t + left => {
                    left -= n - t;
                    t = n;
                }
                _ => return t + left,
            }
        }
    }

    /// The behaviour at `now_ns` (ns from the start of traffic).
    pub fn state_at(&self, now_ns: u64) -> Effective<'_> {
        let mut e = Effective {
            service: &self.normal.service,
            fail_fast: self.normal.fail_fast,
            fail_after: self.normal.fail_after,
            blackhole: self.normal.blackhole,
            refuse: self.normal.refuse,
        };
        for c in self.changes.iter().filter(|c| c.is_on(now_ns)) {
            if let Some(s) = &c.service {
                e.service = s;
            }
            if let Some(v) = c.fail_fast {
                e.fail_fast = v;
            }
            if let Some(v) = c.fail_after {
                e.fail_after = v;
            }
            if let Some(v) = c.blackhole {
                e.blackhole = v;
            }
            if let Some(v) = c.refuse {
                e.refuse = v;
            }
        }
        e
    }
}

impl Layer {
    /// Whether any of its backends joins or leaves discovery mid-run.
    pub fn dynamic(&self) -> bool {
        self.backends.iter().any(Backend::in_flux)
    }

    /// The discovery changes of a dynamic layer, in time order (ties by
    /// index): `(ns, backend, joins)`, every backend listed from the start
    /// joining at 0.
    pub fn discovery_events(&self) -> Vec<(u64, usize, bool)> {
        let mut events = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            events.push((b.joins_ns.unwrap_or(0), i, true));
            if let Some(l) = b.leaves_ns {
                events.push((l, i, false));
            }
        }
        events.sort_by_key(|&(t, i, _)| (t, i));
        events
    }
}

impl Scenario {
    /// Reads and validates a scenario file; its name is the file stem.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::Io { file: file.clone(), error: e.to_string() })?;
        let name = path.file_stem().map_or_else(|| file.clone(), |s| s.to_string_lossy().into_owned());
        Scenario::parse(&name, &file, &text)
    }

    /// Parses and validates scenario text; `file` is used in error messages.
    pub fn parse(name: &str, file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let spec: ScenarioSpec = toml::from_str(text)
            .map_err(|e| ScenarioError::Parse { file: file.to_string(), message: e.to_string() })?;
        Scenario::from_spec(name, file, spec)
    }

    /// Validates a parsed spec.
    pub fn from_spec(name: &str, file: &str, spec: ScenarioSpec) -> Result<Scenario, ScenarioError> {
        let invalid =
            |field: String, problem: String| ScenarioError::Invalid { file: file.to_string(), field, problem };

        if spec.contenders.is_empty() {
            return Err(invalid("contenders".into(), "must name at least one contender".into()));
        }
        let mut contenders = Vec::new();
        for (i, c) in spec.contenders.iter().enumerate() {
            let found = contender::find(c).ok_or_else(|| {
                invalid(format!("contenders[{i}]"), format!("unknown contender `{c}`; known: {}", contender::names()))
            })?;
            if contenders.iter().any(|k: &&Contender| k.name == found.name) {
                return Err(invalid(format!("contenders[{i}]"), format!("`{c}` is listed twice")));
            }
            contenders.push(found);
        }
        let base_balancer =
            contender::find(&spec.base_balancer).filter(|c| c.role == Role::Balancer).ok_or_else(|| {
                invalid(
                    "base_balancer".into(),
                    format!("`{}` is not a balancer contender; known: {}", spec.base_balancer, contender::names()),
                )
            })?;

        let timeout_ns = opt_ms("timeout_ms", spec.timeout_ms).map_err(|(f, p)| invalid(f, p))?;
        if !(spec.quick_scale.is_finite() && spec.quick_scale > 0.0 && spec.quick_scale <= 1.0) {
            return Err(invalid("quick_scale".into(), format!("must be in (0, 1], got {}", spec.quick_scale)));
        }

        let t = &spec.traffic;
        if t.fanout == 0 {
            return Err(invalid("traffic.fanout".into(), "must be at least 1".into()));
        }
        let traffic = match t.kind {
            TrafficKind::Open => {
                let peak = t.profile.as_ref().map(|p| p.iter().map(|pt| pt[1]).fold(0.0, f64::max));
                if t.profile.is_some() && t.rate_per_s.is_some() {
                    return Err(invalid("traffic.rate_per_s".into(), "give either `rate_per_s` or `profile`".into()));
                }
                let rate = t.rate_per_s.or(peak).ok_or_else(|| {
                    invalid("traffic.rate_per_s".into(), "required for open-loop traffic (or `profile`)".into())
                })?;
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(invalid("traffic.rate_per_s".into(), format!("must be > 0, got {rate}")));
                }
                let d = t
                    .duration_s
                    .ok_or_else(|| invalid("traffic.duration_s".into(), "required for open-loop traffic".into()))?;
                if !(d.is_finite() && d > 0.0) {
                    return Err(invalid("traffic.duration_s".into(), format!("must be > 0, got {d}")));
                }
                for f in ["concurrency", "requests"] {
                    let set = if f == "concurrency" { t.concurrency.is_some() } else { t.requests.is_some() };
                    if set {
                        return Err(invalid(format!("traffic.{f}"), "only applies to closed-loop traffic".into()));
                    }
                }
                Traffic::Open { rate_per_s: rate, duration_ns: secs_to_ns(d) }
            }
            TrafficKind::Closed => {
                let c = t
                    .concurrency
                    .ok_or_else(|| invalid("traffic.concurrency".into(), "required for closed-loop traffic".into()))?;
                if c == 0 {
                    return Err(invalid("traffic.concurrency".into(), "must be at least 1".into()));
                }
                let n = t
                    .requests
                    .ok_or_else(|| invalid("traffic.requests".into(), "required for closed-loop traffic".into()))?;
                if n == 0 {
                    return Err(invalid("traffic.requests".into(), "must be at least 1".into()));
                }
                if t.rate_per_s.is_some() || t.duration_s.is_some() {
                    let f = if t.rate_per_s.is_some() { "rate_per_s" } else { "duration_s" };
                    return Err(invalid(format!("traffic.{f}"), "only applies to open-loop traffic".into()));
                }
                Traffic::Closed { concurrency: c, requests: n }
            }
        };

        let profile = match (&t.profile, t.kind) {
            (None, _) => Vec::new(),
            (Some(_), TrafficKind::Closed) => {
                return Err(invalid("traffic.profile".into(), "only applies to open-loop traffic".into()));
            }
            (Some(points), TrafficKind::Open) => validate_profile(points).map_err(|(f, p)| invalid(f, p))?,
        };
        let settings = Settings::parse(&spec.settings).map_err(|(f, p)| invalid(f, p))?;

        let layer_specs: Vec<(String, LayerSpec)> = match (spec.backends.is_empty(), spec.layers.is_empty()) {
            (false, true) => vec![(
                String::new(),
                LayerSpec {
                    name: String::new(),
                    timeout_ms: None,
                    attempt_timeout_ms: None,
                    finish_abandoned: false,
                    backends: spec.backends.clone(),
                },
            )],
            (true, false) => {
                spec.layers.iter().enumerate().map(|(i, l)| (format!("layers[{i}]."), l.clone())).collect()
            }
            (true, true) => return Err(invalid("backends".into(), "give either `backends` or `layers`".into())),
            (false, false) => {
                return Err(invalid("layers".into(), "give either `backends` or `layers`, not both".into()));
            }
        };

        let mut layers = Vec::new();
        let mut any_blackhole = false;
        for (prefix, ls) in &layer_specs {
            let timeout = opt_ms(&format!("{prefix}timeout_ms"), ls.timeout_ms).map_err(|(f, p)| invalid(f, p))?;
            let attempt_timeout = opt_ms(&format!("{prefix}attempt_timeout_ms"), ls.attempt_timeout_ms)
                .map_err(|(f, p)| invalid(f, p))?;
            if ls.backends.is_empty() {
                return Err(invalid(format!("{prefix}backends"), "must list at least one backend".into()));
            }
            let mut backends = Vec::new();
            for (bi, b) in ls.backends.iter().enumerate() {
                let at = format!("{prefix}backends[{bi}]");
                let backend = validate_backend(&at, b).map_err(|(f, p)| invalid(f, p))?;
                any_blackhole |= backend.normal.blackhole || backend.changes.iter().any(|c| c.blackhole == Some(true));
                for _ in 0..b.count {
                    backends.push(backend.clone());
                }
            }
            if backends.len() > 100_000 {
                return Err(invalid(format!("{prefix}backends"), "more than 100000 backends".into()));
            }
            // Discovery must list someone at every moment (before jitter).
            let mut times: Vec<u64> = vec![0];
            times.extend(backends.iter().flat_map(|b: &Backend| [b.joins_ns, b.leaves_ns]).flatten());
            if let Some(t) = times.into_iter().find(|&t| !backends.iter().any(|b| b.listed_at(t))) {
                return Err(invalid(
                    format!("{prefix}backends"),
                    format!("no backend is listed at {} s (see joins_at_s and leaves_at_s)", t as f64 / 1e9),
                ));
            }
            layers.push(Layer {
                name: ls.name.clone(),
                timeout_ns: timeout,
                attempt_timeout_ns: attempt_timeout,
                finish_abandoned: ls.finish_abandoned,
                backends,
            });
        }
        if any_blackhole && timeout_ns.is_none() {
            return Err(invalid(
                "timeout_ms".into(),
                "required when a backend can stop answering (`blackhole`), or requests never end".into(),
            ));
        }

        Ok(Scenario {
            name: name.to_string(),
            description: spec.description,
            contenders,
            base_balancer,
            timeout_ns,
            traffic,
            fanout: t.fanout,
            layers,
            quick_scale: spec.quick_scale,
            profile,
            settings,
        })
    }

    /// The shortened variant `--quick` runs: traffic length and fault times
    /// scaled by `quick_scale` (so fault windows keep their share of traffic).
    pub fn quick(&self) -> Scenario {
        let k = self.quick_scale;
        let scale = |ns: u64| (ns as f64 * k) as u64;
        let mut s = self.clone();
        s.traffic = match self.traffic {
            Traffic::Open { rate_per_s, duration_ns } => Traffic::Open { rate_per_s, duration_ns: scale(duration_ns) },
            Traffic::Closed { concurrency, requests } => {
                Traffic::Closed { concurrency, requests: ((requests as f64 * k) as u64).max(1) }
            }
        };
        for p in &mut s.profile {
            p.0 = scale(p.0);
        }
        for layer in &mut s.layers {
            for b in &mut layer.backends {
                for c in &mut b.changes {
                    c.from_ns = scale(c.from_ns);
                    c.to_ns = c.to_ns.map(scale);
                    // Flap periods scale with the windows, so a shortened
                    // run keeps the fault's structure (the same number of
                    // down and up periods).
                    c.flap_ns = c.flap_ns.map(scale);
                    c.jitter_ns = scale(c.jitter_ns);
                }
                b.joins_ns = b.joins_ns.map(scale);
                b.leaves_ns = b.leaves_ns.map(scale);
                b.discovery_jitter_ns = scale(b.discovery_jitter_ns);
            }
        }
        s
    }

    /// The scenario as `seed` runs it: every change with a `jitter_s` moves
    /// later by its own draw in `[0, jitter)` (start, end and flap phase
    /// alike). Deterministic per seed; the same for every contender.
    pub fn for_seed(&self, seed: u64) -> Scenario {
        let mut s = self.clone();
        for (li, layer) in s.layers.iter_mut().enumerate() {
            for (bi, b) in layer.backends.iter_mut().enumerate() {
                for (ci, c) in b.changes.iter_mut().enumerate() {
                    if c.jitter_ns == 0 {
                        continue;
                    }
                    let key = c.group.unwrap_or(((li as u64) << 40) ^ ((bi as u64) << 20) ^ ci as u64);
                    let mut rng = ha_core::rng::FastRng::new(super::sim::mix(seed, key ^ 0x6a69_7474_6572));
                    let shift = (rng.unit_f64() * c.jitter_ns as f64) as u64;
                    c.from_ns += shift;
                    c.to_ns = c.to_ns.map(|t| t + shift);
                }
                if b.discovery_jitter_ns > 0 {
                    let key = ((li as u64) << 40) ^ ((bi as u64) << 20) ^ 0xd_15c0;
                    let mut rng = ha_core::rng::FastRng::new(super::sim::mix(seed, key ^ 0x6a69_7474_6572));
                    let shift = (rng.unit_f64() * b.discovery_jitter_ns as f64) as u64;
                    b.joins_ns = b.joins_ns.map(|t| t + shift);
                    b.leaves_ns = b.leaves_ns.map(|t| t + shift);
                }
            }
        }
        s
    }

    /// The window in which scheduled changes are on, and backends join or
    /// leave discovery: earliest start and latest end (`None` when there
    /// are none, or a change never ends).
    pub fn fault_window_ns(&self) -> Option<(u64, u64)> {
        let changes = self.layers.iter().flat_map(|l| l.backends.iter()).flat_map(|b| b.changes.iter());
        let mut window: Option<(u64, u64)> = None;
        for c in changes {
            let to = c.to_ns?;
            window = Some(match window {
                None => (c.from_ns, to),
                Some((a, b)) => (a.min(c.from_ns), b.max(to)),
            });
        }
        // Joins and leaves are instants of change too.
        let flux = self.layers.iter().flat_map(|l| l.backends.iter()).flat_map(|b| [b.joins_ns, b.leaves_ns]);
        for t in flux.flatten() {
            window = Some(window.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
        }
        window
    }
}

/// `[seconds, req/s]` points: times from 0 and in order, rates >= 0, some
/// traffic.
fn validate_profile(points: &[[f64; 2]]) -> Result<Vec<(u64, f64)>, (String, String)> {
    if points.is_empty() {
        return Err(("traffic.profile".into(), "must list at least one [seconds, req/s] point".into()));
    }
    let mut last = 0.0;
    for (i, &[t, r]) in points.iter().enumerate() {
        if !(t.is_finite() && t >= last) {
            return Err((format!("traffic.profile[{i}]"), format!("time {t} must be >= 0 and not before {last}")));
        }
        if !(r.is_finite() && r >= 0.0) {
            return Err((format!("traffic.profile[{i}]"), format!("rate must be >= 0, got {r}")));
        }
        last = t;
    }
    if points.iter().all(|p| p[1] == 0.0) {
        return Err(("traffic.profile".into(), "every rate is 0".into()));
    }
    Ok(points.iter().map(|p| (secs_to_ns(p[0]), p[1])).collect())
}

/// The open-loop rate at `t_ns` of a profile (`None` when flat).
pub fn rate_at(profile: &[(u64, f64)], t_ns: u64) -> Option<f64> {
    let first = profile.first()?;
    if t_ns < first.0 {
        return Some(first.1);
    }
    for w in profile.windows(2) {
        let ((t0, r0), (t1, r1)) = (w[0], w[1]);
        if t_ns >= t0 && t_ns < t1 {
            return Some(r0 + (r1 - r0) * (t_ns - t0) as f64 / (t1 - t0) as f64);
        }
    }
    Some(profile.last().map_or(first.1, |p| p.1))
}

/// A group name as a jitter key (FNV-1a), far from the per-change keys.
fn group_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)) | 1 << 63
}

fn secs_to_ns(s: f64) -> u64 {
    (s * 1e9) as u64
}

fn opt_ms(field: &str, v: Option<f64>) -> Result<Option<u64>, (String, String)> {
    match v {
        None => Ok(None),
        Some(ms) if ms.is_finite() && ms > 0.0 => Ok(Some((ms * 1e6) as u64)),
        Some(ms) => Err((field.to_string(), format!("must be > 0, got {ms}"))),
    }
}

fn fraction(field: String, v: f64) -> Result<f64, (String, String)> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err((field, format!("must be a fraction in [0, 1], got {v}")))
    }
}

fn validate_backend(at: &str, b: &BackendSpec) -> Result<Backend, (String, String)> {
    if b.count == 0 {
        return Err((format!("{at}.count"), "must be at least 1".into()));
    }
    if b.slots == Some(0) {
        return Err((format!("{at}.slots"), "must be at least 1 (omit it for no limit)".into()));
    }
    if b.max_queue.is_some() && b.slots.is_none() {
        return Err((format!("{at}.max_queue"), "needs `slots` (without them nothing waits)".into()));
    }
    b.service.validate().map_err(|(f, p)| (format!("{at}.service.{f}"), p))?;
    let fail_fast = fraction(format!("{at}.fail_fast"), b.fail_fast)?;
    let fail_after = fraction(format!("{at}.fail_after"), b.fail_after)?;
    let fail_client = fraction(format!("{at}.fail_client"), b.fail_client)?;
    if !(b.slowdown.is_finite() && b.slowdown >= 0.0) {
        return Err((format!("{at}.slowdown"), format!("must be >= 0, got {}", b.slowdown)));
    }
    if !(b.fail_fast_ms.is_finite() && b.fail_fast_ms >= 0.0) {
        return Err((format!("{at}.fail_fast_ms"), format!("must be >= 0, got {}", b.fail_fast_ms)));
    }
    let mut changes = Vec::new();
    for (ci, c) in b.changes.iter().enumerate() {
        let cat = format!("{at}.changes[{ci}]");
        if !(c.from_s.is_finite() && c.from_s >= 0.0) {
            return Err((format!("{cat}.from_s"), format!("must be >= 0, got {}", c.from_s)));
        }
        if let Some(to) = c.to_s {
            if !(to.is_finite() && to > c.from_s) {
                return Err((format!("{cat}.to_s"), format!("must be greater than from_s ({}), got {to}", c.from_s)));
            }
        }
        if let Some(p) = c.flap_period_s {
            if !(p.is_finite() && p > 0.0) {
                return Err((format!("{cat}.flap_period_s"), format!("must be > 0, got {p}")));
            }
        }
        if let Some(j) = c.jitter_s {
            if !(j.is_finite() && j >= 0.0) {
                return Err((format!("{cat}.jitter_s"), format!("must be >= 0, got {j}")));
            }
        }
        if let Some(s) = &c.service {
            s.validate().map_err(|(f, p)| (format!("{cat}.service.{f}"), p))?;
        }
        if c.service.is_none()
            && c.fail_fast.is_none()
            && c.fail_after.is_none()
            && c.blackhole.is_none()
            && c.refuse.is_none()
            && c.stall.is_none()
        {
            return Err((
                cat,
                "changes nothing: give service, fail_fast, fail_after, blackhole, refuse or stall".into(),
            ));
        }
        if c.group.is_some() && c.jitter_s.is_none() {
            return Err((format!("{cat}.group"), "needs `jitter_s` (the group shares its draw)".into()));
        }
        changes.push(Change {
            from_ns: secs_to_ns(c.from_s),
            to_ns: c.to_s.map(secs_to_ns),
            flap_ns: c.flap_period_s.map(secs_to_ns),
            jitter_ns: c.jitter_s.map_or(0, secs_to_ns),
            service: c.service.clone(),
            fail_fast: c.fail_fast.map(|v| fraction(format!("{cat}.fail_fast"), v)).transpose()?,
            fail_after: c.fail_after.map(|v| fraction(format!("{cat}.fail_after"), v)).transpose()?,
            blackhole: c.blackhole,
            refuse: c.refuse,
            stall: c.stall == Some(true),
            group: c.group.as_deref().map(group_key),
        });
    }
    let secs = |field: &str, v: Option<f64>| match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => Err((format!("{at}.{field}"), format!("must be >= 0, got {x}"))),
        _ => Ok(v.map(secs_to_ns)),
    };
    let joins_ns = secs("joins_at_s", b.joins_at_s)?;
    let leaves_ns = secs("leaves_at_s", b.leaves_at_s)?;
    if let (Some(j), Some(l)) = (b.joins_at_s, b.leaves_at_s) {
        if l <= j {
            return Err((format!("{at}.leaves_at_s"), format!("must be later than joins_at_s ({j}), got {l}")));
        }
    }
    let discovery_jitter_ns = secs("discovery_jitter_s", b.discovery_jitter_s)?.unwrap_or(0);
    if b.discovery_jitter_s.is_some() && joins_ns.is_none() && leaves_ns.is_none() {
        return Err((format!("{at}.discovery_jitter_s"), "needs `joins_at_s` or `leaves_at_s`".into()));
    }
    let retry_after = match (b.retry_after_ms, b.retry_after_share) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err((format!("{at}.retry_after_share"), "needs `retry_after_ms`".into()));
        }
        (Some(ms), share) => {
            if !(ms.is_finite() && ms >= 0.0) {
                return Err((format!("{at}.retry_after_ms"), format!("must be >= 0, got {ms}")));
            }
            if b.fail_fast == 0.0 && b.max_queue.is_none() && b.changes.iter().all(|c| c.fail_fast.is_none()) {
                return Err((
                    format!("{at}.retry_after_ms"),
                    "the backend never rejects: give fail_fast (here or in a change) or max_queue".into(),
                ));
            }
            Some(((ms * 1e6) as u64, fraction(format!("{at}.retry_after_share"), share.unwrap_or(1.0))?))
        }
    };
    Ok(Backend {
        joins_ns,
        leaves_ns,
        discovery_jitter_ns,
        retry_after,
        slots: b.slots,
        max_queue: b.max_queue,
        fail_fast_ns: (b.fail_fast_ms * 1e6) as u64,
        fail_client,
        slowdown: b.slowdown,
        server_deadline: b.server_deadline,
        normal: BackendState { service: b.service.clone(), fail_fast, fail_after, blackhole: false, refuse: false },
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(changes: &str) -> Backend {
        let text = format!(
            "contenders = [\"round_robin\"]\ntimeout_ms = 100\n[traffic]\nkind = \"open\"\nrate_per_s = 1\nduration_s = 1\n\
             [[backends]]\nservice = {{ kind = \"constant\", ms = 1 }}\nchanges = [{changes}]\n"
        );
        Scenario::parse("t", "t.toml", &text).unwrap().layers.remove(0).backends.remove(0)
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn changes_apply_in_their_window_and_later_ones_win() {
        let b = backend(
            "{ from_s = 1, to_s = 3, fail_fast = 0.5 }, { from_s = 2, to_s = 4, fail_fast = 1.0, service = { kind = \"constant\", ms = 9 } }",
        );
        assert_eq!(b.state_at(0).fail_fast, 0.0);
        assert_eq!(b.state_at(S).fail_fast, 0.5);
        assert_eq!(b.state_at(2 * S).fail_fast, 1.0);
        assert_eq!(*b.state_at(2 * S).service, Dist::Constant { ms: 9.0 });
        assert_eq!(b.state_at(3 * S).fail_fast, 1.0);
        assert_eq!(b.state_at(4 * S).fail_fast, 0.0, "the end is exclusive");
        assert_eq!(*b.state_at(4 * S).service, Dist::Constant { ms: 1.0 });
    }

    #[test]
    fn a_flapping_change_alternates_on_and_off() {
        let b = backend("{ from_s = 10, to_s = 20, blackhole = true, flap_period_s = 2 }");
        let on: Vec<bool> = (8..22).map(|s| b.state_at(s * S).blackhole).collect();
        let want = [false, false, true, true, false, false, true, true, false, false, true, true, false, false];
        assert_eq!(on, want);
    }

    #[test]
    fn refusal_is_a_change_and_max_queue_needs_slots() {
        let b = backend("{ from_s = 1, to_s = 2, refuse = true }");
        assert!(!b.state_at(0).refuse);
        assert!(b.state_at(S).refuse);
        let text = "contenders = [\"round_robin\"]\n[traffic]\nkind = \"open\"\nrate_per_s = 1\nduration_s = 1\n\
                    [[backends]]\nmax_queue = 2\nservice = { kind = \"constant\", ms = 1 }\n";
        let err = Scenario::parse("t", "t.toml", text).unwrap_err().to_string();
        assert!(err.contains("backends[0].max_queue"), "{err}");
    }

    #[test]
    fn quick_scales_flap_periods_with_the_windows() {
        let text = "contenders = [\"round_robin\"]\nquick_scale = 0.25\n[traffic]\nkind = \"open\"\nrate_per_s = 10\n\
                    duration_s = 60\n[[backends]]\nservice = { kind = \"constant\", ms = 1 }\n\
                    changes = [{ from_s = 10, to_s = 50, refuse = true, flap_period_s = 5 }]\n";
        let s = Scenario::parse("t", "t.toml", text).unwrap().quick();
        let b = &s.layers[0].backends[0];
        // Full run: 8 periods of 5 s from 10 s; quick: 8 periods of 1.25 s from 2.5 s.
        let flips = (0..600u64)
            .map(|k| b.state_at(k * S / 40).refuse)
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count();
        assert_eq!(flips, 8, "on and off four times, then off");
    }

    #[test]
    fn quick_scales_traffic_and_fault_times_together() {
        let text = "contenders = [\"round_robin\"]\nquick_scale = 0.25\n[traffic]\nkind = \"open\"\nrate_per_s = 10\n\
                    duration_s = 60\n[[backends]]\nservice = { kind = \"constant\", ms = 1 }\n\
                    changes = [{ from_s = 15, to_s = 45, fail_fast = 1.0 }]\n";
        let s = Scenario::parse("t", "t.toml", text).unwrap().quick();
        assert_eq!(s.traffic, Traffic::Open { rate_per_s: 10.0, duration_ns: 15 * S });
        assert_eq!(s.fault_window_ns(), Some((15 * S / 4, 45 * S / 4)));
    }

    fn parse_err(extra_backend: &str, extra_top: &str) -> String {
        let text = format!(
            "contenders = [\"round_robin\"]\n{extra_top}\n[traffic]\nkind = \"open\"\nrate_per_s = 1\nduration_s = 1\n\
             [[backends]]\nservice = {{ kind = \"constant\", ms = 1 }}\n{extra_backend}\n"
        );
        Scenario::parse("t", "t.toml", &text).unwrap_err().to_string()
    }

    #[test]
    fn new_backend_keys_are_checked_and_name_their_field() {
        let err = parse_err("fail_client = 1.5", "");
        assert!(err.contains("backends[0].fail_client"), "{err}");
        let err = parse_err("slowdown = -1", "");
        assert!(err.contains("backends[0].slowdown"), "{err}");
        let err = parse_err("server_deadlines = true", "");
        assert!(err.contains("server_deadlines"), "{err}");
        let err = parse_err("changes = [{ from_s = 1, stall = true, group = \"rack\" }]", "");
        assert!(err.contains("backends[0].changes[0].group"), "{err}");
    }

    #[test]
    fn settings_errors_name_the_contender_and_the_field() {
        let err = parse_err("", "[settings.ha_stack.retry]\nmax_attempts = 0\n");
        assert!(err.contains("settings.ha_stack.retry.max_attempts"), "{err}");
        let err = parse_err("", "[settings.tower_stack]\nmax_atempts = 2\n");
        assert!(err.contains("settings.tower_stack") && err.contains("max_atempts"), "{err}");
        let err = parse_err("", "[settings.oracle]\nx = 1\n");
        assert!(err.contains("settings.oracle"), "{err}");
    }

    #[test]
    fn a_stall_pauses_work_in_progress_and_flaps() {
        let b = backend("{ from_s = 1, to_s = 2, stall = true }");
        // 0.5 s of work from 0.8 s: 0.2 s before the stall, 0.3 s after.
        assert_eq!(b.finish_ns(8 * S / 10, S / 2), 2 * S + 3 * S / 10);
        assert_eq!(b.finish_ns(0, S / 2), S / 2, "done before the stall");
        let f = backend("{ from_s = 1, to_s = 9, stall = true, flap_period_s = 1 }");
        // From 0.5 s, 2 s of work: 0.5 before 1 s, then 1 s in [2, 3), 0.5 in [4, 5).
        assert_eq!(f.finish_ns(S / 2, 2 * S), 4 * S + S / 2);
    }

    #[test]
    fn a_group_shares_its_jitter_draw_across_backends() {
        let text = "contenders = [\"round_robin\"]\n[traffic]\nkind = \"open\"\nrate_per_s = 1\nduration_s = 1\n\
                    [[backends]]\ncount = 3\nservice = { kind = \"constant\", ms = 1 }\n\
                    changes = [{ from_s = 1, to_s = 2, stall = true, jitter_s = 5, group = \"rack\" }]\n";
        let s = Scenario::parse("t", "t.toml", text).unwrap().for_seed(3);
        let starts: Vec<u64> = s.layers[0].backends.iter().map(|b| b.changes[0].from_ns).collect();
        assert!(starts.iter().all(|&f| f == starts[0]) && starts[0] > S, "{starts:?}");
    }

    #[test]
    fn a_profile_replaces_the_rate_and_interpolates() {
        let text = "contenders = [\"round_robin\"]\n[traffic]\nkind = \"open\"\nduration_s = 10\n\
                    profile = [[0, 100], [4, 100], [4, 300], [8, 100]]\n\
                    [[backends]]\nservice = { kind = \"constant\", ms = 1 }\n";
        let s = Scenario::parse("t", "t.toml", text).unwrap();
        assert_eq!(s.traffic, Traffic::Open { rate_per_s: 300.0, duration_ns: 10 * S });
        assert_eq!(rate_at(&s.profile, 2 * S), Some(100.0));
        assert_eq!(rate_at(&s.profile, 6 * S), Some(200.0));
        assert_eq!(rate_at(&s.profile, 9 * S), Some(100.0));
        let bad = text.replace("[4, 300]", "[3, 300]");
        let err = Scenario::parse("t", "t.toml", &bad).unwrap_err().to_string();
        assert!(err.contains("traffic.profile[2]"), "{err}");
    }
}
