//! The front door against hostile HTTP: request smuggling (conflicting or malformed framing,
//! headers nominated by `Connection`), oversized heads and bodies, slowloris, and heads that
//! defeat the worker steering (arriving in pieces, a second registration on one connection).
//! Each smuggling case is sent as raw bytes with a second, smuggled request behind it; the
//! caller must get 400 (or the limit's status) and the app must never see the smuggled
//! request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, GatewayOptions, TestAgent, TestGateway};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send `bytes` on a fresh connection and read until the gateway closes it or 5 s pass;
/// returns the status of the first response (0 if none) and everything read.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline.into(), tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

struct Front {
    gw: TestGateway,
    app: Backend,
    _agent: TestAgent,
    id: String,
    key: String,
}

async fn front(configure: Option<fn(&mut g2c_gateway::config::GatewayConfig)>) -> Front {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        configure,
        ..Default::default()
    })
    .await;
    let (agent, key) = gw.web_agent(app.addr).await;
    let id = agent.id().to_owned();
    Front {
        gw,
        app,
        _agent: agent,
        id,
        key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_corpus_gets_400_and_never_reaches_the_app() {
    let f = front(None).await;
    let head = format!(
        "POST /r/{}/echo HTTP/1.1\r\nHost: gw\r\nG2C-Key: {}\r\n",
        f.id, f.key
    );
    let smuggled = format!(
        "GET /r/{}/smuggled HTTP/1.1\r\nHost: gw\r\nG2C-Key: {}\r\n\r\n",
        f.id, f.key
    );
    let corpus: Vec<(&str, String)> = vec![
        ("CL+TE", format!("{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE+CL", format!("{head}Transfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n0\r\n\r\n{smuggled}")),
        ("duplicate CL", format!("{head}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc{smuggled}")),
        ("conflicting CL", format!("{head}Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc{smuggled}")),
        ("CL list", format!("{head}Content-Length: 3, 3\r\n\r\nabc{smuggled}")),
        ("CL +3", format!("{head}Content-Length: +3\r\n\r\nabc{smuggled}")),
        ("CL -1", format!("{head}Content-Length: -1\r\n\r\n{smuggled}")),
        ("CL hex", format!("{head}Content-Length: 0x3\r\n\r\nabc{smuggled}")),
        ("TE not chunked", format!("{head}Transfer-Encoding: gzip\r\n\r\n{smuggled}")),
        ("TE chunked twice", format!("{head}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE with space", format!("{head}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("bad chunk size", format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n{smuggled}")),
        ("negative chunk size", format!("{head}Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n{smuggled}")),
        ("chunk size overflow", format!("{head}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nabc\r\n0\r\n\r\n{smuggled}")),
        ("Connection: G2C-Key", format!("{head}Connection: G2C-Key\r\nContent-Length: 0\r\n\r\n{smuggled}")),
        ("Connection: Content-Length", format!("{head}Connection: close, Content-Length\r\nContent-Length: 0\r\n\r\n{smuggled}")),
        ("obs-fold", format!("{head}X-A: a\r\n b\r\nContent-Length: 0\r\n\r\n{smuggled}")),
        ("NUL in header", format!("{head}X-A: a\0b\r\nContent-Length: 0\r\n\r\n{smuggled}")),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &corpus {
        let (status, text) = raw(f.gw.http(), bytes.as_bytes()).await;
        if status != 400 {
            failures.push(format!("{name}: {status} {:?}", text.lines().next()));
        }
    }
    // The same, behind a clean request on a kept-alive connection (the watcher follows the
    // first body to find the second head).
    let mut tcp = TcpStream::connect(f.gw.http()).await.unwrap();
    let clean = format!("{head}Content-Length: 4\r\n\r\nabcd");
    tcp.write_all(clean.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"abcd")) {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after the clean request");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let ambiguous =
        format!("{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}");
    tcp.write_all(ambiguous.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    if !rest.starts_with(b"HTTP/1.1 400") {
        failures.push(format!(
            "second on the connection: {:?}",
            String::from_utf8_lossy(&rest).lines().next()
        ));
    }
    let seen: Vec<String> = f.app.seen().iter().map(|s| s.uri.clone()).collect();
    assert!(failures.is_empty(), "not refused with 400: {failures:#?}");
    assert!(
        !seen.iter().any(|u| u.contains("smuggled")),
        "the app saw a smuggled request: {seen:?}"
    );
    // A well-formed request on the same front door still works.
    let ok = send(
        f.gw.http(),
        routed(Method::GET, &f.id, "/bytes/5", &f.key, ""),
    )
    .await;
    assert_eq!(ok.status, 200);
}

fn small_limits(c: &mut g2c_gateway::config::GatewayConfig) {
    c.limits.max_body_bytes = 1024;
    c.limits.header_read_timeout_secs = 1;
    c.limits.registration_max_inflight = 2;
}

/// The default limit of 100 headers is hyper's own (the test above); a configured one other
/// than that is applied to every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_header_count_limit_holds() {
    let f = front(Some(|c| c.limits.max_headers = 8)).await;
    let head = format!(
        "GET /r/{}/ HTTP/1.1\r\nHost: gw\r\nG2C-Key: {}\r\nConnection: close\r\n",
        f.id, f.key
    );
    let extra = |n: usize| (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    let (status, _) = raw(f.gw.http(), format!("{head}{}\r\n", extra(6)).as_bytes()).await;
    assert_eq!(status, 431, "3 + 6 headers are past 8");
    let (status, text) = raw(f.gw.http(), format!("{head}{}\r\n", extra(4)).as_bytes()).await;
    assert_eq!(status, 200, "3 + 4 headers are within 8: {text}");
}

/// The gateway picks a caller's worker from its first request head, peeked for at most 50 ms.
/// A head that arrives in pieces past that wait picks nothing, and is served where it was
/// accepted: routed and answered as always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_arriving_in_pieces_past_the_steering_wait_is_still_answered() {
    let f = front(None).await;
    let head = format!(
        "GET /r/{}/bytes/3 HTTP/1.1\r\nHost: gw\r\nG2C-Key: {}\r\nConnection: close\r\n\r\n",
        f.id, f.key
    );
    let mut tcp = TcpStream::connect(f.gw.http()).await.unwrap();
    // Four pieces 40 ms apart: the whole head is there only after 120 ms.
    for piece in head.as_bytes().chunks(head.len() / 4 + 1) {
        tcp.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out))
        .await
        .expect("answered within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(f.app.last().uri, "/bytes/3");
}

/// A kept-alive connection is steered by its first request only; a later request on it for
/// another registration (whose tunnel may be on another worker) is routed to that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_reaches_two_registrations_in_turn() {
    let f = front(None).await;
    let other_app = Backend::start().await;
    let (other, other_key) = f.gw.web_agent(other_app.addr).await;
    let request = |id: &str, key: &str, close: &str| {
        format!("GET /r/{id}/bytes/2 HTTP/1.1\r\nHost: gw\r\nG2C-Key: {key}\r\n{close}\r\n")
    };
    let both =
        request(&f.id, &f.key, "") + &request(other.id(), &other_key, "Connection: close\r\n");
    let (status, text) = raw(f.gw.http(), both.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    let got = |app: &Backend| app.seen().iter().filter(|s| s.uri == "/bytes/2").count();
    assert_eq!(got(&f.app), 1, "the first registration's app got the first");
    assert_eq!(
        got(&other_app),
        1,
        "the second registration's app got the second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_get_431_and_413() {
    let f = front(Some(small_limits)).await;
    let head = format!(
        "POST /r/{}/sink HTTP/1.1\r\nHost: gw\r\nG2C-Key: {}\r\n",
        f.id, f.key
    );
    // Too many headers, and one huge header.
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _) = raw(
        f.gw.http(),
        format!("{head}{many}Content-Length: 0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 431);
    let huge = "a".repeat(70 * 1024);
    let (status, _) = raw(
        f.gw.http(),
        format!("{head}X-Big: {huge}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 431);
    // A declared body over the limit is refused before it reaches the agent.
    let body = "b".repeat(2048);
    let (status, text) = raw(
        f.gw.http(),
        format!("{head}Content-Length: 2048\r\n\r\n{body}").as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("payload_too_large"));
    assert!(
        f.app.seen().is_empty(),
        "the app never saw the oversized request"
    );
    // A chunked body that grows past the limit is cut and answered 413.
    let chunk = format!("400\r\n{}\r\n", "c".repeat(1024));
    let (status, text) = raw(
        f.gw.http(),
        format!("{head}Transfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{text}");
    // Under the limit still works.
    let ok = send(
        f.gw.http(),
        routed(Method::POST, &f.id, "/sink", &f.key, vec![7u8; 1000]),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_the_header_timeout_while_normal_requests_pass() {
    let f = front(Some(small_limits)).await;
    let addr = f.gw.http();
    let started = Instant::now();
    let head = format!(
        "GET /r/{}/bytes/1 HTTP/1.1\r\nHost: gw\r\nG2C-Key: {}\r\nX-Slow: ",
        f.id, f.key
    );
    let mut loris = Vec::new();
    for _ in 0..50 {
        let head = head.clone();
        loris.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            // One byte every 100 ms; the head never ends.
            for b in head.bytes().chain(std::iter::repeat(b'x')).take(200) {
                if tcp.write_all(&[b]).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {} // a 408 before the close
                    Err(_) => {}
                }
            }
            Instant::now()
        }));
    }
    // Meanwhile, normal requests are answered.
    for i in 0..20 {
        let r = send(
            addr,
            routed(Method::GET, &f.id, &format!("/bytes/{i}"), &f.key, ""),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    for l in loris {
        let closed_after = l.await.unwrap() - started;
        assert!(
            closed_after < Duration::from_secs(4),
            "a slowloris connection lived {closed_after:?} (header timeout 1 s)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_cap_callers_get_503_and_other_registrations_are_unaffected() {
    let f = front(Some(small_limits)).await;
    let other_app = Backend::start().await;
    let other = TestAgent::start_connected(
        f.gw.register(&[("web", ServiceKind::Http, other_app.addr)])
            .await,
    )
    .await;
    let other_key = f.gw.key(other.id()).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (addr, req) = (
                f.gw.http(),
                routed(Method::GET, &f.id, "/slow/1500", &f.key, ""),
            );
            tokio::spawn(async move { send(addr, req).await.status })
        })
        .collect();
    g2c_tests::wait_until(
        Duration::from_secs(5),
        "two slow requests at the app",
        || {
            let n = f.app.seen().len();
            async move { n >= 2 }
        },
    )
    .await;
    let r = send(
        f.gw.http(),
        routed(Method::GET, &f.id, "/bytes/3", &f.key, ""),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), Some("overloaded"));
    assert!(r.headers.contains_key("retry-after"));
    let r = send(
        f.gw.http(),
        routed(Method::GET, other.id(), "/bytes/3", &other_key, ""),
    )
    .await;
    assert_eq!(r.status, 200, "another registration is not limited");
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    let r = send(
        f.gw.http(),
        routed(Method::GET, &f.id, "/bytes/3", &f.key, ""),
    )
    .await;
    assert_eq!(
        r.status, 200,
        "capacity is back once the slow requests finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_stream_cap_of_a_tunnel_callers_get_503_not_502() {
    let f = front(Some(|c| {
        c.limits.max_streams_per_tunnel = 1;
        c.limits.registration_max_inflight = 0;
    }))
    .await;
    // One slow request takes the only stream the gateway may open (the agent's control stream
    // does not count: the agent opened it).
    let slow = {
        let (addr, req) = (
            f.gw.http(),
            routed(Method::GET, &f.id, "/slow/1500", &f.key, ""),
        );
        tokio::spawn(async move { send(addr, req).await.status })
    };
    g2c_tests::wait_until(
        Duration::from_secs(5),
        "the slow request at the app",
        || {
            let n = f.app.seen().len();
            async move { n >= 1 }
        },
    )
    .await;
    let r = send(
        f.gw.http(),
        routed(Method::GET, &f.id, "/bytes/3", &f.key, ""),
    )
    .await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.error_code(), Some("overloaded"));
    assert_eq!(slow.await.unwrap(), 200);
    let r = send(
        f.gw.http(),
        routed(Method::GET, &f.id, "/bytes/3", &f.key, ""),
    )
    .await;
    assert_eq!(r.status, 200, "a stream is free again");
}
