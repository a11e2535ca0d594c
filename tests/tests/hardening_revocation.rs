//! Revoking a key ends what the key has open, within a second: a WebSocket, streamed responses
//! over HTTP/1.1 and HTTP/2, and a request still waiting for the app's answer. Another key's
//! stream on the same registration keeps going, and the revoked key is refused from then on.
//! (On main a revoked key's open streams ran until they ended by themselves.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, TestGateway};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// How long a revocation may take to reach live work.
const WITHIN: Duration = Duration::from_secs(1);

fn get(agent: &str, key: &str, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://gw.test/r/{agent}{path}"))
        .header("host", "gw.test")
        .header("g2c-key", key)
        .body(Empty::new())
        .unwrap()
}

/// A streamed response's body, its head already received (HTTP/1.1 or h2c).
async fn open_stream(gw: SocketAddr, req: Request<Empty<Bytes>>, h2: bool) -> Incoming {
    let tcp = TcpStream::connect(gw).await.unwrap();
    let resp = if h2 {
        let (mut s, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    };
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body()
}

/// Read a drip stream until it fails or ends; how many bytes it gave and whether it failed.
async fn drain(mut body: Incoming, limit: Duration) -> Option<(usize, bool)> {
    tokio::time::timeout(limit, async {
        let mut n = 0;
        loop {
            match body.frame().await {
                Some(Ok(f)) => n += f.data_ref().map_or(0, Bytes::len),
                Some(Err(_)) => return (n, true),
                None => return (n, false),
            }
        }
    })
    .await
    .ok()
}

/// One data byte from a drip stream (proof that it is live).
async fn one_byte(body: &mut Incoming) {
    loop {
        let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the stream goes on")
            .expect("not ended")
            .expect("not failed");
        if f.data_ref().is_some_and(|d| !d.is_empty()) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_websocket_streams_and_waiting_request_within_a_second() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let (agent, _) = gw.web_agent(app.addr).await;
    let doomed = gw.store.create_key(agent.id()).await.unwrap();
    let other = gw.key(agent.id()).await;
    let key = doomed.secret.as_str();

    // A WebSocket that echoes.
    let tcp = TcpStream::connect(gw.http()).await.unwrap();
    let ws_req = g2c_tests::client::ws_request(&format!("ws://gw.test/r/{}/ws", agent.id()), key);
    let (mut ws, _) = tokio_tungstenite::client_async(ws_req, tcp).await.unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    // Streams of 2000 bytes at 20 a second (100 s), over HTTP/1.1 and HTTP/2, with the doomed
    // key; one more with the other key.
    let mut h1 = open_stream(gw.http(), get(agent.id(), key, "/drip/2000"), false).await;
    let mut h2 = open_stream(gw.http(), get(agent.id(), key, "/drip/2000"), true).await;
    let mut spared = open_stream(gw.http(), get(agent.id(), &other, "/drip/2000"), false).await;
    one_byte(&mut h1).await;
    one_byte(&mut h2).await;
    one_byte(&mut spared).await;
    // A request whose answer takes 30 s.
    let waiting = tokio::spawn({
        let req = get(agent.id(), key, "/slow/30000").map(|_| Full::default());
        let at = gw.http();
        async move { send(at, req).await }
    });
    g2c_tests::wait_until(
        Duration::from_secs(5),
        "the app sees the slow request",
        || {
            let seen = app.seen();
            async move { seen.iter().any(|s| s.uri == "/slow/30000") }
        },
    )
    .await;

    gw.store.revoke_key(&doomed.info.id).await.unwrap();
    let revoked_at = Instant::now();

    let (n1, failed1) = drain(h1, WITHIN)
        .await
        .expect("HTTP/1.1 stream cut within 1 s");
    assert!(
        failed1 && n1 < 2000,
        "HTTP/1.1 stream failed, not ended cleanly"
    );
    let (n2, failed2) = drain(h2, WITHIN)
        .await
        .expect("HTTP/2 stream cut within 1 s");
    assert!(
        failed2 && n2 < 2000,
        "HTTP/2 stream reset, not ended cleanly"
    );
    let left = WITHIN.saturating_sub(revoked_at.elapsed());
    let ws_end = tokio::time::timeout(left + Duration::from_millis(50), ws.next())
        .await
        .expect("the WebSocket closed within 1 s");
    assert!(
        !matches!(ws_end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{ws_end:?}"
    );
    let reply = tokio::time::timeout(WITHIN, waiting)
        .await
        .expect("the waiting request answered within 1 s")
        .unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error_code(), Some("unauthorized"));
    assert!(
        revoked_at.elapsed() < WITHIN + Duration::from_millis(100),
        "{:?}",
        revoked_at.elapsed()
    );

    // The other key's stream lives on; the revoked key is refused.
    one_byte(&mut spared).await;
    one_byte(&mut spared).await;
    let again = send(gw.http(), routed(Method::GET, agent.id(), "/", key, "")).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    let fine = send(gw.http(), routed(Method::GET, agent.id(), "/", &other, "")).await;
    assert_eq!(fine.status, StatusCode::OK);
}
