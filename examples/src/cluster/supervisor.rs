//! Runs the instances as child processes: the binary re-executed with the
//! role `instance`, each in its own process group (a Ctrl-C at the terminal
//! reaches the demo, which then stops them in order).
//!
//! Every child is reaped by a watcher task; a child that exits without
//! being asked to is reported. Each child's stdin is a pipe the supervisor
//! holds, and the child exits when it closes, so even a demo killed with
//! SIGKILL leaves no instance behind (a frozen one goes as soon as it is
//! thawed). Shutdown thaws frozen children, closes their stdin, and kills
//! whoever has not exited within a bound.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::instance::InstanceArgs;
use super::topology::Topology;

/// How long a child may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a child may take to exit once asked.
const EXIT_TIMEOUT: Duration = Duration::from_secs(3);
/// Lines of a child's stderr kept for reports.
const STDERR_TAIL: usize = 12;

/// A child's state as the supervisor knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    /// Not started yet.
    NotStarted,
    /// Running.
    Running,
    /// Stopped by SIGSTOP.
    Frozen,
    /// Killed by the script (or at shutdown).
    Killed,
    /// Exited without being asked to.
    Died,
}

impl ProcState {
    /// A short word for the view.
    pub fn word(self) -> &'static str {
        match self {
            ProcState::NotStarted => "-",
            ProcState::Running => "running",
            ProcState::Frozen => "frozen",
            ProcState::Killed => "killed",
            ProcState::Died => "DIED",
        }
    }
}

/// Something the supervisor reports on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnexpectedExit {
    /// Which instance.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// How it ended (`exit status: 3`, `signal: 9`).
    pub status: String,
    /// The last lines it wrote to stderr.
    pub stderr: Vec<String>,
}

struct Slot {
    pid: Option<u32>,
    stdin: Option<ChildStdin>,
    kill: Option<oneshot::Sender<()>>,
    exited: Option<oneshot::Receiver<Option<ExitStatus>>>,
    expected: Arc<AtomicBool>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            pid: None,
            stdin: None,
            kill: None,
            exited: None,
            expected: Arc::new(AtomicBool::new(false)),
            stderr: Arc::default(),
        }
    }
}

/// Starts, signals, restarts and stops the instances.
pub struct Supervisor {
    exe: PathBuf,
    topology: Arc<Topology>,
    slots: Vec<Slot>,
    states: Arc<Mutex<Vec<ProcState>>>,
    pids: Vec<u32>,
    deaths: mpsc::UnboundedSender<UnexpectedExit>,
    readers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("pids", &self.pids).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Supervisor {
    /// A supervisor of `topology`'s instances, run as `exe instance ...`;
    /// unexpected exits go to `deaths`.
    pub fn new(exe: PathBuf, topology: Arc<Topology>, deaths: mpsc::UnboundedSender<UnexpectedExit>) -> Supervisor {
        let n = topology.instances.len();
        Supervisor {
            exe,
            topology,
            slots: (0..n).map(|_| Slot::empty()).collect(),
            states: Arc::new(Mutex::new(vec![ProcState::NotStarted; n])),
            pids: Vec::new(),
            deaths,
            readers: Vec::new(),
        }
    }

    /// The process states, shared with the view.
    pub fn states(&self) -> Arc<Mutex<Vec<ProcState>>> {
        self.states.clone()
    }

    /// Every process id this supervisor ever started.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    fn set_state(&self, i: usize, s: ProcState) {
        lock(&self.states)[i] = s;
    }

    fn state(&self, i: usize) -> ProcState {
        lock(&self.states)[i]
    }

    fn name(&self, i: usize) -> &str {
        &self.topology.instances[i].name
    }

