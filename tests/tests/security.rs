//! Security properties of the tunnel: only registered keys authenticate, the agent refuses an
//! unpinned gateway, enrollment tokens are bounded, revocation is immediate, SSH compression is
//! never negotiated and AES-256-GCM is preferred.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use g2c_agent::register::{register, PlainHttp, RegisterError};
use g2c_proto::registration::RegisterRequest;
use g2c_proto::{sshkeys, ServiceKind};
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, TestAgent, TestGateway};
use g2c_tests::wait_until;
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_agent_key_is_refused_at_ssh_auth() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let mut cfg = gw.register(&[("web", ServiceKind::Http, app.addr)]).await;
    cfg.key_file = gw.dir.path().join("impostor_key");
    sshkeys::load_or_generate(&cfg.key_file).unwrap();
    let agent = TestAgent::start(cfg);
    let s = agent.status.clone();
    wait_until(Duration::from_secs(10), "auth refusal recorded", || {
        let st = s.snapshot();
        async move {
            st.last_error
                .is_some_and(|e| e.contains("refused authentication"))
        }
    })
    .await;
    assert!(!agent.status.snapshot().connected);
    let key = gw.key(agent.id()).await;
    let reply = send(gw.http(), routed(Method::GET, agent.id(), "/", &key, "")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(app.seen().is_empty());
    // Counted by reason; a registration ID that does not exist has a reason of its own.
    let scrape = gw.scrape().await;
    let mismatches = scrape
        .get("g2c_ssh_auth_failures_total", &[("reason", "key_mismatch")])
        .unwrap_or(0.0);
    assert!(mismatches >= 1.0, "{}", scrape.0);
    assert_eq!(
        scrape.get(
            "g2c_ssh_auth_failures_total",
            &[("reason", "unknown_registration")]
        ),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_a_gateway_whose_host_key_is_not_pinned() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let mut cfg = gw.register(&[("web", ServiceKind::Http, app.addr)]).await;
    cfg.gateway.host_key = sshkeys::public_openssh(sshkeys::generate_ed25519().public_key());
    let agent = TestAgent::start(cfg);
    let s = agent.status.clone();
    wait_until(
        Duration::from_secs(10),
        "host key mismatch recorded",
        || {
            let st = s.snapshot();
            async move {
                st.last_error
                    .is_some_and(|e| e.contains("host key does not match"))
            }
        },
    )
    .await;
    assert!(!agent.status.snapshot().connected);
}

/// Register over the test gateway's (loopback, plain HTTP) backchannel.
async fn register_over(
    gw: &TestGateway,
    req: &RegisterRequest,
) -> Result<g2c_proto::registration::RegisterResponse, RegisterError> {
    register(&gw.backchannel_url(), None, req, PlainHttp::LoopbackOnly).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_past_uses_or_expiry_are_refused() {
    let gw = TestGateway::start().await;
    let req = |token: &str| RegisterRequest {
        name: None,
        public_key: sshkeys::public_openssh(sshkeys::generate_ed25519().public_key()),
        token: token.to_owned(),
    };
    let two = gw.store.create_token(Some(2), None).await.unwrap().secret;
    register_over(&gw, &req(&two)).await.unwrap();
    register_over(&gw, &req(&two)).await.unwrap();
    let third = register_over(&gw, &req(&two)).await;
    assert!(
        matches!(third, Err(RegisterError::Refused { status: 401, .. })),
        "{third:?}"
    );
    let expired = gw
        .store
        .create_token(None, Some(Duration::ZERO))
        .await
        .unwrap()
        .secret;
    let r = register_over(&gw, &req(&expired)).await;
    assert!(
        matches!(r, Err(RegisterError::Refused { status: 401, .. })),
        "{r:?}"
    );
    let revoked = gw.store.create_token(None, None).await.unwrap();
    gw.store.revoke_token(&revoked.info.id).await.unwrap();
    let r = register_over(&gw, &req(&revoked.secret)).await;
    assert!(
        matches!(r, Err(RegisterError::Refused { status: 401, .. })),
        "{r:?}"
    );
    let r = register_over(&gw, &req("g2ct_made_up")).await;
    assert!(
        matches!(r, Err(RegisterError::Refused { status: 401, .. })),
        "{r:?}"
    );
    let bad_key = RegisterRequest {
        public_key: "ssh-ed25519 garbage".into(),
        ..req(&two)
    };
    let r = register_over(&gw, &bad_key).await;
    assert!(
        matches!(r, Err(RegisterError::Refused { status: 400, .. })),
        "{r:?}"
    );
    assert_eq!(gw.store.list_registrations().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_registration_closes_its_tunnel_within_a_second() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let (agent, key) = gw.web_agent(app.addr).await;
    assert_eq!(
        send(gw.http(), routed(Method::GET, agent.id(), "/", &key, ""))
            .await
            .status,
        StatusCode::OK
    );
    // Revoke through a separate store handle, as the CLI does from another process.
    gw.store.revoke_registration(agent.id()).await.unwrap();
    let s = agent.status.clone();
    wait_until(
        Duration::from_secs(1),
        "tunnel closed after revocation",
        || {
            let c = s.snapshot().connected;
            async move { !c }
        },
    )
    .await;
    let reply = send(gw.http(), routed(Method::GET, agent.id(), "/", &key, "")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "its keys were revoked with it"
    );
    // It cannot come back: its next attempt is refused.
    let attempts = agent.status.snapshot().reconnects;
    let s = agent.status.clone();
    wait_until(
        Duration::from_secs(10),
        "a refused reconnect attempt",
        || {
            let n = s.snapshot().reconnects;
            async move { n > attempts }
        },
    )
    .await;
    assert!(!agent.status.snapshot().connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_fails_the_next_request() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let agent =
        TestAgent::start_connected(gw.register(&[("web", ServiceKind::Http, app.addr)]).await)
            .await;
    let created = gw.store.create_key(agent.id()).await.unwrap();
    let other = gw.key(agent.id()).await;
    assert_eq!(
        send(
            gw.http(),
            routed(Method::GET, agent.id(), "/", &created.secret, "")
        )
        .await
        .status,
        StatusCode::OK
    );
    gw.store.revoke_key(&created.info.id).await.unwrap();
    // No sleep: the gateway re-checks the store on a cache miss, and polls every 250 ms; the
    // next request after the poll must fail.
    wait_until(Duration::from_secs(1), "revoked key refused", || {
        let (addr, id, k) = (gw.http(), agent.id().to_owned(), created.secret.clone());
        async move {
            send(addr, routed(Method::GET, &id, "/", &k, ""))
                .await
                .status
                == StatusCode::UNAUTHORIZED
        }
    })
    .await;
    assert_eq!(
        send(gw.http(), routed(Method::GET, agent.id(), "/", &other, ""))
            .await
            .status,
        StatusCode::OK
    );
}

/// A bare SSH client that records the negotiated cipher.
struct Probe(Arc<Mutex<Option<String>>>);

impl russh::client::Handler for Probe {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
    async fn kex_done(
        &mut self,
        _secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        *self.0.lock().unwrap() = Some(names.cipher.as_ref().to_owned());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_prefers_aes256_gcm_and_never_compresses() {
    let gw = TestGateway::start().await;
    // The agent's own configuration negotiates AES-256-GCM with the gateway.
    let seen = Arc::new(Mutex::new(None));
    let cfg = Arc::new(g2c_agent::tunnel::client_config());
    let _h = russh::client::connect(cfg, gw.addrs.ssh, Probe(seen.clone()))
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some("aes256-gcm@openssh.com")
    );
    // What the gateway offers, read off the wire: its KEXINIT lists only "none" for compression
    // in both directions and puts AES-256-GCM first.
    let lists = server_kexinit(gw.addrs.ssh).await;
    assert_eq!(lists[6], "none", "client-to-server compression");
    assert_eq!(lists[7], "none", "server-to-client compression");
    assert!(
        lists[2].starts_with("aes256-gcm@openssh.com"),
        "{}",
        lists[2]
    );
    assert!(
        !lists[2].contains("cbc") && !lists[2].split(',').any(|c| c == "none"),
        "{}",
        lists[2]
    );
}

/// Read the server's KEXINIT name-lists (kex, hostkey, enc c2s, enc s2c, mac c2s, mac s2c,
/// comp c2s, comp s2c, lang c2s, lang s2c) from a raw TCP connection.
async fn server_kexinit(addr: std::net::SocketAddr) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut r = BufReader::new(tcp);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("SSH-2.0-"), "{line:?}");
    r.get_mut().write_all(b"SSH-2.0-probe\r\n").await.unwrap();
    let len = r.read_u32().await.unwrap() as usize;
    assert!(len < 65536);
    let mut packet = vec![0u8; len];
    r.read_exact(&mut packet).await.unwrap();
    let pad = packet[0] as usize;
    let payload = &packet[1..len - pad];
    assert_eq!(payload[0], 20, "SSH_MSG_KEXINIT");
    let mut at = 1 + 16;
    let mut lists = Vec::new();
    for _ in 0..10 {
        let n = u32::from_be_bytes(payload[at..at + 4].try_into().unwrap()) as usize;
        lists.push(String::from_utf8(payload[at + 4..at + 4 + n].to_vec()).unwrap());
        at += 4 + n;
    }
    lists
}
