//! `cargo +nightly fuzz run decode` (from ha-membership/): the wire decoder,
//! plain and encrypted, datagram and stream, and the core's `handle` must
//! never panic on any input.
#![no_main]

use ha_membership::wire::fuzz_decode;
use ha_membership::{Config, Keyring, Swim};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_decode("", None, false, data);
    let _ = fuzz_decode("", None, true, data);
    let _ = fuzz_decode("prod", Some(Keyring::new([7; 32])), false, data);
    let now = ha_core::Instant::now();
    let mut swim = Swim::new(Config::lan(), "a", "10.0.0.1:7946".parse().unwrap(), now, 1).unwrap();
    swim.handle(now, "10.0.0.2:7946".parse().unwrap(), data);
    let _ = swim.handle_state(now, data);
    assert_eq!(swim.counters().packets_in, 1);
});
