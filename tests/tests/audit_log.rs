//! The audit log end to end: one JSON line per HTTP request and per TCP connection, with the
//! documented fields and no secret.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, GatewayOptions, TestAgent, TestGateway};
use g2c_tests::wait_until;
use http::{Method, Request};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_has_one_line_per_request_and_no_secret() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        audit_file: true,
        ..Default::default()
    })
    .await;
    let agent = TestAgent::start_connected(
        gw.register(&[
            ("web", ServiceKind::Http, app.addr),
            ("raw", ServiceKind::Tcp, app.addr),
        ])
        .await,
    )
    .await;
    let id = agent.id().to_owned();
    let created = gw.store.create_key(&id).await.unwrap();
    let (key, key_id) = (created.secret, created.info.id);
    let public = gw.open_tcp(&id, "raw", &["127.0.0.1/32"]).await;
    let audit = gw.dir.path().join("audit.log");

    let app_secret = "Bearer app-own-secret-5f1e";
    let with_secrets = Request::post(format!("/r/{id}/echo?token=query-secret-77"))
        .header("host", "gw.test")
        .header("proxy-authorization", format!("Bearer {key}"))
        .header("authorization", app_secret)
        .body(Full::new(Bytes::from_static(b"0123456789")))
        .unwrap();
    let r = send(gw.http(), with_secrets).await;
    assert_eq!(r.status, 200);
    let request_id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let r = send(
        gw.http(),
        routed(Method::GET, &id, "/x", "g2ck_wrong-secret", ""),
    )
    .await;
    assert_eq!(r.status, 401);

    let (raw, answer) = raw_tcp_exchange(public).await;

    // (open_tcp's readiness probe connections are audited too, with zero bytes.)
    wait_until(Duration::from_secs(5), "audit lines written", || {
        let lines = audit_lines(&audit);
        let http = lines.iter().filter(|l| l["kind"] == "http").count();
        let tcp = lines
            .iter()
            .filter(|l| l["kind"] == "tcp" && l["bytes_in"] != 0)
            .count();
        async move { http >= 2 && tcp >= 1 }
    })
    .await;
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [
        &key[..],
        "g2ck_wrong-secret",
        "app-own-secret",
        "query-secret",
    ] {
        assert!(!text.contains(secret), "audit log leaks {secret:?}");
    }
    let lines = audit_lines(&audit);
    let http: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "http").collect();
    assert_eq!(http.len(), 2, "one line per HTTP request: {text}");
    http_lines_are_complete(&http, &id, &key_id, &request_id);

    let tcp_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["kind"] == "tcp" && l["bytes_in"] == raw.len())
        .collect();
    assert_eq!(tcp_lines.len(), 1, "{text}");
    let t = tcp_lines[0];
    assert_eq!(t["service"], "raw");
    assert_eq!(t["bytes_out"], answer.len());
    assert_eq!(t["registration"], id.as_str());
}

/// One plain HTTP/1.0 exchange over the TCP service's public port: what was sent, and the
/// answer.
async fn raw_tcp_exchange(public: SocketAddr) -> (&'static [u8], Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(public).await.unwrap();
    let raw: &'static [u8] = b"GET /raw HTTP/1.0\r\nHost: x\r\n\r\n";
    tcp.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200"));
    drop(tcp);
    (raw, answer)
}

/// The allowed request's line has every documented field with its value; the refused one
/// names its error and no key.
fn http_lines_are_complete(http: &[&serde_json::Value], id: &str, key_id: &str, request_id: &str) {
    let ok = http.iter().find(|l| l["status"] == 200).unwrap();
    for field in [
        "time",
        "registration",
        "key_id",
        "caller",
        "method",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "error",
        "request_id",
    ] {
        assert!(ok.get(field).is_some(), "field {field} missing: {ok}");
    }
    assert_eq!(ok["registration"], id);
    assert_eq!(ok["key_id"], key_id);
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["path"], format!("/r/{id}/echo"));
    assert_eq!(ok["bytes_in"], 10);
    assert!(ok["bytes_out"].as_u64().unwrap() >= 10);
    assert_eq!(ok["request_id"], request_id);
    assert!(ok["error"].is_null());
    assert!(ok["caller"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    let denied = http.iter().find(|l| l["status"] == 401).unwrap();
    assert_eq!(denied["error"], "unauthorized");
    assert_eq!(denied["registration"], id);
    assert!(denied["key_id"].is_null());
}
