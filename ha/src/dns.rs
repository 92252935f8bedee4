//! Endpoints from DNS (feature `dns`): the A/AAAA records of a host name
//! with a port, or the SRV records of a service, re-resolved within the
//! records' TTL, with the `hickory-resolver` crate.
//!
//! SRV records map to targets the way RFC 2782 means them: the lowest
//! priority is tier 0, the next tier 1 and so on, so traffic fails over to
//! the next priority when the first degrades; the weight is the endpoint's
//! weight. A failed resolution or an empty answer keeps the last good set
//! (DNS trouble never empties a balancer) and is counted in [`DnsStats`]
//! and logged; the next try comes after the floor interval, doubling up to
//! the ceiling while it keeps failing.
//!
//! ```no_run
//! use std::time::Duration;
//! use ha::dns::Dns;
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // A Kubernetes headless service, through the system's resolver.
//! let dns = Dns::host("inventory.shop.svc.cluster.local", 8080)?.interval(Duration::from_secs(1), Duration::from_secs(30));
//! let stats = dns.stats();
//! let client: ha::hyper::Client<ha::Body> = ha::hyper::builder().discover(dns.discover()).build()?;
//! # let _ = (client, stats);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use tower::discover::Change;
use tower::BoxError;

use crate::target::Target;

/// What to resolve.
#[derive(Debug, Clone)]
enum Query {
    Host { name: String, port: u16 },
    Srv { name: String },
}

/// A DNS source of endpoints; see the [module docs](self).
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    query: Query,
    floor: Duration,
    ceiling: Duration,
    timeout: Duration,
    stats: Arc<Counters>,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("query", &self.query)
            .field("floor", &self.floor)
            .field("ceiling", &self.ceiling)
            .finish_non_exhaustive()
    }
}

/// The resolver could not be set up from the system's configuration.
#[derive(Debug)]
pub struct DnsError(BoxError);

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot set up the DNS resolver: {}", self.0)
    }
}

impl std::error::Error for DnsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl Dns {
    /// The addresses of `name` (A and AAAA records), each with `port`,
    /// through the system's resolver configuration (`/etc/resolv.conf`).
    pub fn host(name: impl Into<String>, port: u16) -> Result<Self, DnsError> {
        Ok(Self::with_resolver(system_resolver()?, Query::Host { name: name.into(), port }))
    }

    /// The targets of the SRV records of `name` (`_http._tcp.inventory.example`),
    /// through the system's resolver configuration.
    pub fn srv(name: impl Into<String>) -> Result<Self, DnsError> {
        Ok(Self::with_resolver(system_resolver()?, Query::Srv { name: name.into() }))
    }

    /// Like [`Dns::host`], asking the name server at `server` (UDP) only.
    pub fn host_at(name: impl Into<String>, port: u16, server: SocketAddr) -> Result<Self, DnsError> {
        Ok(Self::with_resolver(resolver_at(server)?, Query::Host { name: name.into(), port }))
    }

    /// Like [`Dns::srv`], asking the name server at `server` (UDP) only.
    pub fn srv_at(name: impl Into<String>, server: SocketAddr) -> Result<Self, DnsError> {
        Ok(Self::with_resolver(resolver_at(server)?, Query::Srv { name: name.into() }))
    }

    fn with_resolver(resolver: TokioResolver, query: Query) -> Self {
        Dns {
            resolver,
            query,
            floor: Duration::from_secs(1),
            ceiling: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            stats: Arc::new(Counters::default()),
        }
    }

    /// Re-resolves when the records' TTL runs out, but not more often than
    /// `floor` nor less often than `ceiling`. Defaults: 1 s and 30 s. A
    /// floor of zero is taken as 10 ms; a ceiling below the floor as the floor.
    pub fn interval(mut self, floor: Duration, ceiling: Duration) -> Self {
        self.floor = floor.max(Duration::from_millis(10));
        self.ceiling = ceiling.max(self.floor);
        self
    }

    /// How long one resolution may take before it counts as failed.
    /// Default 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// A handle on this source's counters, shared with the stream.
    pub fn stats(&self) -> DnsStats {
        DnsStats(self.stats.clone())
    }

