//! The cluster demo (`cargo run --release -p ha-examples --bin cluster`):
//! one command starts six service instances as separate processes in two
//! zones, sends open-loop traffic through ha and through a plain
//! round-robin client side by side, breaks the instances by a fault script
//! (SIGKILL, a gray failure, a SIGSTOP freeze, the loss of a whole zone and
//! its return), shows it live, and ends with a summary table, JSON, and an
//! SVG timeline.
//!
//! One module per job: [`topology`] (who listens where), [`instance`] (the
//! child role), [`supervisor`] (the child processes), [`script`] (the
//! faults), [`traffic`] and [`baseline`] (the two clients), [`stats`],
//! [`view`], [`report`] and [`timeline`]; [`run`] ties them together.

pub mod baseline;
pub mod cli;
pub mod instance;
pub mod report;
pub mod script;
pub mod stats;
pub mod supervisor;
pub mod timeline;
pub mod topology;
pub mod traffic;
pub mod view;

mod live;
mod runner;

pub use live::Live;
pub use runner::run;
