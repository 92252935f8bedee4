//! One run of the demo, from the port check to the report.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, watch};

use ha::membership::{Cluster, Config, Metadata};

use super::baseline::Baseline;
use super::cli::Options;
use super::instance::FaultSettings;
use super::live::{FrameBuilder, Live};
use super::report::{self, Report, StepLog};
use super::script::{Action, Script};
use super::stats::{timeline, Recorder, Side, SideFigures};
use super::supervisor::{Supervisor, UnexpectedExit};
use super::topology::Topology;
use super::traffic::{self, HaClient};
use super::view::View;

/// How long the cluster may take to form before the traffic starts.
const FORM_TIMEOUT: Duration = Duration::from_secs(20);
/// How long answers to the last requests are awaited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(11);
/// The baseline's overall timeout: ha's default request deadline.
const BASELINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the demo; returns the exit status (0, 1 for a missed target with
/// `--check`, 130 when interrupted), or an error to print.
pub async fn run(opts: Options) -> Result<u8, String> {
    let wall = Instant::now();
    let topology = Arc::new(Topology::new(opts.base_port)?);
    let script = match &opts.script {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read the script {}: {e}", path.display()))?;
            Script::parse(&text, &topology).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Script::default_script(&topology),
    };
    let script = Arc::new(if opts.quick { script.scaled(1.0 / 3.0) } else { script });
    let out = opts.out_dir();
    // Ports first: a run refused for a busy port leaves no empty folder.
    topology.check_ports_free().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create the results folder {}: {e}", out.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let ctrl_c = {
        let stop = stop_tx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop.send(true);
            }
        })
    };
    let (deaths_tx, mut deaths_rx) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor::new(exe, topology.clone(), deaths_tx);
    let time_scale = if opts.quick { 1.0 / 3.0 } else { 1.0 };
    let started = start_cluster(&mut supervisor, &topology, time_scale, stop_rx.clone()).await;
    let (node, client) = match started {
        Ok(pair) => pair,
        Err(e) => {
            let stuck = supervisor.shutdown().await;
            ctrl_c.abort();
            if *stop_rx.borrow() && stuck.is_empty() {
                // Ctrl-C while the cluster formed: every child is stopped.
                eprintln!("cluster: {e}; every instance stopped");
                return Ok(130);
            }
            return Err(if stuck.is_empty() { e } else { format!("{e} (and could not reap {stuck:?})") });
        }
    };
    let states = supervisor.states();
    let baseline = Arc::new(Baseline::new(topology.instances.iter().map(|i| i.service).collect(), BASELINE_TIMEOUT));
    let live = Arc::new(Live::default());
    let mut view = View::open(opts.plain, stop_tx.clone());

    let t0 = Instant::now();
    let recorder = Arc::new(Recorder::new(t0));
    let duration = Duration::from_secs_f64(script.duration_s);
    let traffic = tokio::spawn(traffic::run(
        opts.rate,
        duration,
        client.clone(),
        baseline,
        topology.clone(),
        recorder.clone(),
        stop_rx.clone(),
    ));
    let runner =
        tokio::spawn(run_script(script.clone(), supervisor, topology.clone(), t0, stop_rx.clone(), live.clone()));

    let mut frames = FrameBuilder::default();
    let mut retries_by_second = Vec::new();
    let mut unexpected: Vec<UnexpectedExit> = Vec::new();
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::from_std(t0) + Duration::from_secs(1), Duration::from_secs(1));
    let mut stop = stop_rx.clone();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            Some(d) = deaths_rx.recv() => {
                live.event(format!("t={:5.1}s UNEXPECTED EXIT of {} (pid {}, {}): {}", t0.elapsed().as_secs_f64(), d.name, d.pid, d.status, d.stderr.join(" | ")));
                unexpected.push(d);
                continue;
            }
            _ = stop.changed() => {}
        }
        let elapsed = t0.elapsed().as_secs_f64();
        retries_by_second.push(client.retry_stats().retries);
        let frame = frames.frame(elapsed, script.duration_s, &recorder, &client, &node, &topology, &states, &live);
        view.show(&frame);
        if *stop.borrow() || elapsed >= script.duration_s {
            break;
        }
    }
    let interrupted = *stop_rx.borrow();
    let sent = traffic.await.unwrap_or(0);
    let ran_s = t0.elapsed().as_secs_f64().min(script.duration_s);
    let (mut supervisor, steps) = runner.await.map_err(|e| format!("the script runner failed: {e}"))?;
    // The last answers: bounded by the deadline of a request.
    // Cut short when interrupted: the user wants out.
    let drain_until = Instant::now() + if interrupted { Duration::from_secs(2) } else { DRAIN_TIMEOUT };
    let in_flight = |r: &Recorder| r.in_flight(Side::Ha) + r.in_flight(Side::Baseline);
    while in_flight(&recorder) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unfinished =
        report::Unfinished { ha: recorder.in_flight(Side::Ha), baseline: recorder.in_flight(Side::Baseline) };
    recorder.close();
    retries_by_second.push(client.retry_stats().retries);
    view.close();
    while let Ok(d) = deaths_rx.try_recv() {
        unexpected.push(d);
    }

    let stuck_children = supervisor.shutdown().await;
    let pids = supervisor.pids().to_vec();
    let _ = tokio::time::timeout(Duration::from_millis(500), node.leave()).await;
    drop(client);
    drop(node);
    let ports_still_in_use = ports_freed(&topology).await;
    ctrl_c.abort();

    let samples = recorder.all();
    let seconds = ran_s.ceil() as u32;
    let phases = report::phases(&script, &topology, &samples, ran_s);
    let zone_switches = report::zone_switches(&script, &topology, &samples, &phases);
    let targets = report::targets(&phases, &zone_switches);
    let json_path = out.join("summary.json");
    let svg_path = out.join("timeline.svg");
    let mut report = Report {
        mode: opts
            .script
            .as_ref()
            .map_or_else(|| opts.mode().to_owned(), |p| format!("{} ({})", opts.mode(), p.display())),
        interrupted,
        rate: opts.rate,
        pairs_sent: sent,
        duration_s: script.duration_s,
        ran_s,
        wall_s: 0.0,
        instances: topology.instances.iter().map(|i| (i.name.clone(), i.zone.clone())).collect(),
        home_zone: topology.home_zone.clone(),
        overall: report::Pair {
            ha: SideFigures::of(&samples, Side::Ha),
            baseline: SideFigures::of(&samples, Side::Baseline),
        },
        phases,
        zone_switches,
        targets,
        steps,
        unexpected_exits: unexpected,
        failure_reasons: report::FailureReasons {
            ha: recorder.failure_reasons(Side::Ha),
            baseline: recorder.failure_reasons(Side::Baseline),
        },
        unfinished,
        pids,
        stuck_children,
        ports_still_in_use,
        timeline: timeline(&samples, seconds, topology.instances.len(), &retries_by_second),
        files: vec![json_path.display().to_string(), svg_path.display().to_string()],
    };
    timeline_svg(&report, &svg_path)?;
    report.wall_s = wall.elapsed().as_secs_f64();
    let json = serde_json::to_string_pretty(&report).map_err(|e| format!("cannot encode the report: {e}"))?;
    std::fs::write(&json_path, json).map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    println!("{}", report::summary_table(&report));
    Ok(if interrupted {
        130
    } else if opts.check && report.targets.iter().any(|t| !t.met) {
        1
    } else {
        0
    })
}

