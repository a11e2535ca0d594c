//! Agentless sites: a key registered by hand (admin API and CLI), then Debian's stock OpenSSH
//! client holding `ssh -N -R 0:127.0.0.1:<app>` to the real gateway. Callers reach the app
//! with the same routing, keys and errors as through an agent: GET and POST with bodies, a
//! 256 MiB download, a WebSocket, 100 concurrent requests. The same key gets no other port,
//! no shell and no `-W`/`-L` channel; killing `ssh` gives `agent_offline` within a second.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use g2c_tests::backend::Backend;
use g2c_tests::client::{download_checked, send};
use g2c_tests::harness::{routed, TestGateway};
use http::Method;
use http_body_util::Full;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// A site's key pair and the gateway's host key pinned, in `dir`.
struct Site {
    key: PathBuf,
    known_hosts: PathBuf,
}

fn site(dir: &Path, gw: &TestGateway) -> Site {
    let key = dir.join("id_ed25519");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "site", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (openssh-client; scripts/test.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    let host = g2c_proto::sshkeys::read_private_key(&gw.config.ssh.host_key).unwrap();
    let known_hosts = dir.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            gw.addrs.ssh.port(),
            g2c_proto::sshkeys::public_openssh(host.public_key())
        ),
    )
    .unwrap();
    Site { key, known_hosts }
}

/// `ssh` as a site runs it: `args` (forwards) after the common options, then the
/// destination, then `command` (empty: none).
fn ssh(site: &Site, gw: &TestGateway, user: &str, args: &[&str], command: &[&str]) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F")
        .arg("/dev/null")
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", site.known_hosts.display()))
        .arg("-i")
        .arg(&site.key)
        .args(["-p", &gw.addrs.ssh.port().to_string()])
        .args(args)
        .arg(format!("{user}@127.0.0.1"))
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Register the site's key through the admin API; its registration ID.
async fn register_by_hand(gw: &TestGateway, site: &Site) -> String {
    let public = std::fs::read_to_string(site.key.with_extension("pub")).unwrap();
    let mut req = gw.admin_request(Method::POST, "/v1/registrations");
    *req.body_mut() = Full::new(Bytes::from(
        serde_json::json!({ "public_key": public, "name": "nas" }).to_string(),
    ));
    let r = send(gw.addrs.admin, req).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let reg: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(reg["name"], "nas");
    reg["id"].as_str().unwrap().to_owned()
}

/// Wait until a request through the gateway gets `status` (within `limit`).
async fn wait_status(gw: &TestGateway, id: &str, key: &str, status: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let r = send(gw.http(), routed(Method::GET, id, "/up", key, "")).await;
        if r.status == status {
            return;
        }
        assert!(Instant::now() < deadline, "no {status} in {limit:?}: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn finished(child: Child) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("ssh did not finish")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_ssh_remote_forward_serves_callers_like_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let site = site(dir.path(), &gw);
    let id = register_by_hand(&gw, &site).await;
    let key = gw.key(&id).await;

    // Before the site connects: offline.
    let r = send(gw.http(), routed(Method::GET, &id, "/up", &key, "")).await;
    assert_eq!(r.headers["g2c-error"], "agent_offline", "{r:?}");

    let forward = format!("0:{}", app.addr);
    let tunnel = ssh(&site, &gw, &id, &["-N", "-R", &forward], &[])
        .spawn()
        .unwrap();
    wait_status(&gw, &id, &key, 200, Duration::from_secs(10)).await;

    let r = send(gw.http(), routed(Method::GET, &id, "/hello", &key, "")).await;
    assert_eq!(&r.body[..], b"hello from the private app: /hello");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let r = send(
        gw.http(),
        routed(Method::POST, &id, "/echo", &key, body.clone()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], &body[..], "the POST body came back changed");
    let wrong = send(
        gw.http(),
        routed(Method::GET, &id, "/hello", "g2c_nope", ""),
    )
    .await;
    assert_eq!(wrong.status, 401);

    let size = 256u64 << 20;
    let secs = download_checked(
        gw.http(),
        routed(Method::GET, &id, &format!("/bytes/{size}"), &key, ""),
        size,
    )
    .await;
    eprintln!("256 MiB through ssh -R: {secs:.2} s");

    // A WebSocket echoes through the forwarded channel.
    let tcp = TcpStream::connect(gw.http()).await.unwrap();
    let ws_req = g2c_tests::client::ws_request(&format!("ws://gw.test/r/{id}/ws"), &key);
    let (mut ws, _) = tokio_tungstenite::client_async(ws_req, tcp).await.unwrap();
    ws.send(Message::text("over plain ssh")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("over plain ssh")
    );
    drop(ws);

    // 100 at once.
    let answers = futures::future::join_all((0..100).map(|i| {
        let req = routed(Method::GET, &id, &format!("/bytes/{}", 1000 + i), &key, "");
        send(gw.http(), req)
    }))
    .await;
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.body.len(), 1000 + i);
    }

    // The same key may do nothing else: another port, a shell, a -W (direct-tcpip) channel.
    let other = format!("{}:{}", gw.addrs.ssh.port() + 1, app.addr);
    let (ok, out) = finished(
        ssh(&site, &gw, &id, &["-N", "-R", &other], &[])
            .spawn()
            .unwrap(),
    )
    .await;
    assert!(
        !ok && out.contains("remote port forwarding failed"),
        "another port was forwarded: {out}"
    );
    let (ok, out) = finished(
        ssh(&site, &gw, &id, &[], &["echo", "shell-ran"])
            .spawn()
            .unwrap(),
    )
    .await;
    // Logged in (no "Permission denied"), then refused the session channel.
    assert!(
        !ok && !out.contains("shell-ran") && !out.contains("Permission denied"),
        "a shell ran, or the login failed first: {out}"
    );
    let to = app.addr.to_string();
    let (ok, out) = finished(ssh(&site, &gw, &id, &["-W", &to], &[]).spawn().unwrap()).await;
    assert!(
        !ok && out.contains("stdio forwarding failed"),
        "a direct-tcpip channel opened: {out}"
    );
    // ... and the tunnel still serves.
    let r = send(gw.http(), routed(Method::GET, &id, "/still", &key, "")).await;
    assert_eq!(r.status, 200, "{r:?}");

    // Killed: offline within a second.
    let mut tunnel = tunnel;
    tunnel.start_kill().unwrap();
    let killed = Instant::now();
    let _ = tunnel.wait().await;
    wait_status(&gw, &id, &key, 502, Duration::from_secs(1)).await;
    let r = send(gw.http(), routed(Method::GET, &id, "/up", &key, "")).await;
    assert_eq!(r.headers["g2c-error"], "agent_offline");
    eprintln!("offline {:?} after the kill", killed.elapsed());
}