    /// The endpoints as a `tower::discover::Discover` of [`Target`]s keyed
    /// by `ip:port`, for [`StackBuilder::discover`](crate::StackBuilder::discover).
    /// It resolves at once, then follows the records; it never ends and
    /// never fails (failures are counted and logged).
    pub fn discover(self) -> BoxStream<'static, Result<Change<Arc<str>, Target>, BoxError>> {
        let state = Follow { dns: self, current: BTreeMap::new(), pending: VecDeque::new(), wait: None, failures: 0 };
        stream::unfold(state, |mut s| async move {
            loop {
                if let Some(change) = s.pending.pop_front() {
                    return Some((Ok(change), s));
                }
                if let Some(wait) = s.wait.take() {
                    tokio::time::sleep(wait).await;
                }
                s.resolve_once().await;
            }
        })
        .boxed()
    }

    /// The targets the records name now, and how long they are valid.
    async fn resolve(&self) -> Result<(BTreeMap<Arc<str>, Target>, Duration), BoxError> {
        let mut out = BTreeMap::new();
        let now = std::time::Instant::now();
        match &self.query {
            Query::Host { name, port } => {
                let ips = match self.resolver.lookup_ip(name.as_str()).await {
                    Ok(ips) => ips,
                    Err(e) if e.is_no_records_found() => return Ok((out, self.floor)),
                    Err(e) => return Err(e.into()),
                };
                let ttl = ips.valid_until().saturating_duration_since(now);
                for ip in ips.iter() {
                    let target = Target::new(SocketAddr::new(ip, *port));
                    out.insert(Arc::from(target.addr.to_string()), target);
                }
                Ok((out, ttl))
            }
            Query::Srv { name } => {
                let lookup = match self.resolver.lookup(name.as_str(), RecordType::SRV).await {
                    Ok(lookup) => lookup,
                    Err(e) if e.is_no_records_found() => return Ok((out, self.floor)),
                    Err(e) => return Err(e.into()),
                };
                let mut ttl = lookup.valid_until().saturating_duration_since(now);
                let records: Vec<_> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some(srv.clone()),
                        _ => None,
                    })
                    .collect();
                // Tier by rank of priority: the lowest priority is tier 0.
                let priorities: BTreeSet<u16> = records.iter().map(|s| s.priority).collect();
                for srv in records {
                    let tier = priorities.iter().position(|p| *p == srv.priority).unwrap_or(0);
                    let tier = u8::try_from(tier).unwrap_or(u8::MAX);
                    let host = srv.target.to_string();
                    let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
                        Ok(ip) => vec![ip],
                        Err(_) => match self.resolver.lookup_ip(host.as_str()).await {
                            Ok(ips) => {
                                ttl = ttl.min(ips.valid_until().saturating_duration_since(now));
                                ips.iter().collect()
                            }
                            // A target with no address is skipped; the others still count.
                            Err(e) if e.is_no_records_found() => Vec::new(),
                            Err(e) => return Err(e.into()),
                        },
                    };
                    for ip in ips {
                        let target =
                            Target::new(SocketAddr::new(ip, srv.port)).tier(tier).weight(u32::from(srv.weight).max(1));
                        out.insert(Arc::from(target.addr.to_string()), target);
                    }
                }
                Ok((out, ttl))
            }
        }
    }
}

fn system_resolver() -> Result<TokioResolver, DnsError> {
    let builder = TokioResolver::builder_tokio().map_err(|e| DnsError(e.into()))?;
    builder.build().map_err(|e| DnsError(e.into()))
}

fn resolver_at(server: SocketAddr) -> Result<TokioResolver, DnsError> {
    let mut connection = ConnectionConfig::udp();
    connection.port = server.port();
    let mut name_server = NameServerConfig::udp(server.ip());
    name_server.connections = vec![connection];
    let config = ResolverConfig::from_name_servers(vec![name_server]);
    let mut options = ResolverOpts::default();
    // The source re-resolves on its own schedule: a cache would only hide changes.
    options.cache_size = 0;
    options.timeout = Duration::from_secs(1);
    options.attempts = 2;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map_err(|e| DnsError(e.into()))
}

/// The state of one followed source.
struct Follow {
    dns: Dns,
    current: BTreeMap<Arc<str>, Target>,
    pending: VecDeque<Change<Arc<str>, Target>>,
    wait: Option<Duration>,
    failures: u32,
}

impl Follow {
    async fn resolve_once(&mut self) {
        let dns = &self.dns;
        dns.stats.resolutions.fetch_add(1, Ordering::Relaxed);
        let answer = match tokio::time::timeout(dns.timeout, dns.resolve()).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {:?}", dns.timeout).into()),
        };
        match answer {
            Ok((targets, ttl)) if !targets.is_empty() => {
                self.failures = 0;
                self.wait = Some(ttl.clamp(dns.floor, dns.ceiling));
                for (key, target) in &targets {
                    if self.current.get(key) != Some(target) {
                        self.pending.push_back(Change::Insert(key.clone(), target.clone()));
                    }
                }
                for key in self.current.keys() {
                    if !targets.contains_key(key) {
                        self.pending.push_back(Change::Remove(key.clone()));
                    }
                }
                if !self.pending.is_empty() {
                    tracing::debug!(target: "ha::dns", query = ?dns.query, endpoints = targets.len(), "DNS answer changed");
                }
                self.current = targets;
            }
            Ok(_) => {
                dns.stats.empty.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "ha::dns", query = ?dns.query, kept = self.current.len(), "empty DNS answer; the last good set is kept");
                self.back_off();
            }
            Err(e) => {
                dns.stats.failures.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = dns.stats.last_error.lock() {
                    *last = Some(e.to_string());
                }
                tracing::warn!(target: "ha::dns", query = ?dns.query, error = %e, kept = self.current.len(), "DNS resolution failed; the last good set is kept");
                self.back_off();
            }
        }
    }

    fn back_off(&mut self) {
        let wait = self.dns.floor.saturating_mul(1 << self.failures.min(16)).min(self.dns.ceiling);
        self.failures = self.failures.saturating_add(1);
        self.wait = Some(wait);
    }
}

#[derive(Debug, Default)]
struct Counters {
    resolutions: AtomicU64,
    failures: AtomicU64,
    empty: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The counters of a [`Dns`] source.
#[derive(Debug, Clone)]
pub struct DnsStats(Arc<Counters>);

impl DnsStats {
    /// Resolutions tried.
    pub fn resolutions(&self) -> u64 {
        self.0.resolutions.load(Ordering::Relaxed)
    }

    /// Resolutions that failed (the last good set was kept).
    pub fn failures(&self) -> u64 {
        self.0.failures.load(Ordering::Relaxed)
    }

    /// Answers with no usable record (the last good set was kept).
    pub fn empty_answers(&self) -> u64 {
        self.0.empty.load(Ordering::Relaxed)
    }

    /// The last failure, if any.
    pub fn last_error(&self) -> Option<String> {
        self.0.last_error.lock().ok().and_then(|e| e.clone())
    }
}
