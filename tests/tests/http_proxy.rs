//! HTTP through the tunnel, end to end on real sockets: methods and bodies byte-identical, header
//! rules (the app's Authorization passes, our credentials never do), routing by host, header and
//! path, WebSocket upgrade, and HTTP/2 callers (h2c prior knowledge and h2 over TLS by ALPN).

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::{send, send_h2c, send_tls};
use g2c_tests::harness::{routed, GatewayOptions, TestAgent, TestGateway};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokio_tungstenite::tungstenite::Message;

async fn setup(opts: GatewayOptions) -> (TestGateway, TestAgent, Backend, String) {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(opts).await;
    let cfg = gw.register(&[("web", ServiceKind::Http, app.addr)]).await;
    let agent = TestAgent::start_connected(cfg).await;
    let key = gw.key(agent.id()).await;
    (gw, agent, app, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_and_bodies_come_back_byte_identical() {
    let (gw, agent, app, key) = setup(GatewayOptions::default()).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ] {
        let reply = send(
            gw.http(),
            routed(method.clone(), agent.id(), "/echo", &key, body.clone()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{method}");
        assert_eq!(reply.body.len(), body.len(), "{method}");
        assert!(reply.body == body, "{method}: body differs");
        assert_eq!(app.last().method, method);
        assert_eq!(app.last().uri, "/echo", "the /r/<id> prefix is stripped");
    }
    // Query strings survive the prefix strip.
    let reply = send(
        gw.http(),
        routed(Method::GET, agent.id(), "/q?a=1&b=two", &key, ""),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(app.last().uri, "/q?a=1&b=two");
    assert!(reply.headers.contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_and_streamed_download() {
    let (gw, agent, _app, key) = setup(GatewayOptions::default()).await;
    // Streamed (chunked) request body.
    let tcp = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..64)
        .map(|i| Ok(hyper::body::Frame::data(Bytes::from(vec![i as u8; 10_000]))))
        .collect();
    let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
    let req = Request::post(format!("/r/{}/sink", agent.id()))
        .header("host", "gw")
        .header("g2c-key", &key)
        .body(body)
        .unwrap();
    assert!(!req.headers().contains_key("content-length"));
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(v["bytes"], 640_000);
    // Content-length download of 5 MB with the pattern intact.
    let reply = send(
        gw.http(),
        routed(Method::GET, agent.id(), "/bytes/5000000", &key, ""),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 5_000_000);
    assert!(reply
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == g2c_tests::pattern_byte(i as u64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_sees_its_authorization_and_never_our_credentials() {
    let (gw, agent, app, key) = setup(GatewayOptions::default()).await;
    for (name, value) in [
        ("proxy-authorization", format!("Bearer {key}")),
        ("g2c-key", key.clone()),
    ] {
        let req = Request::get(format!("/r/{}/hdr", agent.id()))
            .header("host", "gw.example")
            .header(name, value)
            .header("authorization", "Basic YXBwOnNlY3JldA==")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "must-not-pass")
            .header("x-forwarded-for", "203.0.113.9")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = send(gw.http(), req).await;
        assert_eq!(reply.status, StatusCode::OK);
        let seen = app.last().headers;
        assert_eq!(seen["authorization"], "Basic YXBwOnNlY3JldA==");
        assert!(!seen.contains_key("proxy-authorization"));
        assert!(!seen.contains_key("g2c-key"));
        assert!(!seen.contains_key("g2c-registration"));
        assert!(
            !seen.contains_key("x-hop"),
            "headers nominated by Connection are hop-by-hop"
        );
        // The caller is no trusted proxy: its claim is replaced (tests/hardening_forwarded.rs).
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
        assert_eq!(seen["x-forwarded-proto"], "http");
        assert_eq!(seen["x-forwarded-host"], "gw.example");
        assert!(seen.contains_key("x-request-id"));
        assert_eq!(
            seen["host"], "gw.example",
            "the caller's Host reaches the app"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_by_header() {
    let (gw, agent, app, key) = setup(GatewayOptions::default()).await;
    let by_host = Request::get("/p1")
        .header("host", format!("{}.g2c.test:8000", agent.id()))
        .header("proxy-authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(gw.http(), by_host).await.status, StatusCode::OK);
    assert_eq!(app.last().uri, "/p1");
    let by_header = Request::get("/p2")
        .header("host", "anything")
        .header("g2c-registration", agent.id())
        .header("g2c-key", &key)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(gw.http(), by_header).await.status, StatusCode::OK);
    assert_eq!(app.last().uri, "/p2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let (gw, agent, _app, key) = setup(GatewayOptions::default()).await;
    let tcp = tokio::net::TcpStream::connect(gw.http()).await.unwrap();
    let req = g2c_tests::client::ws_request(&format!("ws://gw.test/r/{}/ws", agent.id()), &key);
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back, Message::text(text));
    }
    ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![7u8; 100_000])
    );
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_callers_prior_knowledge_and_alpn() {
    let (gw, agent, app, key) = setup(GatewayOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let body = vec![42u8; 100_000];
    let req = |scheme: &str, port: u16| {
        Request::post(format!("{scheme}://localhost:{port}/r/{}/echo", agent.id()))
            .header("g2c-key", &key)
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap()
    };
    let reply = send_h2c(gw.http(), req("http", gw.http().port())).await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == body);
    assert_eq!(
        app.last().headers["host"],
        format!("localhost:{}", gw.http().port()),
        "h2 :authority becomes Host"
    );
    let https = gw.addrs.https.unwrap();
    let pem = gw.tls_cert_pem.clone().unwrap();
    let reply = send_tls(https, "localhost", &pem, req("https", https.port())).await;
    assert_eq!(
        reply.version,
        http::Version::HTTP_2,
        "h2 negotiated by ALPN"
    );
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == body);
    assert_eq!(app.last().headers["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_over_tls_backchannel_and_concurrent_requests() {
    // `setup` with tls registers through the HTTPS backchannel (rcgen CA trusted by --ca-cert).
    let (gw, agent, _app, key) = setup(GatewayOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (addr, id, key) = (gw.http(), agent.id().to_owned(), key.clone());
        tasks.push(tokio::spawn(async move {
            let r = send(
                addr,
                routed(Method::POST, &id, "/echo", &key, format!("req {i}")),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.body, format!("req {i}"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled_per_agent() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let mut cfg = gw.register(&[("web", ServiceKind::Http, app.addr)]).await;
    cfg.services[0].health_check = Some(false); // count only the tunnel's connections
    let agent = TestAgent::start_connected(cfg).await;
    let key = gw.key(agent.id()).await;
    for i in 0..50 {
        let r = send(
            gw.http(),
            routed(Method::GET, agent.id(), &format!("/n{i}"), &key, ""),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(app.seen().len(), 50);
    assert_eq!(
        app.connections(),
        1,
        "50 sequential requests from 50 caller connections reuse one upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_closes_its_connections_never_fails_a_request() {
    // The pool's adversarial twin: every other answer ends the pooled connection, so the
    // next request must not be sent on it (or must be retried on a fresh one).
    let (gw, agent, app, key) = setup(GatewayOptions::default()).await;
    for i in 0..40 {
        let path = if i % 2 == 0 { "/close" } else { "/bytes/7" };
        let r = send(gw.http(), routed(Method::GET, agent.id(), path, &key, "")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i} to {path}");
        let want: &[u8] = if i % 2 == 0 {
            b"closing"
        } else {
            &[0, 1, 2, 3, 4, 5, 6]
        };
        assert_eq!(&r.body[..], want, "request {i}");
    }
    assert!(app.connections() >= 20, "each /close ended a connection");
}
