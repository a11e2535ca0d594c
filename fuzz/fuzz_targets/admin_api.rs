//! Fuzz the admin listener's parsing: any bytes as a CIDR allowlist entry (it must print as
//! something that parses back to itself and match addresses without a panic), and any bytes as
//! a request to the real admin handler behind its gate (Host, cross-site and token checks;
//! `G2CADMIN` becomes the token). Properties: no panic, no hang, never a 500.
#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fn as_request(line: &[u8]) -> Vec<u8> {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(line);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer G2CADMIN\r\n\r\n");
    req
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for probe in ["203.0.113.5", "::ffff:203.0.113.5", "2001:db8::1", "0.0.0.0"] {
            let _ = g2c_gateway::fuzzing::cidr_round_trip(text, probe.parse().unwrap());
        }
    }
    let h = harness::harness();
    let raw = [&b"GET "[..], b"POST ", b"PUT ", b"DELETE "]
        .iter()
        .any(|m| data.starts_with(m));
    let input = if raw { data.to_vec() } else { as_request(data) };
    let input = harness::with_credentials(h, &input);
    let input = String::from_utf8_lossy(&input)
        .replace("G2CADMIN", g2c_gateway::fuzzing::ADMIN_TOKEN)
        .into_bytes();
    let out = harness::runtime().block_on(harness::exchange(&input, |req, _| async move {
        harness::harness().gateway.admin(req).await
    }));
    assert_ne!(harness::first_status(&out), Some(500), "internal error for caller bytes");
});
