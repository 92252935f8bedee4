//! Runnable examples of the `ha` crates: the programs are in `src/bin/`
//! (`cargo run -p ha-examples --bin NAME`).
//!
//! This library target holds what the programs share (local servers to
//! call) and compiles and runs the Rust code blocks of the project's README
//! as doctests, so the README stays true.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod greeter;
pub mod prometheus;
pub mod servers;

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
