//! SWIM membership with the Lifeguard extensions.
//!
//! `ha-membership` lets every instance of a service learn who its peers are,
//! and which are alive, through gossip with no coordinator: probes, indirect
//! probes, suspicion with refutation, Lifeguard's local health awareness,
//! and push-pull anti-entropy. Live members are offered as a tower
//! `Discover` for `ha-balance`.
//!
//! The protocol is a sans-IO state machine, [`Swim`], handed explicit time.
//! It lives in the `ha-swim` crate, which has no runtime; this crate
//! re-exports it at the same paths (`ha_membership::Swim`,
//! `ha_membership::wire`, ...) and adds the tokio driver:
//!
//! ```
//! use std::time::Duration;
//! use ha_membership::{Config, MembershipEvent, Swim};
//! use tokio::time::Instant;
//!
//! let now = Instant::now();
//! let (a_addr, b_addr) = ("10.0.0.1:7946".parse().unwrap(), "10.0.0.2:7946".parse().unwrap());
//! let mut a = Swim::new(Config::lan(), "a", a_addr, now, 1).unwrap();
//! let mut b = Swim::new(Config::lan(), "b", b_addr, now, 2).unwrap();
//!
//! // b joins through a: a push-pull state exchange (over TCP in the driver).
//! b.join(&[a_addr]);
//! assert_eq!(b.poll_sync(), Some(a_addr));
//! let request = b.local_state(true);
//! a.handle_state(now, &request).unwrap();
//! let answer = a.local_state(false);
//! b.handle_state(now, &answer).unwrap();
//!
//! assert!(matches!(a.poll_event(), Some(MembershipEvent::Joined(m)) if &*m.name == "b"));
//! assert!(matches!(b.poll_event(), Some(MembershipEvent::Joined(m)) if &*m.name == "a"));
//! assert_eq!(a.live_count(), 2);
//!
//! // From here on, tick at poll_timeout() and carry poll_transmit() datagrams.
//! let later = now + Duration::from_secs(1);
//! a.tick(later);
//! while let Some(t) = a.poll_transmit() {
//!     assert_eq!(t.to, b_addr);
//!     b.handle(later, a_addr, &t.payload);
//! }
//! ```
//!
//! The tokio driver, [`Cluster`], runs it over UDP and TCP and offers the
//! live members as a [`tower::discover::Discover`].
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod cluster;
pub mod discover;

// The core's modules, re-exported at the paths they had before the split so
// downstream code and docs keep compiling.
pub use ha_swim::{config, error, keyring, member, swim, wire};

pub use cluster::{Cluster, ClusterBuilder, ClusterError, EventStream, UserMessages};
pub use config::{Config, MAX_PACKET};
pub use discover::MemberDiscover;
pub use error::{ConfigError, DecodeError, KeyError, SizeError};
pub use keyring::Keyring;
pub use member::{Member, MemberState, MembershipEvent, Metadata};
pub use swim::{Counters, StreamCheck, Swim, Transmit};
