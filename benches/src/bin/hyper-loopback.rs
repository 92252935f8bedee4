//! `hyper-loopback`: the ha stack around a hyper client against the bare
//! hyper-util client, over real sockets on 127.0.0.1.
//!
//! Starts `--servers` (3) hyper HTTP/1 servers on ephemeral loopback ports,
//! each answering a small body at once, then runs in rounds, alternating
//! which goes first:
//!
//! - `bare`: a `hyper_util::client::legacy::Client` that round-robins the
//!   servers (one pre-parsed URI per server, picked by a shared counter);
//! - `ha`: `ha::hyper` (the standard stack: retry, P2C PeakEWMA balance, a
//!   breaker and a 2 s try timeout per endpoint, a 10 s deadline) over a
//!   client built from the same `hyper_util` builder (same pool settings),
//!   sent `GET http://svc/` (parsed once and cloned per request, as bare's
//!   URIs are);
//! - `ha_no_timeouts`: the same stack with `timeouts.attempt` and
//!   `timeouts.request` off (the bare client has no timeouts: each request
//!   of `ha` also registers two tokio timers, the deadline and the try
//!   timeout, once it is found pending).
//!
//! All run `--concurrency` (32) tasks sending requests back to back for
//! `--secs` (1) second per round, on a multi-thread tokio runtime with
//! `--client-threads` (2) workers (the servers run on a runtime of their own, `--server-threads`
//! workers, default 1). Every request's latency (send until the whole body
//! is read) is recorded. The report gives requests per second (over all
//! rounds, the median round and the best round), p50/p90/p99/p99.9
//! latency over all rounds, allocations and bytes allocated per request
//! (counted in a short untimed round of each after the timed ones, so the
//! counters' shared atomics do not slow the timed rounds; the whole
//! process, servers included: the difference to bare is the client's) and
//! CPU µs per request of the client's and the servers' threads (Linux,
//! from /proc), with the ratios to bare (differences, for allocations),
//! then the median and middle half of the per-round rate ratios (each
//! round runs every contender back to back: their spread is the noise
//! of one run's ratio).
//! Each round starts with the next contender. Default run: 12 rounds,
//! about 40 s.
//!
//! ```sh
//! cargo run --release -p ha-benches --bin hyper-loopback
//! cargo run --release -p ha-benches --bin hyper-loopback -- --rounds 10 --secs 5 --concurrency 64
//! # one contender alone, e.g. under `perf record`:
//! cargo run --release -p ha-benches --bin hyper-loopback -- --only ha --rounds 4
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ha_benches::alloc::{allocated_bytes, allocations, CountingAllocator};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Builder;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

#[global_allocator]
static ALLOC: Gated = Gated;

/// Whether allocations are being counted.
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The counting allocator while [`COUNTING`] is set, the system allocator
/// otherwise: the counters are atomics every thread shares, and counting
/// while timing would charge each allocation a contended cache line.
struct Gated;

// SAFETY: every method forwards to an allocator with the caller's arguments
// unchanged; `CountingAllocator` frees with `System`, so memory from either
// may be freed or reallocated by either.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Gated {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                CountingAllocator.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                CountingAllocator.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                CountingAllocator.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

/// What every server answers.
const BODY: &[u8] = b"hello from loopback\n";

struct Args {
    servers: usize,
    rounds: usize,
    secs: f64,
    concurrency: usize,
    server_threads: usize,
    client_threads: usize,
    /// Run only this contender (for profiling).
    only: Option<String>,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            servers: 3,
            rounds: 12,
            secs: 1.0,
            concurrency: 32,
            server_threads: 1,
            client_threads: 2,
            only: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                println!(
                    "hyper-loopback [--servers 3] [--rounds 12] [--secs 1] [--concurrency 32] [--server-threads 1] [--client-threads 2] [--only bare|ha|ha_no_timeouts]"
                );
                std::process::exit(0);
            }
            let value = it.next().unwrap_or_else(|| die(&format!("{flag} needs a value")));
            let num = |v: &str| v.parse::<f64>().unwrap_or_else(|_| die(&format!("{flag}: not a number: {v}")));
            match flag.as_str() {
                "--servers" => args.servers = num(&value) as usize,
                "--rounds" => args.rounds = num(&value) as usize,
                "--secs" => args.secs = num(&value),
                "--concurrency" => args.concurrency = num(&value) as usize,
                "--server-threads" => args.server_threads = num(&value) as usize,
                "--client-threads" => args.client_threads = num(&value) as usize,
                "--only" => args.only = Some(value),
                _ => die(&format!("unknown flag {flag} (try --help)")),
            }
        }
        if args.servers == 0
            || args.rounds == 0
            || args.concurrency == 0
            || args.server_threads == 0
            || args.client_threads == 0
            || args.secs <= 0.0
        {
            die("every value must be positive");
        }
        args
    }
}