fn timeline_svg(report: &Report, path: &Path) -> Result<(), String> {
    super::timeline::draw(report, path)
}

/// Starts the instances and the client's node, and waits (bounded) until
/// ha has all six endpoints. ha's settings are its defaults, but for the
/// slow-start window, scaled with the script (`time_scale`, a third for
/// `--quick`): the compressed run ramps a returning zone back as the
/// default one does, in proportion.
async fn start_cluster(
    supervisor: &mut Supervisor,
    topology: &Topology,
    time_scale: f64,
    mut stop: watch::Receiver<bool>,
) -> Result<(Cluster, HaClient), String> {
    for i in 0..topology.instances.len() {
        supervisor.start(i).await?;
    }
    let node = Cluster::builder("client")
        .config(Config::local())
        .bind(topology.client_gossip)
        .metadata(Metadata { zone: topology.home_zone.clone(), ..Metadata::default() })
        .start()
        .await
        .map_err(|e| format!("cannot start the client's membership node at {}: {e}", topology.client_gossip))?;
    let seeds: Vec<SocketAddr> = topology.instances.iter().map(|i| i.gossip).collect();
    node.join(&seeds).await.map_err(|e| format!("the client could not join the instances: {e}"))?;
    let mut config = ha::Config::default();
    config.balance.slow_start.window = config.balance.slow_start.window.mul_f64(time_scale);
    let client: HaClient = ha::hyper::builder()
        .config(config)
        .cluster(&node)
        .build()
        .map_err(|e| format!("cannot build the ha client: {e}"))?;
    let mut watch = node.clone();
    let want = topology.instances.len();
    let formed = async {
        while client.endpoint_stats().len() < want {
            // The stack applies a membership change from its own task just after
            // the view changes; the short bound re-checks after that.
            tokio::select! {
                _ = tokio::time::timeout(Duration::from_millis(20), watch.changed()) => {}
                _ = stop.changed() => return Err("interrupted while the cluster formed".to_owned()),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(FORM_TIMEOUT, formed).await {
        Ok(Ok(())) => Ok((node, client)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "the cluster did not form within {FORM_TIMEOUT:?}: ha sees {} of {want} instances",
            client.endpoint_stats().len()
        )),
    }
}

/// Waits until every port is free again (bounded); returns those still taken.
async fn ports_freed(topology: &Topology) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        match topology.check_ports_free() {
            Ok(()) => return Vec::new(),
            Err(e) if Instant::now() >= until => return vec![e.to_string()],
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The admin endpoint's client.
struct Admin {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Admin {
    async fn fault(&self, addr: SocketAddr, settings: Option<FaultSettings>) -> Result<(), String> {
        let builder = http::Request::builder().uri(format!("http://{addr}/fault"));
        let req = match settings {
            Some(s) => builder
                .method(http::Method::PUT)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&s).map_err(|e| e.to_string())?))),
            None => builder.method(http::Method::DELETE).body(Full::new(Bytes::new())),
        }
        .map_err(|e| e.to_string())?;
        let call = async {
            let res = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = res.status();
            let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
            }
        };
        tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| format!("the admin endpoint {addr} did not answer within 2 s"))?
    }
}

