//! The tokio driver: runs the [`Swim`] core over UDP, with push-pull state
//! sync over TCP, and hands out members, events and a tower `Discover`.
//!
//! One task owns the core and the sockets; the [`Cluster`] handle talks to
//! it through a channel, so nothing is locked. Each push-pull exchange runs
//! in a task of its own and hands its bytes back to the core's task.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{FutureExt, Stream};
use ha_core::rng::FastRng;
use ha_core::{Events, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::discover::MemberDiscover;
use crate::error::{ConfigError, SizeError};
use crate::keyring::{Keyring, KEY_LEN};
use crate::member::{Member, MembershipEvent, Metadata};
use crate::swim::{Counters, Swim};
use crate::wire::MAX_DATAGRAM;

/// How long one push-pull exchange may take before it is abandoned.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a probe's stream check may take to connect (a refusal on a LAN takes one round trip).
const STREAM_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Stream checks running at once; more are dropped and counted.
const MAX_CHECKS: usize = 16;
/// How long a peer may take to send its state and read ours on an inbound connection.
const INBOUND_TIMEOUT: Duration = Duration::from_secs(5);
/// Inbound push-pull connections open at once; a new one closes the oldest.
const MAX_INBOUND: usize = 16;
/// Outbound push-pull exchanges running at once; more are dropped and counted.
const MAX_OUTBOUND: usize = 8;
/// The listener pauses this long after an accept error, doubling up to a second.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why the cluster could not start or a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClusterError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// Binding the UDP or TCP socket failed.
    Bind(std::io::Error),
    /// No seed answered a state sync (the node keeps retrying in the background).
    JoinFailed,
    /// The cluster task has stopped.
    Stopped,
    /// A broadcast payload or metadata over its limit.
    TooLarge(SizeError),
    /// Another node already answers to this node's name, at this address.
    DuplicateName(SocketAddr),
    /// A key operation on a node started without a keyring.
    NotEncrypted,
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Config(e) => e.fmt(f),
            ClusterError::Bind(e) => write!(f, "cannot bind the gossip sockets: {e}"),
            ClusterError::JoinFailed => f.write_str("no seed answered"),
            ClusterError::Stopped => f.write_str("the cluster task has stopped"),
            ClusterError::TooLarge(e) => write!(f, "too large: {e}"),
            ClusterError::DuplicateName(a) => write!(f, "another node at {a} already uses this name"),
            ClusterError::NotEncrypted => f.write_str("this node has no keyring"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Config(e) => Some(e),
            ClusterError::Bind(e) => Some(e),
            ClusterError::TooLarge(e) => Some(e),
            _ => None,
        }
    }
}

/// Configures and starts a [`Cluster`] node.
#[derive(Debug)]
pub struct ClusterBuilder {
    config: Config,
    name: Arc<str>,
    bind: SocketAddr,
    advertise: Option<SocketAddr>,
    metadata: Metadata,
    keyring: Option<Keyring>,
    events: Events,
    incarnation: u64,
}

impl ClusterBuilder {
    /// The protocol configuration (default: [`Config::lan`]).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Where to bind UDP and TCP (port 0 picks a free port, the same for both).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The address other members reach this node at, when it differs from the bound one.
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// The metadata published from the start.
    pub fn metadata(mut self, meta: Metadata) -> Self {
        self.metadata = meta;
        self
    }

