//! Connections that never send a request, tried by the thousand: on the front door, the
//! backchannel and the admin listener a silent socket is closed at the first-request deadline,
//! an idle HTTP/2 connection at the idle timeout, a source past its cap is refused at once, and
//! a real caller gets through all along. (On main none of these sockets was ever closed.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use g2c_gateway::config::GatewayConfig;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, GatewayOptions, TestGateway};
use http::Method;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

fn short_deadlines(c: &mut GatewayConfig) {
    c.limits.header_read_timeout_secs = 1;
    c.limits.idle_timeout_secs = 1;
    c.limits.max_connections_per_source = 100_000;
}

/// Whether the gateway closes `s` within `limit` (a read returns end-of-file or an error).
async fn closed_within(mut s: TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// As many silent sockets as this process may open comfortably (each is two descriptors here:
/// ours and the in-process gateway's), up to 2000.
fn how_many() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(1024);
    (soft.saturating_sub(512) / 3).clamp(100, 2000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_on_time_and_a_real_caller_gets_through() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        configure: Some(short_deadlines),
        ..Default::default()
    })
    .await;
    let (agent, key) = gw.web_agent(app.addr).await;
    let n = how_many();
    let mut silent = Vec::with_capacity(n + 20);
    for i in 0..n {
        silent.push(
            TcpStream::connect(gw.http())
                .await
                .unwrap_or_else(|e| panic!("{i}: {e}")),
        );
    }
    for addr in [gw.addrs.backchannel, gw.addrs.admin] {
        for _ in 0..10 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    let opened = Instant::now();
    // A real caller, while they are all open.
    let ok = send(
        gw.http(),
        routed(Method::GET, agent.id(), "/hello", &key, ""),
    )
    .await;
    assert_eq!(ok.status, 200);
    // An HTTP/2 connection that makes one request and then sits idle.
    let (h2_done, h2_status, _h2_sender) = idle_h2(gw.http(), agent.id(), &key).await;

    let reads: Vec<_> = silent
        .into_iter()
        .map(|s| tokio::spawn(closed_within(s, Duration::from_secs(10))))
        .collect();
    let mut closed = 0;
    for r in reads {
        closed += usize::from(r.await.unwrap());
    }
    assert_eq!(closed, n + 20, "every silent socket closed");
    eprintln!(
        "{} silent sockets closed {:?} after opening",
        n + 20,
        opened.elapsed()
    );
    assert_eq!(h2_status, 200);
    tokio::time::timeout(Duration::from_secs(10), h2_done)
        .await
        .expect("the idle HTTP/2 connection was closed")
        .unwrap();
    let s = gw.scrape().await;
    let timed_out = |listener: &str, reason: &str| {
        s.get(
            "g2c_http_connections_timed_out_total",
            &[("listener", listener), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    assert!(timed_out("http", "first_request") >= n as f64);
    assert!(timed_out("backchannel", "first_request") >= 10.0);
    assert!(timed_out("admin", "first_request") >= 10.0);
    assert!(timed_out("http", "idle") >= 1.0);
}

/// One request over HTTP/2 (prior knowledge), then nothing: the connection's task, the status,
/// and the sender (kept: dropping the last one would close the connection from our side).
async fn idle_h2(
    addr: SocketAddr,
    id: &str,
    key: &str,
) -> (
    tokio::task::JoinHandle<()>,
    http::StatusCode,
    hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let done = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(routed(Method::GET, id, "/hello", key, ""))
        .await
        .unwrap();
    (done, resp.status(), sender)
}

fn small_cap(c: &mut GatewayConfig) {
    c.limits.max_connections_per_source = 50;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_past_its_cap_is_refused_at_once_and_others_are_not() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        configure: Some(small_cap),
        ..Default::default()
    })
    .await;
    let (agent, key) = gw.web_agent(app.addr).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        let s = sock.connect(gw.http()).await.unwrap();
        held.push(s);
    }
    for s in held.drain(50..) {
        refused += usize::from(closed_within(s, Duration::from_secs(2)).await);
    }
    assert_eq!(refused, 10, "the ten past the cap were closed at once");
    let ok = send(
        gw.http(),
        routed(Method::GET, agent.id(), "/hello", &key, ""),
    )
    .await;
    assert_eq!(ok.status, 200, "another source is not affected");
    let s = gw.scrape().await;
    let per_source = s.get(
        "g2c_http_connections_refused_total",
        &[("listener", "http"), ("reason", "per_source")],
    );
    assert_eq!(per_source, Some(10.0));
    drop(held);
}
