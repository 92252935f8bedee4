//! SWIM membership with the Lifeguard extensions.
//!
//! `ha-membership` lets every instance of a service learn who its peers are,
//! and which are alive, through gossip with no coordinator: probes, indirect
//! probes, suspicion with refutation, Lifeguard's local health awareness,
//! and push-pull anti-entropy. Live members are offered as a tower
//! `Discover` for `ha-balance`.
//!
//! The public API lands with its issue; this crate has none yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
