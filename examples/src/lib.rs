//! Runnable examples of the `ha` crates: the programs are in `src/bin/`
//! (`cargo run -p ha-examples --bin NAME`).
//!
//! This library target only exists to compile and run the Rust code blocks
//! of the project's README as doctests, so the README stays true.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
