//! The reqwest adapter (feature `reqwest`).
