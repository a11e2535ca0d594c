//! HTTPS origins: a service whose `local` is `https://host:port` is reached over TLS that the
//! agent verifies against the service's CA and `server_name`. An origin the agent does not
//! trust gives the caller 502 `local_tls_error`, never a plaintext retry; `tls_skip_verify`
//! turns verification off for one service, and says so in the log; `http2 = true` speaks HTTP/2
//! to an origin that picks it. A real TLS origin (rustls + hyper) with rcgen
//! certificates, the real gateway and agent.

use std::net::SocketAddr;

use bytes::Bytes;
use g2c_agent::config::ServiceConfig;
use g2c_proto::ServiceKind;
use g2c_tests::client::send;
use g2c_tests::harness::{TestAgent, TestGateway};
use g2c_tests::tls_origin::{origin, pki, ORIGIN_NAME};
use http::{Method, Request};
use http_body_util::Full;

/// What the agent logged in this test binary, so a test can read its warnings.
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .try_init();
    });
}

fn https(name: &str, addr: SocketAddr) -> ServiceConfig {
    ServiceConfig::new(name, ServiceKind::Http, format!("https://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_origin_answers_and_an_untrusted_one_is_local_tls_error_never_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let stranger = pki(dir.path(), "stranger");
    capture_logs();
    let addr = origin(&good, false).await;

    let trusted = ServiceConfig {
        ca_file: Some(good.ca_file.clone()),
        server_name: Some(ORIGIN_NAME.into()),
        ..https("trusted", addr)
    };
    let wrong_ca = ServiceConfig {
        ca_file: Some(stranger.ca_file.clone()),
        server_name: Some(ORIGIN_NAME.into()),
        ..https("wrongca", addr)
    };
    let wrong_name = ServiceConfig {
        ca_file: Some(good.ca_file.clone()),
        server_name: Some("other.site.internal".into()),
        ..https("wrongname", addr)
    };
    // No server_name: the certificate is checked for 127.0.0.1, which it does not name.
    let by_address = ServiceConfig {
        ca_file: Some(good.ca_file.clone()),
        ..https("byaddress", addr)
    };
    let unverified = ServiceConfig {
        tls_skip_verify: true,
        ..https("unverified", addr)
    };

    let gw = TestGateway::start().await;
    let config = gw
        .register_services(vec![trusted, wrong_ca, wrong_name, by_address, unverified])
        .await;
    let agent = TestAgent::start_connected(config).await;
    let key = gw.key(agent.id()).await;
    let http = gw.addrs.http.unwrap();
    let id = agent.id().to_owned();
    let call = |svc: &str| {
        Request::builder()
            .method(Method::GET)
            .uri(format!("/r/{svc}--{id}/hello"))
            .header("host", "gateway.test")
            .header("g2c-key", key.as_str())
            .body(Full::default())
            .unwrap()
    };

    for _ in 0..3 {
        // pooled: later requests reuse the TLS connection
        let r = send(http, call("trusted")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(&r.body[..], b"secure /hello HTTP/1.1 0");
    }
    for svc in ["wrongca", "wrongname", "byaddress"] {
        let r = send(http, call(svc)).await;
        assert_eq!(r.status, 502, "{svc}: {:?}", r.body);
        assert_eq!(r.headers["g2c-error"], "local_tls_error", "{svc}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains(svc), "{body}");
        assert!(
            !body.contains("127.0.0.1"),
            "the origin's address stays private: {body}"
        );
    }
    let r = send(http, call("unverified")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
    let warned = log
        .lines()
        .find(|l| l.contains("TLS VERIFICATION IS OFF"))
        .expect("the opt-out is logged when the service is set up");
    assert!(
        warned.contains("WARN") && warned.contains("unverified"),
        "{warned}"
    );
    assert_eq!(&r.body[..], b"secure /hello HTTP/1.1 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_picks_h2_is_spoken_to_in_http2_and_bodies_cross() {
    let dir = tempfile::tempdir().unwrap();
    let good = pki(dir.path(), "good");
    let both = origin(&good, true).await;
    let trusted = |name: &str, http2: bool| ServiceConfig {
        ca_file: Some(good.ca_file.clone()),
        server_name: Some(ORIGIN_NAME.into()),
        http2,
        ..https(name, both)
    };
    let gw = TestGateway::start().await;
    let config = gw
        .register_services(vec![trusted("h2", true), trusted("h1", false)])
        .await;
    let agent = TestAgent::start_connected(config).await;
    let key = gw.key(agent.id()).await;
    let http = gw.addrs.http.unwrap();
    let id = agent.id().to_owned();
    let call = |svc: &str, method: Method, body: &'static [u8]| {
        Request::builder()
            .method(method)
            .uri(format!("/r/{svc}--{id}/hello"))
            .header("host", "gateway.test")
            .header("g2c-key", key.as_str())
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };
    for _ in 0..3 {
        let r = send(http, call("h2", Method::GET, b"")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(&r.body[..], b"secure /hello HTTP/2.0 0");
        let r = send(http, call("h2", Method::POST, &[7u8; 70_000])).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(&r.body[..], b"secure /hello HTTP/2.0 70000");
    }
    // The same origin, h2 not offered: HTTP/1.1.
    let r = send(http, call("h1", Method::POST, b"four")).await;
    assert_eq!(&r.body[..], b"secure /hello HTTP/1.1 4");
    // A WebSocket cannot cross HTTP/2 here: a clear 501, not a hang.
    let mut req = call("h2", Method::GET, b"");
    req.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    req.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    let r = send(http, req).await;
    assert_eq!(r.status, 501, "{:?}", r.body);
}

#[test]
fn tls_settings_need_an_https_origin_and_the_opt_out_stands_alone() {
    let base = |local: &str| ServiceConfig::new("web", ServiceKind::Http, local);
    let check = |s: ServiceConfig| {
        let mut c = g2c_agent::config::AgentConfig::from_toml(
            include_str!("../../deploy/agent.toml"),
            std::path::Path::new("agent.toml"),
        )
        .unwrap();
        c.services = vec![s];
        c.validate().map_err(|e| e.to_string())
    };
    check(base("https://app.internal:8443")).unwrap();
    let e = check(ServiceConfig {
        server_name: Some("x".into()),
        ..base("127.0.0.1:80")
    })
    .unwrap_err();
    assert!(e.contains("https://"), "{e}");
    let e = check(ServiceConfig {
        tls_skip_verify: true,
        ca_file: Some("ca.pem".into()),
        ..base("https://app.internal:8443")
    })
    .unwrap_err();
    assert!(e.contains("tls_skip_verify"), "{e}");
    let e = check(ServiceConfig::new(
        "db",
        ServiceKind::Tcp,
        "https://db.internal:3306",
    ))
    .unwrap_err();
    assert!(e.contains("http services"), "{e}");
}
