//! The real binaries as separate processes: gateway restart with the agent reconnecting by
//! itself, and bounded memory (RSS) for a 1 GiB download and a 256 MiB upload.

use std::time::{Duration, Instant};

use bytes::Bytes;
use g2c_tests::backend::{checksum, Backend, CHECKSUM_INIT};
use g2c_tests::client::send;
use g2c_tests::harness::routed;
use g2c_tests::pattern_byte;
use g2c_tests::procs::{register_agent, GatewayProc, ProcStack};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_restart_agent_reconnects_by_itself() {
    let app = Backend::start().await;
    let ProcStack {
        dir,
        mut gw,
        mut agent,
        id,
        key,
        ..
    } = ProcStack::start(app.addr).await;
    let http = gw.addrs.http.unwrap();
    assert_eq!(
        send(http, routed(Method::GET, &id, "/", &key, ""))
            .await
            .status,
        StatusCode::OK
    );

    // Stop the gateway (SIGTERM: graceful, exit 0), then start it again on the same ports.
    gw.proc.signal("TERM");
    assert_eq!(gw.proc.wait(Duration::from_secs(10)).await, Some(0));
    let addrs = gw.addrs.clone();
    let restarted = Instant::now();
    let gw = GatewayProc::start(dir.path(), Some(&addrs)).await;
    gw.wait_connected(&id, Duration::from_secs(15)).await;
    eprintln!(
        "agent back {:?} after the gateway restarted",
        restarted.elapsed()
    );
    let reply = send(http, routed(Method::GET, &id, "/after", &key, "")).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "registration and key survived the restart (SQLite)"
    );
    assert_eq!(app.last().uri, "/after");
    assert!(
        agent.log_text().contains("gateway went away; reconnecting"),
        "{}",
        agent.log_text()
    );

    // The agent exits 0 on SIGTERM.
    agent.signal("TERM");
    assert_eq!(agent.wait(Duration::from_secs(15)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_download_and_large_upload_keep_memory_bounded() {
    let app = Backend::start().await;
    // Keep `dir` bound: dropping it (as `..` would) deletes the running gateway's store.
    let ProcStack {
        gw,
        agent,
        id,
        key,
        dir: _dir,
        ..
    } = ProcStack::start(app.addr).await;
    let http = gw.addrs.http.unwrap();

    download_checked(http, &id, &key, 1024 * MIB).await;
    upload_checksummed(http, &id, &key, 256 * MIB).await;

    let gw_kib = gw.proc.peak_rss_kib();
    let agent_kib = agent.peak_rss_kib();
    eprintln!(
        "peak RSS: gateway {} MiB, agent {} MiB",
        gw_kib / 1024,
        agent_kib / 1024
    );
    assert!(gw_kib < 100 * 1024, "gateway peak RSS {gw_kib} KiB");
    assert!(agent_kib < 100 * 1024, "agent peak RSS {agent_kib} KiB");
}

/// Download `size` pattern bytes through the tunnel, checking every byte as it streams.
async fn download_checked(http: std::net::SocketAddr, id: &str, key: &str, size: u64) {
    let req = routed(Method::GET, id, &format!("/bytes/{size}"), key, "");
    let secs = g2c_tests::client::download_checked(http, req, size).await;
    eprintln!(
        "1 GiB download: {secs:.2} s, {:.0} MiB/s",
        size as f64 / MIB as f64 / secs
    );
}

/// Upload `up` pattern bytes, streamed; the app's checksum must match ours.
async fn upload_checksummed(http: std::net::SocketAddr, id: &str, key: &str, up: u64) {
    let chunk = 256 * 1024u64;
    let stream = futures::stream::iter((0..up / chunk).map(move |c| {
        let data: Vec<u8> = (c * chunk..(c + 1) * chunk).map(pattern_byte).collect();
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(data)))
    }));
    let expected = {
        let mut h = CHECKSUM_INIT;
        for c in 0..up / chunk {
            let data: Vec<u8> = (c * chunk..(c + 1) * chunk).map(pattern_byte).collect();
            h = checksum(&data, h);
        }
        h
    };
    let tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("/r/{id}/sink"))
        .header("host", "gw")
        .header("g2c-key", key)
        .body(http_body_util::StreamBody::new(stream))
        .unwrap();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["bytes"], up);
    assert_eq!(v["checksum"], expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_json_output_is_scriptable() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(dir.path(), None).await;
    let (id, _) = register_agent(&gw, dir.path(), &["web=127.0.0.1:9"]).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("agent_key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the agent's private key is readable by its owner only"
    );
    let list: serde_json::Value =
        serde_json::from_str(&gw.cli(&["--json", "registration", "list"]).await).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    let show: serde_json::Value =
        serde_json::from_str(&gw.cli(&["--json", "registration", "show", &id]).await).unwrap();
    assert!(show["tunnel_port"].as_u64().unwrap() > 0);
    assert!(show["tcp_services"].as_array().unwrap().is_empty());
    let key: serde_json::Value = serde_json::from_str(
        &gw.cli(&["--json", "key", "create", "--registration", &id])
            .await,
    )
    .unwrap();
    assert!(key["secret"].as_str().unwrap().starts_with("g2ck_"));
    let keys = gw.cli(&["--json", "key", "list"]).await;
    assert!(!keys.contains("g2ck_"), "secrets are never listed");
    let token: serde_json::Value = serde_json::from_str(
        &gw.cli(&["--json", "token", "create", "--uses", "3", "--ttl", "1h"])
            .await,
    )
    .unwrap();
    assert_eq!(token["uses_left"], 3);
    let tokens: serde_json::Value =
        serde_json::from_str(&gw.cli(&["--json", "token", "list"]).await).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 2);
    let scoped: serde_json::Value = serde_json::from_str(
        &gw.cli(&[
            "--json",
            "key",
            "create",
            "--registration",
            &id,
            "--service",
            "Web",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(scoped["service"], "web");
    assert!(gw.cli(&["key", "list"]).await.contains("service=web"));
    // A site without the agent: its key registered by hand, the ssh line to run printed.
    let site_key = dir.path().join("site_ed25519");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&site_key)
        .status()
        .unwrap();
    assert!(made.success());
    let public = site_key.with_extension("pub");
    let by_hand: serde_json::Value = serde_json::from_str(
        &gw.cli(&[
            "--json",
            "registration",
            "create",
            "--public-key",
            public.to_str().unwrap(),
            "--name",
            "nas",
        ])
        .await,
    )
    .unwrap();
    let site = by_hand["id"].as_str().unwrap();
    assert_eq!(by_hand["name"], "nas");
    let line = by_hand["ssh_command"].as_str().unwrap();
    assert!(
        line.contains(&format!("-R 0:127.0.0.1:8080 {site}@")),
        "{line}"
    );
    assert!(by_hand["known_hosts"]
        .as_str()
        .unwrap()
        .contains("ssh-ed25519 "));
    gw.cli(&["registration", "revoke", &id]).await;
    let show: serde_json::Value =
        serde_json::from_str(&gw.cli(&["--json", "registration", "show", &id]).await).unwrap();
    assert!(show["revoked_at"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_backpressured_not_buffered() {
    // The app can send 48 MiB at once; the caller reads slowly. Flow control (TCP, SSH window,
    // yamux window) must hold the data back at the app instead of piling it up in the gateway
    // or the agent.
    let app = Backend::start().await;
    // Keep `dir` bound: dropping it (as `..` would) deletes the running gateway's store.
    let ProcStack {
        gw,
        agent,
        id,
        key,
        dir: _dir,
        ..
    } = ProcStack::start(app.addr).await;
    let size = 48 * MIB;
    let mut tcp = tokio::net::TcpStream::connect(gw.addrs.http.unwrap())
        .await
        .unwrap();
    let request = format!(
        "GET /r/{id}/bytes/{size} HTTP/1.1\r\nHost: gw\r\nG2C-Key: {key}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut got = 0u64;
    let mut peak = (0, 0);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
        // 16 KiB per millisecond at most: far slower than the tunnel delivers.
        tokio::time::sleep(Duration::from_millis(1)).await;
        if got < size / 2 {
            peak = (gw.proc.peak_rss_kib(), agent.peak_rss_kib());
        }
    }
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the reader really was slow"
    );
    assert!(got > size, "the whole response (headers and body) arrived");
    eprintln!(
        "slow reader: peak RSS gateway {} MiB, agent {} MiB",
        peak.0 / 1024,
        peak.1 / 1024
    );
    assert!(
        peak.0 < 40 * 1024,
        "gateway buffered the stream: {} KiB",
        peak.0
    );
    assert!(
        peak.1 < 40 * 1024,
        "agent buffered the stream: {} KiB",
        peak.1
    );
}