    /// Encrypts and authenticates every packet with this keyring.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Where state changes go (always to `tracing` as well).
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The incarnation to start at; a restarted node may pass one above its
    /// last (it refutes its own death anyway, one step later).
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = incarnation;
        self
    }

    /// Binds the sockets and starts the node's task (alone until [`Cluster::join`]).
    ///
    /// Fails with a typed error on an invalid config or name (empty or over
    /// 255 bytes), metadata over `max_metadata`, or an unspecified bind
    /// address (`0.0.0.0`, `::`) without an [`advertise`](Self::advertise)
    /// address that peers can reach.
    pub async fn start(self) -> Result<Cluster, ClusterError> {
        self.config.validate().map_err(ClusterError::Config)?;
        let unspecified = |a: &SocketAddr| a.ip().is_unspecified() || a.port() == 0;
        match self.advertise {
            None if self.bind.ip().is_unspecified() => {
                let reason = "required when binding an unspecified address (0.0.0.0 or ::)";
                return Err(ClusterError::Config(ConfigError::new("advertise", reason)));
            }
            Some(a) if unspecified(&a) => {
                let reason = "must be a reachable address with a port";
                return Err(ClusterError::Config(ConfigError::new("advertise", reason)));
            }
            _ => {}
        }
        let max_metadata = self.config.max_metadata;
        let size = self.metadata.encoded_len();
        if size > max_metadata {
            return Err(ClusterError::TooLarge(SizeError { size, max: max_metadata }));
        }
        let max_state = self.config.max_state_bytes;
        let (udp, tcp) = bind_pair(self.bind).await.map_err(ClusterError::Bind)?;
        let local = udp.local_addr().map_err(ClusterError::Bind)?;
        let addr = self.advertise.unwrap_or(local);
        let now = Instant::now();
        let mut seed = FastRng::from_entropy();
        let mut swim = Swim::new(self.config, self.name.clone(), addr, now, seed.next_u64())
            .map_err(ClusterError::Config)?
            .with_incarnation(self.incarnation)
            .with_metadata(self.metadata)
            .with_events(self.events);
        if let Some(k) = self.keyring {
            swim = swim.with_keyring(k);
        }
        let max_broadcast = swim.max_broadcast_len();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (view_tx, view_rx) = watch::channel(View::default());
        let driver = Driver {
            swim,
            udp: Arc::new(udp),
            tcp,
            cmd_rx,
            view: view_tx,
            subscribers: Vec::new(),
            user_subscribers: Vec::new(),
            sync_tx: None,
            join_waiters: Vec::new(),
            joined: Vec::new(),
            io: Arc::new(IoCounters::default()),
            inbound: VecDeque::new(),
            next_conn: 0,
            outbound: 0,
            accept_backoff: ACCEPT_BACKOFF,
            accept_paused: None,
            max_state,
        };
        let name = self.name.clone();
        let task = tokio::spawn(async move {
            // A panic must not leave a node that looks alive but no longer
            // answers: the task ends (so `changed`, `join`, ... report
            // `Stopped` and `is_running` is false), and says why.
            if let Err(panic) = AssertUnwindSafe(driver.run()).catch_unwind().await {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(target: "ha::membership", %name, panic = %why, "membership task panicked and stopped");
            }
        });
        Ok(Cluster {
            name: self.name,
            addr,
            cmd: cmd_tx,
            view: view_rx,
            task: Arc::new(TaskGuard(task)),
            max_broadcast,
            max_metadata,
        })
    }
}

#[derive(Debug, Clone, Default)]
struct View {
    members: Arc<Vec<Member>>,
    counters: Counters,
    health: u32,
}

#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Command {
    Join(Vec<SocketAddr>, oneshot::Sender<Result<(), ClusterError>>),
    Leave(oneshot::Sender<()>),
    SetMetadata(Metadata),
    Broadcast(Vec<u8>),
    Subscribe(mpsc::UnboundedSender<MembershipEvent>),
    SubscribeUser(mpsc::UnboundedSender<Vec<u8>>),
    Key(KeyOp, [u8; KEY_LEN], oneshot::Sender<Result<bool, ClusterError>>),
    Crash,
}

#[derive(Debug, Clone, Copy)]
enum KeyOp {
    Add,
    Use,
    Remove,
}

/// A running member of a cluster. Cheap to clone; the node stops (without
/// leaving) when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Cluster {
    name: Arc<str>,
    addr: SocketAddr,
    cmd: mpsc::UnboundedSender<Command>,
    view: watch::Receiver<View>,
    task: Arc<TaskGuard>,
    max_broadcast: usize,
    max_metadata: usize,
}

/// How often a node that is alone resolves its seed names again.
const SEED_REFRESH: Duration = Duration::from_secs(5);

