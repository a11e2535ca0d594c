//! Test harness for Ground2Cloud's end-to-end tests: a real HTTP backend, in-process gateways and
//! agents on `127.0.0.1:0`, helpers to run the real binaries as processes, and a small HTTP client.
//! Everything talks to loopback only.
#![forbid(unsafe_code)]

pub mod backend;
pub mod client;
pub mod harness;
pub mod procs;

use std::future::Future;
use std::time::{Duration, Instant};

/// Wait until `cond` returns true, polling, or panic with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The deterministic byte pattern the backend serves: byte `i` is `i % 251`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}
