//! Test harness for Ground2Cloud's end-to-end tests: a real HTTP backend, in-process gateways and
//! agents on `127.0.0.1:0`, helpers to run the real binaries as processes, and a small HTTP client.
//! Everything talks to loopback only.
#![forbid(unsafe_code)]

pub mod backend;
pub mod client;
pub mod gui_stack;
pub mod harness;
pub mod mariadb;
pub mod procs;
pub mod prom;
pub mod rogue;
pub mod webdriver;

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

/// A block of 120 public TCP ports for one test gateway, distinct from every other gateway this
/// test process starts and below the kernel's ephemeral range (32768+), so parallel tests never
/// fight over a port.
pub fn port_block() -> (u16, u16) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slot = (std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed)) % 100;
    let start = 20_000 + slot as u16 * 120;
    (start, start + 119)
}

/// The status of a plain `GET path` to `addr` (HTTP/1.1, `Connection: close`), or `None` when
/// nothing answers with a status line.
pub async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}