/// The addresses `names` (`host:port`) resolve to now; names that do not
/// resolve are logged and skipped.
async fn resolve_seeds(names: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for name in names {
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::warn!(target: "ha::membership", seed = %name, error = %e, "seed does not resolve"),
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Cluster {
    /// A builder for a node named `name` (unique in the cluster), bound to 127.0.0.1 on a free port.
    pub fn builder(name: impl Into<Arc<str>>) -> ClusterBuilder {
        ClusterBuilder {
            config: Config::lan(),
            name: name.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            metadata: Metadata::default(),
            keyring: None,
            events: Events::new(),
            incarnation: 0,
        }
    }

    /// This node's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The address this node gossips at (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Joins through `seeds`: resolves once one of them answered a state sync,
    /// or fails when none did (the node keeps retrying them in the background),
    /// or with [`ClusterError::DuplicateName`] when another node answers to
    /// this node's name.
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<(), ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Join(seeds.to_vec(), tx)).map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Joins through seeds given as `host:port` names (or addresses):
    /// resolved now, and again every few seconds for as long as this node is
    /// alone, so a seed that moves (a DNS name, a Kubernetes service) is
    /// still found after a restart of the whole cluster. Resolves like
    /// [`Cluster::join`]; fails with [`ClusterError::JoinFailed`] when no
    /// name resolves now (the node keeps trying them in the background).
    pub async fn join_hosts<S: AsRef<str>>(&self, seeds: &[S]) -> Result<(), ClusterError> {
        let names: Vec<String> = seeds.iter().map(|s| s.as_ref().to_owned()).collect();
        let addrs = resolve_seeds(&names).await;
        let (cmd, view, me) = (self.cmd.clone(), self.view.clone(), self.name.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SEED_REFRESH).await;
                if cmd.is_closed() {
                    return;
                }
                let alone = !view.borrow().members.iter().any(|m| m.state.is_live() && m.name != me);
                if alone {
                    let addrs = resolve_seeds(&names).await;
                    if !addrs.is_empty() {
                        let (tx, _ignored) = oneshot::channel();
                        if cmd.send(Command::Join(addrs, tx)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        if addrs.is_empty() {
            return Err(ClusterError::JoinFailed);
        }
        self.join(&addrs).await
    }

    /// Leaves gracefully: the others learn it at once. The node keeps
    /// answering until dropped, so the news spreads.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Leave(tx)).map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)
    }

    /// Publishes new metadata; fails with [`ClusterError::TooLarge`] when its
    /// encoding exceeds `max_metadata` (peers would drop it).
    pub fn set_metadata(&self, meta: Metadata) -> Result<(), ClusterError> {
        let size = meta.encoded_len();
        if size > self.max_metadata {
            return Err(ClusterError::TooLarge(SizeError { size, max: self.max_metadata }));
        }
        self.cmd.send(Command::SetMetadata(meta)).map_err(|_| ClusterError::Stopped)
    }

    /// Sends `payload` to every member, by gossip (best effort); fails with
    /// [`ClusterError::TooLarge`] above [`Cluster::max_broadcast_len`].
    pub fn broadcast(&self, payload: Vec<u8>) -> Result<(), ClusterError> {
        if payload.len() > self.max_broadcast {
            return Err(ClusterError::TooLarge(SizeError { size: payload.len(), max: self.max_broadcast }));
        }
        self.cmd.send(Command::Broadcast(payload)).map_err(|_| ClusterError::Stopped)
    }

    async fn key_op(&self, op: KeyOp, key: [u8; KEY_LEN]) -> Result<bool, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Key(op, key, tx)).map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Adds a key that this node accepts from now on (step 1 of a rotation:
    /// add the new key on every node).
    pub async fn add_key(&self, key: [u8; KEY_LEN]) -> Result<(), ClusterError> {
        self.key_op(KeyOp::Add, key).await.map(|_| ())
    }

    /// Encrypts with `key` from now on, adding it if needed (step 2, once
    /// every node holds it).
    pub async fn use_key(&self, key: [u8; KEY_LEN]) -> Result<(), ClusterError> {
        self.key_op(KeyOp::Use, key).await.map(|_| ())
    }

    /// Stops accepting `key` (step 3, once no node encrypts with it); false
    /// when it was not held or is the primary.
    pub async fn remove_key(&self, key: [u8; KEY_LEN]) -> Result<bool, ClusterError> {
        self.key_op(KeyOp::Remove, key).await
    }

    /// The largest payload [`Cluster::broadcast`] accepts (it must fit one datagram).
    pub fn max_broadcast_len(&self) -> usize {
        self.max_broadcast
    }

    /// False once the node's task has stopped (every handle dropped, or a
    /// bug made it panic): its member list is then frozen and stale.
    pub fn is_running(&self) -> bool {
        !self.task.0.is_finished()
    }

    /// Makes the node's task panic, to test that a crashed node is visible as stopped.
    #[doc(hidden)]
    pub fn crash_for_tests(&self) {
        let _ = self.cmd.send(Command::Crash);
    }

    /// The live members (alive or suspect), this node included.
    pub fn members(&self) -> Vec<Member> {
        self.view.borrow().members.iter().filter(|m| m.state.is_live()).cloned().collect()
    }

    /// Every member known, dead and departed ones included.
    pub fn all_members(&self) -> Arc<Vec<Member>> {
        self.view.borrow().members.clone()
    }

    /// The protocol counters.
    pub fn counters(&self) -> Counters {
        self.view.borrow().counters
    }

    /// Lifeguard's local health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.view.borrow().health
    }

    /// Waits until the member list changes.
    pub async fn changed(&mut self) -> Result<(), ClusterError> {
        self.view.changed().await.map_err(|_| ClusterError::Stopped)
    }

    /// Every membership change from now on, starting with a `Joined` for each
    /// member live at the time of the call.
    pub fn events(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        // A stopped task closes the stream at once.
        let _ = self.cmd.send(Command::Subscribe(tx));
        EventStream { rx, _task: self.task.clone() }
    }

    /// Every user broadcast received from other members from now on.
    pub fn user_messages(&self) -> UserMessages {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.cmd.send(Command::SubscribeUser(tx));
        UserMessages { rx, _task: self.task.clone() }
    }

    /// The live members other than this node as a tower `Discover`: a service
    /// built by `make_service` is inserted for each member that becomes alive
    /// and removed when it dies or leaves.
    pub fn discover<S, F>(&self, make_service: F) -> MemberDiscover<S, F>
    where
        F: FnMut(&Member) -> S,
    {
        MemberDiscover::new(self.events(), self.name.clone(), make_service)
    }
}

/// A stream of [`MembershipEvent`]s; see [`Cluster::events`].
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<MembershipEvent>,
    _task: Arc<TaskGuard>,
}

impl Stream for EventStream {
    type Item = MembershipEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<MembershipEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// A stream of user broadcasts; see [`Cluster::user_messages`].
#[derive(Debug)]
pub struct UserMessages {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    _task: Arc<TaskGuard>,
}

impl Stream for UserMessages {
    type Item = Vec<u8>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        self.rx.poll_recv(cx)
    }
}

enum SyncMsg {
    /// A peer's state arrived (as answer, or as request with a reply channel).
    State { bytes: Vec<u8>, reply: Option<oneshot::Sender<Vec<u8>>>, from: SocketAddr },
    /// An outgoing sync failed.
    Failed(SocketAddr),
    /// An inbound connection closed.
    Closed(u64),
    /// A probe's stream check found the target's port closed.
    Refused(ha_swim::StreamCheck),
}

/// What the IO side drops, counted from its tasks.
#[derive(Debug, Default)]
struct IoCounters {
    dropped_connections: AtomicU64,
    accept_errors: AtomicU64,
    dropped_state_size: AtomicU64,
    dropped_syncs: AtomicU64,
    dropped_checks: AtomicU64,
    /// Stream checks running now.
    checks: AtomicUsize,
}

impl IoCounters {
    fn add_to(&self, c: &mut Counters) {
        c.dropped_connections += self.dropped_connections.load(Ordering::Relaxed);
        c.accept_errors += self.accept_errors.load(Ordering::Relaxed);
        c.dropped_state_size += self.dropped_state_size.load(Ordering::Relaxed);
        c.dropped_syncs += self.dropped_syncs.load(Ordering::Relaxed);
        c.dropped_checks += self.dropped_checks.load(Ordering::Relaxed);
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A `join` call waiting for any of its seeds to answer.
type JoinWaiter = (oneshot::Sender<Result<(), ClusterError>>, Vec<SocketAddr>);

struct Driver {
    swim: Swim,
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    view: watch::Sender<View>,
    subscribers: Vec<mpsc::UnboundedSender<MembershipEvent>>,
    user_subscribers: Vec<mpsc::UnboundedSender<Vec<u8>>>,
    sync_tx: Option<mpsc::UnboundedSender<SyncMsg>>,
    join_waiters: Vec<JoinWaiter>,
    /// Joins a seed answered, waiting for a name-conflict probe to finish.
    joined: Vec<oneshot::Sender<Result<(), ClusterError>>>,
    io: Arc<IoCounters>,
    /// Open inbound connections, oldest first.
    inbound: VecDeque<(u64, tokio::task::AbortHandle)>,
    next_conn: u64,
    outbound: usize,
    accept_backoff: Duration,
    accept_paused: Option<Instant>,
    max_state: usize,
}

impl Driver {
    async fn run(mut self) {
        let (sync_tx, mut sync_rx) = mpsc::unbounded_channel();
        self.sync_tx = Some(sync_tx);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        self.publish();
        loop {
            let deadline = self.swim.poll_timeout();
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => {
                    if let Ok((len, from)) = r {
                        self.swim.handle(Instant::now(), from, &buf[..len]);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.swim.tick(Instant::now());
                }
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    // Every handle is gone: stop without leaving.
                    None => return,
                },
                Some(msg) = sync_rx.recv() => self.sync_msg(msg),
                accepted = self.tcp.accept(), if self.accept_paused.is_none() => self.accepted(accepted),
                _ = sleep_until_opt(self.accept_paused), if self.accept_paused.is_some() => {
                    self.accept_paused = None;
                }
            }
            self.flush().await;
        }
    }

    fn accepted(&mut self, accepted: std::io::Result<(TcpStream, SocketAddr)>) {
        match accepted {
            Ok((stream, from)) => {
                self.accept_backoff = ACCEPT_BACKOFF;
                if self.inbound.len() >= MAX_INBOUND {
                    // Close the oldest: a legitimate exchange takes milliseconds,
                    // so stalled connections cannot crowd out new ones.
                    if let Some((_, old)) = self.inbound.pop_front() {
                        old.abort();
                    }
                    IoCounters::bump(&self.io.dropped_connections);
                    tracing::debug!(target: "ha::membership", %from, "too many inbound connections: closed the oldest");
                }
                let id = self.next_conn;
                self.next_conn += 1;
                let tx = self.sync_tx.clone().expect("set in run");
                let (io, max) = (self.io.clone(), self.max_state);
                let task = tokio::spawn(async move {
                    serve_sync(stream, from, tx.clone(), &io, max).await;
                    let _ = tx.send(SyncMsg::Closed(id));
                });
                self.inbound.push_back((id, task.abort_handle()));
            }
            Err(e) => {
                // Out of descriptors, most likely: pause rather than spin.
                IoCounters::bump(&self.io.accept_errors);
                tracing::debug!(target: "ha::membership", error = %e, pause = ?self.accept_backoff, "accept failed");
                self.accept_paused = Some(Instant::now() + self.accept_backoff);
                self.accept_backoff = (self.accept_backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Join(seeds, tx) => {
                let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != self.swim_addr()).collect();
                if seeds.is_empty() {
                    let _ = tx.send(Err(ClusterError::JoinFailed));
                    return;
                }
                self.swim.join(&seeds);
                self.join_waiters.push((tx, seeds));
            }
            Command::Leave(tx) => {
                self.swim.leave(now);
                let _ = tx.send(());
            }
            Command::SetMetadata(m) => {
                if let Err(e) = self.swim.set_metadata(now, m) {
                    tracing::debug!(target: "ha::membership", error = %e, "metadata refused");
                }
            }
            Command::Broadcast(p) => {
                if let Err(e) = self.swim.broadcast_user(p) {
                    tracing::debug!(target: "ha::membership", error = %e, "broadcast refused");
                }
            }
            Command::Key(op, key, tx) => {
                let r = match self.swim.keyring_mut() {
                    None => Err(ClusterError::NotEncrypted),
                    Some(ring) => Ok(match op {
                        KeyOp::Add => {
                            ring.add(key);
                            true
                        }
                        KeyOp::Use => {
                            ring.use_key(key);
                            true
                        }
                        KeyOp::Remove => ring.remove(&key),
                    }),
                };
                tracing::info!(target: "ha::membership", ?op, ok = ?r.as_ref().ok(), "keyring changed");
                let _ = tx.send(r);
            }
            Command::Crash => panic!("crash requested by a test"),
            Command::Subscribe(tx) => {
                for m in self.swim.members().filter(|m| m.state.is_live()) {
                    let _ = tx.send(MembershipEvent::Joined(m.clone()));
                }
                self.subscribers.push(tx);
            }
            Command::SubscribeUser(tx) => self.user_subscribers.push(tx),
        }
    }

    fn swim_addr(&self) -> SocketAddr {
        self.swim.members().next().map(|m| m.addr).expect("the node itself is always a member")
    }

    fn sync_msg(&mut self, msg: SyncMsg) {
        let now = Instant::now();
        match msg {
            SyncMsg::State { bytes, reply: Some(reply), .. } => {
                // A peer's request: merge, answer with our state.
                if self.swim.handle_state(now, &bytes).is_ok() {
                    let _ = reply.send(self.swim.local_state(false));
                }
            }
            SyncMsg::State { bytes, reply: None, from } => {
                self.outbound = self.outbound.saturating_sub(1);
                let ok = self.swim.handle_state(now, &bytes).is_ok();
                if ok {
                    // Answered: the join completes once no probe is checking
                    // for another node with this node's name.
                    self.joined.extend(self.join_waiters.drain(..).map(|(tx, _)| tx));
                } else {
                    self.sync_failed(from);
                }
            }
            SyncMsg::Failed(addr) => {
                self.outbound = self.outbound.saturating_sub(1);
                self.sync_failed(addr);
            }
            SyncMsg::Closed(id) => self.inbound.retain(|(i, _)| *i != id),
            SyncMsg::Refused(check) => self.swim.stream_refused(now, check),
        }
    }

    fn settle_joins(&mut self) {
        if self.joined.is_empty() || self.swim.conflict_pending() {
            return;
        }
        let conflict = self.swim.name_conflict();
        for tx in self.joined.drain(..) {
            let _ = tx.send(match conflict {
                Some(a) => Err(ClusterError::DuplicateName(a)),
                None => Ok(()),
            });
        }
    }

    fn sync_failed(&mut self, addr: SocketAddr) {
        let mut i = 0;
        while i < self.join_waiters.len() {
            self.join_waiters[i].1.retain(|s| *s != addr);
            if self.join_waiters[i].1.is_empty() {
                let (tx, _) = self.join_waiters.swap_remove(i);
                let _ = tx.send(Err(ClusterError::JoinFailed));
            } else {
                i += 1;
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.swim.poll_transmit() {
            if let Err(e) = self.udp.send_to(&t.payload, t.to).await {
                tracing::debug!(target: "ha::membership", to = %t.to, error = %e, "datagram not sent");
            }
        }
        while let Some(to) = self.swim.poll_sync() {
            if self.outbound >= MAX_OUTBOUND {
                IoCounters::bump(&self.io.dropped_syncs);
                tracing::debug!(target: "ha::membership", %to, "too many state syncs running: not opened");
                self.sync_failed(to);
                continue;
            }
            self.outbound += 1;
            let state = self.swim.local_state(true);
            let tx = self.sync_tx.clone().expect("set in run");
            let (io, max) = (self.io.clone(), self.max_state);
            tokio::spawn(async move {
                let r = tokio::time::timeout(SYNC_TIMEOUT, exchange(to, &state, &io, max)).await;
                let _ = match r {
                    Ok(Ok(bytes)) => tx.send(SyncMsg::State { bytes, reply: None, from: to }),
                    _ => tx.send(SyncMsg::Failed(to)),
                };
            });
        }
        while let Some(check) = self.swim.poll_stream_check() {
            // Suspicions gossiped by others ask for checks too: a bound keeps
            // a flood of forged ones from spending sockets.
            if self.io.checks.load(Ordering::Relaxed) >= MAX_CHECKS {
                IoCounters::bump(&self.io.dropped_checks);
                continue;
            }
            self.io.checks.fetch_add(1, Ordering::Relaxed);
            let (tx, io) = (self.sync_tx.clone().expect("set in run"), self.io.clone());
            // Only a refusal is news; an open connection is closed at once.
            tokio::spawn(async move {
                let r = tokio::time::timeout(STREAM_CHECK_TIMEOUT, TcpStream::connect(check.to)).await;
                io.checks.fetch_sub(1, Ordering::Relaxed);
                if let Ok(Err(e)) = r {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        let _ = tx.send(SyncMsg::Refused(check));
                    }
                }
            });
        }
        let mut changed = false;
        while let Some(ev) = self.swim.poll_event() {
            changed = true;
            self.subscribers.retain(|s| s.send(ev.clone()).is_ok());
        }
        while let Some(p) = self.swim.poll_user() {
            self.user_subscribers.retain(|s| s.send(p.clone()).is_ok());
        }
        self.settle_joins();
        let counters = self.counters();
        if changed || self.view.borrow().counters != counters {
            self.publish();
        }
    }

    fn counters(&self) -> Counters {
        let mut c = self.swim.counters();
        self.io.add_to(&mut c);
        c
    }

    fn publish(&mut self) {
        let members: Vec<Member> = self.swim.members().cloned().collect();
        let view = View { members: Arc::new(members), counters: self.counters(), health: self.swim.health_score() };
        self.view.send_replace(view);
    }
}

async fn write_frame(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    s.write_all(bytes).await?;
    s.flush().await
}

async fn sleep_until_opt(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Reads one length-prefixed state of at most `max` bytes.
async fn read_frame(s: &mut TcpStream, io: &IoCounters, max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        IoCounters::bump(&io.dropped_state_size);
        tracing::debug!(target: "ha::membership", len, max, "state too large: connection closed");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "state too large"));
    }
    // Read in bounded steps: a lying length costs no more than what actually arrives.
    let mut out = Vec::with_capacity(len.min(64 * 1024));
    let mut chunk = [0u8; 16 * 1024];
    while out.len() < len {
        let want = (len - out.len()).min(chunk.len());
        let n = s.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

async fn exchange(to: SocketAddr, state: &[u8], io: &IoCounters, max: usize) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(to).await?;
    write_frame(&mut s, state).await?;
    read_frame(&mut s, io, max).await
}

async fn serve_sync(
    mut stream: TcpStream,
    from: SocketAddr,
    tx: mpsc::UnboundedSender<SyncMsg>,
    io: &IoCounters,
    max: usize,
) {
    let work = async {
        let bytes = read_frame(&mut stream, io, max).await?;
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(SyncMsg::State { bytes, reply: Some(reply_tx), from })
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        // No answer means the request did not decode; just close.
        if let Ok(reply) = reply_rx.await {
            write_frame(&mut stream, &reply).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(INBOUND_TIMEOUT, work).await;
}

/// Binds the gossip UDP socket and the state-sync TCP listener on one port.
///
/// With port 0 the OS picks the UDP port, and that port may already be held
/// by a TCP socket (an outgoing connection's ephemeral port, say): then
/// another port is tried, a bounded number of times, instead of failing a
/// start that asked for "any port".
async fn bind_pair(bind: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    const TRIES: usize = 32;
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(bind).await?;
        let local = udp.local_addr()?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if bind.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse && tries < TRIES => {
                tries += 1;
                tracing::debug!(port = local.port(), "state-sync port taken over TCP; picking another");
            }
            Err(e) => return Err(e),
        }
    }
}
