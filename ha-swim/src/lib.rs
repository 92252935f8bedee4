//! The sans-IO core of `ha-membership`: SWIM with the Lifeguard extensions.
//!
//! Probes, indirect probes, suspicion with refutation, Lifeguard's local
//! health awareness, and push-pull anti-entropy, as a state machine,
//! [`Swim`], handed explicit time and bytes. It never reads a clock and never
//! touches a socket, so one code runs in the tokio driver (`ha-membership`'s
//! `Cluster`), in the deterministic simulator, and in a test:
//!
//! ```
//! use std::time::Duration;
//! use ha_core::Instant;
//! use ha_swim::{Config, MembershipEvent, Swim};
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
//! The crate has no runtime: its only tie to tokio is the clock type,
//! [`ha_core::Instant`], which the whole workspace shares so the driver and
//! tokio's paused test clock hand it the same instants.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod broadcast;
pub mod config;
pub mod error;
pub mod keyring;
pub mod member;
mod probe;
mod replay;
mod seen;
mod suspicion;
pub mod swim;
mod table;
pub mod wire;

pub use config::{Config, MAX_PACKET};
pub use error::{ConfigError, DecodeError, KeyError, SizeError};
pub use keyring::Keyring;
pub use member::{Member, MemberState, MembershipEvent, Metadata};
pub use swim::{Counters, StreamCheck, Swim, Transmit};
