//! Fuzz the front door: any bytes as an HTTP/1 connection to the real front-door handler
//! (routing, auth, framing checks, limits, error mapping). `G2CREG` and `G2CKEY` in an input
//! become a real registration and API key, so inputs reach past auth (to "agent offline").
//! Properties: no panic, no hang, and never a 500 (an internal error) for caller bytes.
#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let h = harness::harness();
    let input = harness::with_credentials(h, data);
    let out = harness::runtime().block_on(harness::exchange(&input, |req, peer| async move {
        harness::harness().gateway.front_door(req, peer).await
    }));
    assert_ne!(harness::first_status(&out), Some(500), "internal error for caller bytes");
});
