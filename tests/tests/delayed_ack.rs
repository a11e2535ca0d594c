//! No 40 ms stalls from Nagle meeting delayed ACKs. An app that writes its response head and
//! body in two writes without `TCP_NODELAY` (Python's `http.server`, many small apps) has its
//! second write held until the agent ACKs the first; a pooled local connection leaves Linux's
//! quick-ACK mode, so without help every request waits for the delayed ACK (40 ms). The same
//! holds for a caller that sends a request's head and body in two writes to the gateway. The
//! agent and the gateway re-arm `TCP_QUICKACK` after each read on those legs.
//!
//! The stall is a fixed 40 ms per request against well under a millisecond without it, so the
//! medians below tell the two apart by a factor of twenty whatever the machine's load.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, TestGateway};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUESTS: usize = 30;
/// Far below the 40 ms a delayed ACK costs, far above a loopback round trip.
const NO_STALL: Duration = Duration::from_millis(20);

/// Read one request head (no body) from `s`; false on EOF.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// An HTTP/1.1 keep-alive app that answers every request with its head and its body in two
/// separate writes, Nagle left on.
async fn two_write_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_head(&mut s, &mut buf).await {
                    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
                    if s.write_all(head).await.is_err() || s.write_all(b"hello").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Whether `reply` holds a whole response with a `content-length` body.
fn whole_answer(reply: &[u8]) -> bool {
    let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a sized answer");
    reply.len() >= end + 4 + length
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_writing_head_and_body_apart_is_not_stalled_by_delayed_acks() {
    let gw = TestGateway::start().await;
    let (agent, key) = gw.web_agent(two_write_app().await).await;
    let mut took = Vec::new();
    for i in 0..REQUESTS {
        let from = Instant::now();
        let r = send(gw.http(), routed(Method::GET, agent.id(), "/", &key, "")).await;
        took.push(from.elapsed());
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(&r.body[..], b"hello");
    }
    let m = median(took[5..].to_vec());
    eprintln!("two-write app through the tunnel: median {m:?}");
    assert!(m < NO_STALL, "median {m:?}: the delayed-ACK stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_writing_head_and_body_apart_is_not_stalled_by_delayed_acks() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let (agent, key) = gw.web_agent(app.addr).await;
    // One keep-alive connection, Nagle on, each POST's head and body in two writes.
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    let head = format!(
        "POST /r/{}/echo HTTP/1.1\r\nhost: gw\r\ng2c-key: {key}\r\ncontent-length: 5\r\n\r\n",
        agent.id()
    );
    let mut took = Vec::new();
    let mut reply = Vec::new();
    for i in 0..REQUESTS {
        let from = Instant::now();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        // Read until the whole answer is in: its head, then content-length bytes of body.
        reply.clear();
        let mut chunk = [0u8; 4096];
        while !whole_answer(&reply) {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "request {i}: the gateway closed the connection");
            reply.extend_from_slice(&chunk[..n]);
        }
        took.push(from.elapsed());
        assert!(
            reply.starts_with(b"HTTP/1.1 200"),
            "request {i}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let m = median(took[5..].to_vec());
    eprintln!("two-write caller through the tunnel: median {m:?}");
    assert!(m < NO_STALL, "median {m:?}: the delayed-ACK stall");
}
