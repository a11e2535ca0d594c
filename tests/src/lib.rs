//! Test harness for Ground2Cloud's end-to-end tests: a real HTTP backend, in-process gateways and
//! agents on `127.0.0.1:0`, helpers to run the real binaries as processes, and a small HTTP client.
//! Everything talks to loopback only.
#![forbid(unsafe_code)]

pub mod backend;
pub mod client;
pub mod cluster;
pub mod gui_stack;
pub mod harness;
pub mod load;
pub mod mariadb;
pub mod postgres;
pub mod procs;
pub mod prom;
pub mod rogue;
pub mod tls_origin;
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

/// A block of public TCP ports for one test gateway, below the kernel's ephemeral range
/// (32768+). The port just before the block is held bound for as long as the block lives: the
/// kernel hands each port to one socket only, so two gateways (in this test process or in
/// another test binary running at the same time) can never get the same block.
pub struct PortBlock {
    /// First port of the block.
    pub start: u16,
    /// Last port of the block.
    pub end: u16,
    _claim: std::net::TcpListener,
}

/// Claim a free block of 119 ports (see [`PortBlock`]).
pub fn port_block() -> PortBlock {
    const SLOTS: u32 = 100;
    const SIZE: u16 = 120;
    let first = std::process::id().wrapping_mul(7) % SLOTS;
    for i in 0..SLOTS {
        let base = 20_000 + ((first + i) % SLOTS) as u16 * SIZE;
        if let Ok(claim) = std::net::TcpListener::bind(("127.0.0.1", base)) {
            return PortBlock {
                start: base + 1,
                end: base + SIZE - 1,
                _claim: claim,
            };
        }
    }
    panic!("no free block of test ports between 20000 and 32000");
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
