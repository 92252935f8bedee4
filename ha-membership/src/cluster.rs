//! The tokio driver: runs the [`Swim`] core over UDP, with push-pull state
//! sync over TCP, and hands out members, events and a tower `Discover`.
//!
//! One task owns the core and the sockets; the [`Cluster`] handle talks to
//! it through a channel, so nothing is locked. Each push-pull exchange runs
//! in a task of its own and hands its bytes back to the core's task.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use ha_core::rng::FastRng;
use ha_core::{Events, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::discover::MemberDiscover;
use crate::error::ConfigError;
use crate::keyring::Keyring;
use crate::member::{Member, MembershipEvent, Metadata};
use crate::swim::{Counters, Swim};
use crate::wire::{MAX_DATAGRAM, MAX_STREAM};

/// How long one push-pull exchange may take before it is abandoned.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Config(e) => e.fmt(f),
            ClusterError::Bind(e) => write!(f, "cannot bind the gossip sockets: {e}"),
            ClusterError::JoinFailed => f.write_str("no seed answered"),
            ClusterError::Stopped => f.write_str("the cluster task has stopped"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Config(e) => Some(e),
            ClusterError::Bind(e) => Some(e),
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
    pub async fn start(self) -> Result<Cluster, ClusterError> {
        self.config.validate().map_err(ClusterError::Config)?;
        let udp = UdpSocket::bind(self.bind).await.map_err(ClusterError::Bind)?;
        let local = udp.local_addr().map_err(ClusterError::Bind)?;
        let tcp = TcpListener::bind(local).await.map_err(ClusterError::Bind)?;
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
        };
        let task = tokio::spawn(driver.run());
        Ok(Cluster { name: self.name, addr, cmd: cmd_tx, view: view_rx, task: Arc::new(TaskGuard(task)) })
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
    /// or fails when none did (the node keeps retrying them in the background).
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<(), ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Join(seeds.to_vec(), tx)).map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Leaves gracefully: the others learn it at once. The node keeps
    /// answering until dropped, so the news spreads.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Leave(tx)).map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)
    }

    /// Publishes new metadata.
    pub fn set_metadata(&self, meta: Metadata) -> Result<(), ClusterError> {
        self.cmd.send(Command::SetMetadata(meta)).map_err(|_| ClusterError::Stopped)
    }

    /// Sends `payload` to every member, by gossip (best effort).
    pub fn broadcast(&self, payload: Vec<u8>) -> Result<(), ClusterError> {
        self.cmd.send(Command::Broadcast(payload)).map_err(|_| ClusterError::Stopped)
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
                accepted = self.tcp.accept() => {
                    if let Ok((stream, from)) = accepted {
                        let tx = self.sync_tx.clone().expect("set above");
                        tokio::spawn(serve_sync(stream, from, tx));
                    }
                }
            }
            self.flush().await;
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
            Command::SetMetadata(m) => self.swim.set_metadata(now, m),
            Command::Broadcast(p) => self.swim.broadcast_user(p),
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
                let ok = self.swim.handle_state(now, &bytes).is_ok();
                if ok {
                    for (tx, _) in self.join_waiters.drain(..) {
                        let _ = tx.send(Ok(()));
                    }
                } else {
                    self.sync_failed(from);
                }
            }
            SyncMsg::Failed(addr) => self.sync_failed(addr),
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
            let state = self.swim.local_state(true);
            let tx = self.sync_tx.clone().expect("set in run");
            tokio::spawn(async move {
                let r = tokio::time::timeout(SYNC_TIMEOUT, exchange(to, &state)).await;
                let _ = match r {
                    Ok(Ok(bytes)) => tx.send(SyncMsg::State { bytes, reply: None, from: to }),
                    _ => tx.send(SyncMsg::Failed(to)),
                };
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
        let counters = self.swim.counters();
        if changed || self.view.borrow().counters != counters {
            self.publish();
        }
    }

    fn publish(&mut self) {
        let members: Vec<Member> = self.swim.members().cloned().collect();
        let view =
            View { members: Arc::new(members), counters: self.swim.counters(), health: self.swim.health_score() };
        self.view.send_replace(view);
    }
}

async fn write_frame(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    s.write_all(bytes).await?;
    s.flush().await
}

async fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_STREAM {
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

async fn exchange(to: SocketAddr, state: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(to).await?;
    write_frame(&mut s, state).await?;
    read_frame(&mut s).await
}

async fn serve_sync(mut stream: TcpStream, from: SocketAddr, tx: mpsc::UnboundedSender<SyncMsg>) {
    let work = async {
        let bytes = read_frame(&mut stream).await?;
        let (reply_tx, reply_rx) = oneshot::channel();
        tx.send(SyncMsg::State { bytes, reply: Some(reply_tx), from })
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        // No answer means the request did not decode; just close.
        if let Ok(reply) = reply_rx.await {
            write_frame(&mut stream, &reply).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(SYNC_TIMEOUT, work).await;
}
