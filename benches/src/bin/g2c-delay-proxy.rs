//! A user-space wide-area link for benchmarks (the kernel here has no netem): accepts TCP on
//! `--listen`, connects each connection to `--to`, and delivers every chunk in each direction
//! `--delay-ms` after it arrived (no bandwidth cap, no loss). Two directions of 25 ms make a
//! 50 ms round trip. At most `--window-bytes` (default 6 MiB, Linux's largest auto-tuned TCP
//! receive window) are in flight per direction, as a real TCP connection over such a path
//! would have; without that cap the proxy would buffer without limit and hide the delay.
//!
//!   g2c-delay-proxy --listen 127.0.0.1:0 --to 127.0.0.1:2222 --delay-ms 25 [--port-file F]
#![forbid(unsafe_code)]

use g2c_benches::arg;

use std::time::Duration;

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// Copy `from` to `to`, holding each chunk back until `delay` after it was read, with at most
/// `window` bytes in flight.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    window: usize,
) {
    let in_flight = Arc::new(Semaphore::new(window));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let released = in_flight.clone();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            released.add_permits(chunk.len());
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                match in_flight.acquire_many(n as u32).await {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let to = arg("--to").expect("--to HOST:PORT");
    let delay = Duration::from_millis(arg("--delay-ms").and_then(|v| v.parse().ok()).unwrap_or(25));
    let window: usize = arg("--window-bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(6 * 1024 * 1024);
    let listener = TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    match arg("--port-file") {
        Some(f) => std::fs::write(f, addr.port().to_string())?,
        None => println!("{addr}"),
    }
    loop {
        let (inbound, _) = listener.accept().await?;
        let to = to.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(&to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::join!(
                delayed(ir, ow, delay, window),
                delayed(or, iw, delay, window)
            );
        });
    }
}