    /// Starts instance `i` and waits until it says it is ready (its ports
    /// bound, its membership node up).
    pub async fn start(&mut self, i: usize) -> Result<u32, String> {
        if matches!(self.state(i), ProcState::Running | ProcState::Frozen) {
            return Err(format!("{} is already running", self.name(i)));
        }
        let spec = &self.topology.instances[i];
        let mut seeds: Vec<_> = self.topology.instances.iter().filter(|o| o.index != i).map(|o| o.gossip).collect();
        seeds.push(self.topology.client_gossip);
        let args = InstanceArgs {
            name: spec.name.clone(),
            zone: spec.zone.clone(),
            service: spec.service,
            admin: spec.admin,
            gossip: spec.gossip,
            seeds,
        };
        let name = spec.name.clone();
        let mut cmd = Command::new(&self.exe);
        cmd.arg("instance")
            .args(args.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {name} ({}): {e}", self.exe.display()))?;
        let pid = child.id().ok_or_else(|| format!("{name} exited at once"))?;
        self.pids.push(pid);

        let slot = Slot::empty();
        let stderr_tail = slot.stderr.clone();
        let stderr = child.stderr.take();
        let stderr_reader = tokio::spawn(async move {
            let Some(stderr) = stderr else { return };
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = lock(&stderr_tail);
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let Some(stdout) = child.stdout.take() else {
            return Err(format!("{name}: no stdout pipe"));
        };
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
        let ok = matches!(&ready, Ok(Ok(Some(line))) if line.starts_with("ready"));
        if !ok {
            let _ = child.start_kill();
            let status = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), stderr_reader).await;
            let tail: Vec<String> = lock(&slot.stderr).iter().cloned().collect();
            let why = match ready {
                Err(_) => format!("not ready within {READY_TIMEOUT:?}"),
                _ => match status {
                    Ok(Ok(s)) => format!("exited ({s})"),
                    _ => "exited".to_owned(),
                },
            };
            self.set_state(i, ProcState::Died);
            return Err(format!("instance {name} did not start: {why}: {}", tail.join(" | ")));
        }
        // Nothing more is expected on stdout; keep draining it so the child never blocks.
        self.readers.push(tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} }));
        self.readers.push(stderr_reader);

        let stdin = child.stdin.take();
        let (kill_tx, kill_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let expected = slot.expected.clone();
        let states = self.states.clone();
        let deaths = self.deaths.clone();
        let tail = slot.stderr.clone();
        let watcher_name = name.clone();
        tokio::spawn(async move {
            let status = watch(&mut child, kill_rx).await;
            let asked = expected.load(Ordering::SeqCst);
            lock(&states)[i] = if asked { ProcState::Killed } else { ProcState::Died };
            if !asked {
                // Give the stderr reader a moment to collect the last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = deaths.send(UnexpectedExit {
                    name: watcher_name,
                    pid,
                    status: status.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                    stderr: lock(&tail).iter().cloned().collect(),
                });
            }
            let _ = done_tx.send(status);
        });
        self.slots[i] = Slot { pid: Some(pid), stdin, kill: Some(kill_tx), exited: Some(done_rx), ..slot };
        self.set_state(i, ProcState::Running);
        Ok(pid)
    }

    /// Sends `signal` to instance `i`.
    fn signal(&self, i: usize, signal: Signal) -> Result<(), String> {
        let pid = self.slots[i].pid.ok_or_else(|| format!("{} is not running", self.name(i)))?;
        let pid = i32::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
        kill(Pid::from_raw(pid), signal).map_err(|e| format!("cannot send {signal} to {}: {e}", self.name(i)))
    }

    /// Freezes instance `i` (SIGSTOP).
    pub fn freeze(&mut self, i: usize) -> Result<(), String> {
        if self.state(i) != ProcState::Running {
            return Err(format!("{} is {}, not running", self.name(i), self.state(i).word()));
        }
        self.signal(i, Signal::SIGSTOP)?;
        self.set_state(i, ProcState::Frozen);
        Ok(())
    }

    /// Thaws instance `i` (SIGCONT).
    pub fn thaw(&mut self, i: usize) -> Result<(), String> {
        if self.state(i) != ProcState::Frozen {
            return Err(format!("{} is {}, not frozen", self.name(i), self.state(i).word()));
        }
        self.signal(i, Signal::SIGCONT)?;
        self.set_state(i, ProcState::Running);
        Ok(())
    }

    /// Kills instance `i` (SIGKILL) and waits until it is reaped, so its
    /// ports are free.
    pub async fn kill(&mut self, i: usize) -> Result<(), String> {
        if !matches!(self.state(i), ProcState::Running | ProcState::Frozen) {
            return Err(format!("{} is {}, not running", self.name(i), self.state(i).word()));
        }
        let slot = &mut self.slots[i];
        slot.expected.store(true, Ordering::SeqCst);
        if let Some(tx) = slot.kill.take() {
            let _ = tx.send(());
        }
        let reaped = match slot.exited.take() {
            Some(rx) => tokio::time::timeout(EXIT_TIMEOUT, rx).await.is_ok(),
            None => true,
        };
        slot.pid = None;
        slot.stdin = None;
        self.set_state(i, ProcState::Killed);
        if reaped {
            Ok(())
        } else {
            Err(format!("{} was sent SIGKILL but not reaped within {EXIT_TIMEOUT:?}", self.name(i)))
        }
    }

    /// Stops every child: frozen ones are thawed, each stdin is closed (the
    /// child leaves the membership and exits), and any child still there
    /// after a bound is killed. Returns the names of children that could
    /// not be reaped.
    pub async fn shutdown(&mut self) -> Vec<String> {
        for i in 0..self.slots.len() {
            if self.state(i) == ProcState::Frozen {
                let _ = self.signal(i, Signal::SIGCONT);
            }
            let slot = &mut self.slots[i];
            slot.expected.store(true, Ordering::SeqCst);
            slot.stdin = None;
        }
        let mut stuck = Vec::new();
        for i in 0..self.slots.len() {
            let Some(mut rx) = self.slots[i].exited.take() else { continue };
            let exited = tokio::time::timeout(EXIT_TIMEOUT, &mut rx).await.is_ok();
            if !exited {
                if let Some(tx) = self.slots[i].kill.take() {
                    let _ = tx.send(());
                }
                if tokio::time::timeout(EXIT_TIMEOUT, rx).await.is_err() {
                    stuck.push(self.name(i).to_owned());
                }
            }
            self.slots[i].pid = None;
            self.set_state(i, ProcState::Killed);
        }
        for r in self.readers.drain(..) {
            r.abort();
        }
        stuck
    }
}

/// Waits for the child to exit, killing it first if asked (or if the
/// supervisor drops the request channel).
async fn watch(child: &mut Child, kill_rx: oneshot::Receiver<()>) -> Option<ExitStatus> {
    tokio::select! {
        status = child.wait() => status.ok(),
        _ = kill_rx => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    }
}