fn die(msg: &str) -> ! {
    eprintln!("hyper-loopback: {msg}");
    std::process::exit(2)
}

/// Starts one HTTP/1 server on an ephemeral loopback port; returns its address.
async fn serve() -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// One contender's results over all rounds.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    /// Requests per second of each round.
    rounds: Vec<f64>,
    /// Allocations and bytes allocated by the whole process (servers
    /// included, the same for every contender) while this one ran.
    allocs: u64,
    bytes: u64,
    /// Requests sent while allocations were counted.
    alloc_requests: u64,
    /// CPU time of the client's and the servers' threads while this one ran.
    client_cpu: Duration,
    server_cpu: Duration,
}

/// The quartiles (25%, median, 75%) of the ratios of `a`'s rate to `b`'s,
/// round by round; `None` without a round both ran.
fn paired_ratios(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let mut r: Vec<f64> = a.iter().zip(b).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b).collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(f64::total_cmp);
    let at = |q: f64| r[((r.len() - 1) as f64 * q).round() as usize];
    Some((at(0.25), at(0.5), at(0.75)))
}

/// CPU time (user + system) used so far by this process's threads named
/// `client*` and `server*` (Linux; zero elsewhere), read from /proc at the
/// kernel's tick resolution (usually 10 ms: fine over rounds of a second).
fn thread_cpu() -> (Duration, Duration) {
    const TICK: f64 = 0.01; // USER_HZ is 100 on every Linux
    let (mut client, mut server) = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return (Duration::ZERO, Duration::ZERO) };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // pid (comm) state ... : utime and stime are fields 14 and 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        // Fields after the comm, counted from 3 (state).
        let secs = (ticks(14 - 3) + ticks(15 - 3)) * TICK;
        if comm.starts_with("client") {
            client += secs;
        } else if comm.starts_with("server") {
            server += secs;
        }
    }
    (Duration::from_secs_f64(client), Duration::from_secs_f64(server))
}

impl Tally {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn allocs_per_request(&self) -> f64 {
        self.allocs as f64 / self.alloc_requests.max(1) as f64
    }

    fn bytes_per_request(&self) -> f64 {
        self.bytes as f64 / self.alloc_requests.max(1) as f64
    }

    /// Client CPU µs per request.
    fn client_us(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    /// Server CPU µs per request.
    fn server_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    fn best_rps(&self) -> f64 {
        self.rounds.iter().copied().fold(0.0, f64::max)
    }

    fn median_rps(&self) -> f64 {
        let mut r = self.rounds.clone();
        r.sort_by(f64::total_cmp);
        if r.is_empty() {
            0.0
        } else {
            r[r.len() / 2]
        }
    }

    fn percentile(&self, p: f64) -> u32 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[i]
    }
}

