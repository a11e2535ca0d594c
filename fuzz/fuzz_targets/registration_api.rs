//! Fuzz the registration API: any bytes as the JSON body of `POST /v1/registrations` (and, when
//! the input starts with an HTTP method, as the whole request) to the real backchannel handler
//! with its real store. Properties: no panic, no hang, and never a 500 for caller bytes.
#![no_main]

#[path = "harness.rs"]
mod harness;

use libfuzzer_sys::fuzz_target;

fn as_request(body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /v1/registrations HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fuzz_target!(|data: &[u8]| {
    let h = harness::harness();
    let raw = data.starts_with(b"GET ") || data.starts_with(b"POST ");
    let input = if raw { data.to_vec() } else { as_request(data) };
    let input = harness::with_credentials(h, &input);
    let out = harness::runtime().block_on(harness::exchange(&input, |req, _| async move {
        harness::harness().gateway.backchannel(req).await
    }));
    assert_ne!(harness::first_status(&out), Some(500), "internal error for caller bytes");
});
