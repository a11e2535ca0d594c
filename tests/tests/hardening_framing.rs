//! The framing watcher cannot be switched off by a request that only looks like the end of
//! HTTP on a connection: after a request that carries `Upgrade:` but gets a 200, a smuggling
//! attempt on the same connection still gets 400 and never reaches the app. (On main the
//! watcher stopped for good at such a request. HTTP/1.0 and `CONNECT` are covered by the
//! watcher's unit tests: the front door closes both connections after one answer.)

use std::net::SocketAddr;
use std::time::Duration;

use g2c_tests::backend::Backend;
use g2c_tests::harness::TestGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read one whole response (head, then a `Content-Length` body) from `tcp`.
async fn one_response(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + len {
                return String::from_utf8_lossy(&got).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

async fn first_then_ambiguous(addr: SocketAddr, first: &str, ambiguous: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(first.as_bytes()).await.unwrap();
    let first_answer = one_response(&mut tcp).await;
    tcp.write_all(ambiguous.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    (first_answer, String::from_utf8_lossy(&rest).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_asked_for_but_not_made_does_not_switch_the_watch_off() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let (agent, key) = gw.web_agent(app.addr).await;
    let id = agent.id();
    let auth = format!("Host: gw\r\nG2C-Key: {key}\r\n");
    let smuggled = format!("GET /r/{id}/smuggled HTTP/1.1\r\n{auth}\r\n");
    let ambiguous = format!(
        "POST /r/{id}/echo HTTP/1.1\r\n{auth}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    let firsts = [(
        "Upgrade without a 101",
        format!("GET /r/{id}/hello HTTP/1.1\r\n{auth}Connection: upgrade\r\nUpgrade: h2c\r\n\r\n"),
    )];
    for (name, first) in &firsts {
        let (answer, rest) = first_then_ambiguous(gw.http(), first, &ambiguous).await;
        assert!(
            answer.contains(" 200 "),
            "{name}: first answered {answer:?}"
        );
        assert!(
            rest.starts_with("HTTP/1.1 400"),
            "{name}: the smuggling attempt behind it got {:?} after {answer:?}",
            rest.lines().next()
        );
    }
    let seen: Vec<String> = app.seen().iter().map(|s| s.uri.clone()).collect();
    assert!(
        !seen.iter().any(|u| u.contains("smuggled")),
        "the app saw a smuggled request: {seen:?}"
    );
}