/// Runs `concurrency` tasks sending requests with `send` until `secs`
/// have passed; adds what they saw to `tally`.
async fn round<F, Fut>(tally: &mut Tally, concurrency: usize, secs: f64, send: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let (allocs, bytes) = (allocations(), allocated_bytes());
    let (client_cpu, server_cpu) = thread_cpu();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let send = send.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(64 * 1024);
                let mut errors = 0u64;
                loop {
                    let t0 = Instant::now();
                    if t0 >= until {
                        break;
                    }
                    if send().await {
                        latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut requests = 0;
    for task in tasks {
        let (latencies, errors) = task.await.expect("a load task never panics");
        requests += latencies.len() as u64;
        tally.latencies_us.extend(latencies);
        tally.errors += errors;
    }
    let elapsed = start.elapsed();
    tally.requests += requests;
    tally.elapsed += elapsed;
    tally.rounds.push(requests as f64 / elapsed.as_secs_f64());
    tally.allocs += allocations() - allocs;
    tally.bytes += allocated_bytes() - bytes;
    let (client_now, server_now) = thread_cpu();
    tally.client_cpu += client_now.saturating_sub(client_cpu);
    tally.server_cpu += server_now.saturating_sub(server_cpu);
}

/// Reads a response's whole body; true when it is the expected answer.
async fn complete<E>(res: Result<Response<Incoming>, E>) -> bool {
    match res {
        Ok(res) if res.status().is_success() => {
            res.into_body().collect().await.is_ok_and(|body| body.to_bytes().len() == BODY.len())
        }
        _ => false,
    }
}

fn main() {
    let args = Args::parse();
    let servers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .thread_name("server")
        .enable_all()
        .build()
        .expect("server runtime");
    let addrs: Vec<SocketAddr> = servers_rt
        .block_on(async { futures_util::future::join_all((0..args.servers).map(|_| async { serve().await })).await });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("client")
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(run(&args, &addrs));
    // The servers' accept loops never end: shut their runtime down.
    servers_rt.shutdown_timeout(Duration::from_secs(1));
}

async fn run(args: &Args, addrs: &[SocketAddr]) {
    // The same pool settings for both clients.
    let mut builder = Builder::new(TokioExecutor::new());
    builder.pool_max_idle_per_host(args.concurrency).pool_idle_timeout(Duration::from_secs(90));

    let bare = builder.build_http::<Full<Bytes>>();
    let uris: Arc<[Uri]> = addrs.iter().map(|a| format!("http://{a}/").parse().expect("a valid URI")).collect();
    let next = Arc::new(AtomicUsize::new(0));
    // As a bare user calls it: `request` on the shared client (its future
    // owns what it needs); the stack is cloned per request instead, as its
    // docs show (`stack.clone().oneshot(req)`).
    let send_bare = move || {
        let uri = uris[next.fetch_add(1, Ordering::Relaxed) % uris.len()].clone();
        let req = Request::get(uri).body(Full::new(Bytes::new())).expect("a valid request");
        let res = bare.request(req);
        async move { complete(res.await).await }
    };

    let ha_stack = |timeouts: bool| {
        let mut config = ha::Config::default();
        if !timeouts {
            config.timeouts.attempt = None;
            config.timeouts.request = None;
        }
        let stack = ha::hyper::HyperTransport::<Full<Bytes>>::from_builder(&builder)
            .stack()
            .config(config)
            .endpoints(addrs.iter().copied())
            .build()
            .expect("a valid configuration");
        // Parsed once and cloned per request, as bare's URIs are (from a
        // `String` too, so its clone costs what theirs does).
        let uri: Uri = "http://svc/".to_string().parse().expect("a valid URI");
        move || {
            let mut stack = stack.clone();
            let uri = uri.clone();
            async move {
                let req = Request::get(uri).body(Full::new(Bytes::new())).expect("valid");
                match stack.ready().await {
                    Ok(svc) => complete(svc.call(req).await).await,
                    Err(_) => false,
                }
            }
        }
    };
    let send_ha = ha_stack(true);
    let send_ha_nt = ha_stack(false);

    println!(
        "hyper-loopback: {} servers at {:?}; {} tasks, {} rounds of {} s each, {} client worker(s), {} server worker(s)",
        addrs.len(),
        addrs,
        args.concurrency,
        args.rounds,
        args.secs,
        args.client_threads,
        args.server_threads
    );
    let mut tallies: [Tally; 3] = Default::default();
    let names = ["bare", "ha", "ha_no_timeouts"];
    // Runs contender `i` for `secs` into `tally`.
    macro_rules! run_one {
        ($i:expr, $tally:expr, $secs:expr) => {
            match $i {
                0 => round($tally, args.concurrency, $secs, send_bare.clone()).await,
                1 => round($tally, args.concurrency, $secs, send_ha.clone()).await,
                _ => round($tally, args.concurrency, $secs, send_ha_nt.clone()).await,
            }
        };
    }
    // Warm up: connections opened, code paths and allocator settled.
    let warm = (args.secs / 4.0).max(0.25);
    if let Some(only) = &args.only {
        if !names.contains(&only.as_str()) {
            die(&format!("--only: no contender {only} (bare, ha, ha_no_timeouts)"));
        }
    }
    let wanted = |i: usize| args.only.as_deref().is_none_or(|o| o == names[i]);
    for i in (0..3).filter(|&i| wanted(i)) {
        run_one!(i, &mut Tally::default(), warm);
    }
    for r in 0..args.rounds {
        let before: Vec<u64> = tallies.iter().map(|t| t.requests).collect();
        // Each round starts with another contender.
        let order: Vec<usize> = (0..3).map(|k| (r + k) % 3).collect();
        for &i in order.iter().filter(|&&i| wanted(i)) {
            run_one!(i, &mut tallies[i], args.secs);
        }
        let line: Vec<String> = (0..3)
            .map(|i| format!("{} {:>7.0} rps", names[i], (tallies[i].requests - before[i]) as f64 / args.secs))
            .collect();
        println!("  round {:>2} ({} first): {}", r + 1, names[order[0]], line.join(", "));
    }
    // Allocations, counted in rounds of their own (not timed).
    COUNTING.store(true, Ordering::Relaxed);
    let mut counted: [Tally; 3] = Default::default();
    for i in (0..3).filter(|&i| wanted(i)) {
        run_one!(i, &mut counted[i], warm);
    }
    COUNTING.store(false, Ordering::Relaxed);
    for (t, c) in tallies.iter_mut().zip(&counted) {
        (t.allocs, t.bytes) = (c.allocs, c.bytes);
        t.alloc_requests = c.requests;
    }
    let [mut bare, mut ha, mut ha_nt] = tallies;
    for t in [&mut bare, &mut ha, &mut ha_nt] {
        t.latencies_us.sort_unstable();
    }

    println!(
        "\n{:<20} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>7} {:>8} {:>9} {:>9} {:>6}",
        "",
        "rps",
        "median",
        "best",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "allocs",
        "bytes",
        "client µs",
        "server µs",
        "errors"
    );
    for (name, t) in [("bare", &bare), ("ha", &ha), ("ha_no_timeouts", &ha_nt)] {
        println!(
            "{name:<20} {:>8.0} {:>8.0} {:>8.0} {:>7} {:>7} {:>7} {:>8} {:>7.1} {:>8.0} {:>9.2} {:>9.2} {:>6}",
            t.rps(),
            t.median_rps(),
            t.best_rps(),
            t.percentile(0.5),
            t.percentile(0.9),
            t.percentile(0.99),
            t.percentile(0.999),
            t.allocs_per_request(),
            t.bytes_per_request(),
            t.client_us(),
            t.server_us(),
            t.errors
        );
    }
    // Each round runs every contender back to back, so its ratio cancels
    // what the machine did over longer than a round; their spread says how
    // far one run's ratio can be trusted.
    for (name, t) in [("ha/bare", &ha), ("ha_no_timeouts/bare", &ha_nt)] {
        if let Some((lo, mid, hi)) = paired_ratios(&t.rounds, &bare.rounds) {
            println!("{name:<20} per round: median {mid:.3}, middle half {lo:.3}-{hi:.3}");
        }
    }
    let ratio = |a: u32, b: u32| a as f64 / b.max(1) as f64;
    for (name, t) in [("ha/bare", &ha), ("ha_no_timeouts/bare", &ha_nt)] {
        println!(
            "{name:<20} {:>8.3} {:>8.3} {:>8.3} {:>7.3} {:>7.3} {:>7.3} {:>8.3} {:>7.1} {:>8.0} {:>9.3} {:>9.3}",
            t.rps() / bare.rps(),
            t.median_rps() / bare.median_rps(),
            t.best_rps() / bare.best_rps(),
            ratio(t.percentile(0.5), bare.percentile(0.5)),
            ratio(t.percentile(0.9), bare.percentile(0.9)),
            ratio(t.percentile(0.99), bare.percentile(0.99)),
            ratio(t.percentile(0.999), bare.percentile(0.999)),
            t.allocs_per_request() - bare.allocs_per_request(),
            t.bytes_per_request() - bare.bytes_per_request(),
            t.client_us() / bare.client_us(),
            t.server_us() / bare.server_us(),
        );
    }
}
