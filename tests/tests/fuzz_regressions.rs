//! Replays the fuzz seeds and every input a fuzzer ever crashed on (`fuzz/seeds/<target>`,
//! `fuzz/regressions/<target>`) against the real components, so a fixed crash stays fixed in
//! the ordinary test run: the proto decoders, and the front door and registration API of a
//! running gateway over real sockets (`G2CREG` / `G2CKEY` become a real registration and key).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use g2c_proto::frame::read_frame;
use g2c_proto::{Ack, ControlMessage, StreamHeader};
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, TestGateway};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::TcpStream;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
            for e in entries.flatten() {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    assert!(!out.is_empty(), "no inputs for {target}");
    out
}

/// Write `input` and read until a response head has arrived or the gateway closed; either must
/// happen within 5 s (the connection stays open for the caller's next request otherwise).
async fn exchange(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let io = async {
        let _ = tcp.write_all(input).await;
        let mut buf = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .expect("no hang");
    out
}

/// Decode every frame of `data` as `T`; each decoded message must survive a round trip.
async fn round_trips<T>(data: &[u8]) -> usize
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let mut r = data;
    let mut n = 0;
    while let Ok(Some(msg)) = read_frame::<T, _>(&mut r).await {
        let bytes = g2c_proto::frame::encode(&msg).unwrap();
        let back: T = read_frame(&mut &bytes[..]).await.unwrap().unwrap();
        assert_eq!(back, msg, "a decoded frame re-encodes to itself");
        n += 1;
    }
    n
}

#[tokio::test]
async fn proto_decoders_survive_every_seed_and_regression() {
    let mut decoded = 0;
    for (path, data) in inputs("proto_frames") {
        decoded += round_trips::<ControlMessage>(&data).await;
        decoded += round_trips::<StreamHeader>(&data).await;
        decoded += round_trips::<Ack>(&data).await;
        eprintln!("ok: {}", path.display());
    }
    assert!(decoded > 0, "the seeds hold valid frames, and they decode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_every_front_door_and_registration_input_without_500() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let (agent, key) = gw.web_agent(app.addr).await;
    let fill = |data: &[u8]| {
        String::from_utf8_lossy(data)
            .replace("G2CREG", agent.id())
            .replace("G2CKEY", &key)
            .into_bytes()
    };
    for (path, data) in inputs("front_door") {
        let out = exchange(gw.http(), &fill(&data)).await;
        assert!(!out.starts_with(b"HTTP/1.1 500"), "{}: 500", path.display());
        // A complete request head always gets an answer (a panicking handler gives none).
        let complete =
            data.windows(4).any(|w| w == b"\r\n\r\n") || data.windows(2).any(|w| w == b"\n\n");
        assert!(
            !complete || out.starts_with(b"HTTP/1.1 "),
            "{}: no answer",
            path.display()
        );
    }
    for (path, data) in inputs("registration_api") {
        let input = if data.starts_with(b"GET ") || data.starts_with(b"POST ") {
            data
        } else {
            let mut req = format!(
                "POST /v1/registrations HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                data.len()
            )
            .into_bytes();
            req.extend_from_slice(&data);
            req
        };
        let out = exchange(gw.addrs.backchannel, &fill(&input)).await;
        assert!(!out.starts_with(b"HTTP/1.1 500"), "{}: 500", path.display());
    }
    let token = std::fs::read_to_string(gw.dir.path().join("admin_token")).unwrap();
    for (path, data) in inputs("admin_api") {
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = g2c_gateway::fuzzing::cidr_round_trip(text, "203.0.113.5".parse().unwrap());
        }
        let raw = [&b"GET "[..], b"POST ", b"PUT ", b"DELETE "]
            .iter()
            .any(|m| data.starts_with(m));
        let input = if raw {
            data
        } else {
            let mut req = b"GET ".to_vec();
            req.extend_from_slice(&data);
            req.extend_from_slice(
                b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer G2CADMIN\r\n\r\n",
            );
            req
        };
        let input = String::from_utf8_lossy(&fill(&input))
            .replace("G2CADMIN", token.trim())
            .into_bytes();
        let out = exchange(gw.addrs.admin, &input).await;
        assert!(!out.starts_with(b"HTTP/1.1 500"), "{}: 500", path.display());
    }
    // Still serving.
    let r = send(
        gw.http(),
        routed(Method::GET, agent.id(), "/bytes/3", &key, ""),
    )
    .await;
    assert_eq!(r.status, 200);
}