/// Runs the script's steps on time until its end or a stop; returns the
/// supervisor and what ran.
async fn run_script(
    script: Arc<Script>,
    mut supervisor: Supervisor,
    topology: Arc<Topology>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
    live: Arc<Live>,
) -> (Supervisor, Vec<StepLog>) {
    let admin = Admin { client: Client::builder(TokioExecutor::new()).build_http() };
    let mut log = Vec::new();
    for (idx, step) in script.steps.iter().enumerate() {
        let at = tokio::time::Instant::from_std(t0 + Duration::from_secs_f64(step.at_s));
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.changed() => break,
        }
        let mut errors = Vec::new();
        for &i in &step.instances {
            let spec = &topology.instances[i];
            let done = match step.action {
                Action::Kill => supervisor.kill(i).await,
                Action::Restart => supervisor.start(i).await.map(|_| ()),
                Action::Freeze => supervisor.freeze(i),
                Action::Thaw => supervisor.thaw(i),
                Action::Gray => {
                    admin
                        .fault(
                            spec.admin,
                            Some(FaultSettings { error_rate: step.error_rate, latency_ms: step.latency_ms }),
                        )
                        .await
                }
                Action::Heal => admin.fault(spec.admin, None).await,
            };
            if let Err(e) = done {
                errors.push(e);
            }
        }
        {
            let mut faults = live.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if step.action.is_fault() {
                faults.push((idx, step.label.clone()));
            } else if let Some(f) = step.undoes {
                faults.retain(|(i, _)| *i != f);
            }
        }
        let t = t0.elapsed().as_secs_f64();
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        live.event(match &error {
            None => format!("t={t:5.1}s {}", step.label),
            Some(e) => format!("t={t:5.1}s {} FAILED: {e}", step.label),
        });
        log.push(StepLog {
            t_s: t,
            action: step.action,
            target: step.target.clone(),
            label: step.label.clone(),
            error,
        });
    }
    (supervisor, log)
}
