//! Protocol-aware health checks. The MySQL probe logs in and quits, so a real MariaDB that
//! blocks a host after one failed handshake (`max_connect_errors = 1`) still lets that host in
//! after a thousand probes, where bare connects block it at once. Through the real gateway and
//! agent: a stopped MariaDB shows unhealthy within two heartbeats and healthy again after it
//! restarts, an HTTP service answering 500 on its health path shows unhealthy, and with
//! `refuse_unhealthy_services` callers get 503 `local_service_unhealthy` for it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use g2c_agent::config::{HealthCheck, HealthProbe, ServiceConfig};
use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{GatewayOptions, TestAgent, TestGateway};
use g2c_tests::mariadb::{MariaDb, MariaDbOptions};
use http::{Method, Request};
use http_body_util::Full;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// The probes' host: not 127.0.0.1, for which MariaDB keeps no host cache (and so never
/// blocks it).
const PROBE_HOST: [u8; 4] = [127, 0, 0, 2];
/// A host that shows what bare connects do.
const BARE_HOST: [u8; 4] = [127, 0, 0, 3];

/// A relay on `127.0.0.1:0` whose connections reach `to` from `source`, so that whatever
/// connects to it (the agent's probe, a real client) is one host to the server.
async fn relay_from(source: [u8; 4], to: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut caller, _)) = listener.accept().await {
            tokio::spawn(async move {
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::from((source, 0))).unwrap();
                if let Ok(mut server) = socket.connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut caller, &mut server).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_probes_never_trip_max_connect_errors() {
    let db = tokio::task::spawn_blocking(|| {
        MariaDb::start_with(MariaDbOptions {
            bind: IpAddr::from([127, 0, 0, 2]),
            resolve_names: true,
            extra: vec!["--max-connect-errors=1".into()],
        })
    })
    .await
    .unwrap();
    let bare = relay_from(BARE_HOST, db.addr).await;
    let probed = relay_from(PROBE_HOST, db.addr).await;
    let client = |via: SocketAddr, sql: &'static str| {
        tokio::task::spawn_blocking(move || MariaDb::cli(via, sql))
    };

    // The trap is armed: a host whose connection closed before the handshake is blocked.
    let mut blocked = None;
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(bare).await.unwrap();
        let mut greeting = [0u8; 4];
        let _ = tcp.read_exact(&mut greeting).await;
        drop(tcp);
        tokio::time::sleep(Duration::from_millis(50)).await; // the server reads the EOF
        if let Err(e) = client(bare, "SELECT 1").await.unwrap() {
            blocked = Some(e);
            break;
        }
    }
    let blocked = blocked.expect("bare connects never blocked their host");
    assert!(blocked.contains("blocked"), "{blocked}");

    // A thousand probes of the agent from another host, each a complete connection.
    let mut service = ServiceConfig::new("db", ServiceKind::Tcp, probed.to_string());
    service.health = Some(probe(HealthProbe::Mysql));
    let check = service.health_probe();
    for i in 0..1000 {
        let seen = g2c_agent::health::probe(&service, None, &check).await;
        assert!(seen.is_ok(), "probe {i}: {seen:?}\n{}", db.error_log());
    }
    let answer = client(probed, "SELECT 41 + 1").await.unwrap();
    assert_eq!(answer.as_deref().map(str::trim), Ok("42"), "{answer:?}");
}

fn probe(kind: HealthProbe) -> HealthCheck {
    HealthCheck::new(kind)
}

/// The registration's services' health as the admin API shows it.
async fn health(gw: &TestGateway, id: &str) -> Vec<(String, Option<bool>)> {
    let r = send(
        gw.addrs.admin,
        gw.admin_request(Method::GET, &format!("/v1/registrations/{id}")),
    )
    .await;
    let view: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    view["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["healthy"].as_bool(),
            )
        })
        .collect()
}

async fn wait_health(gw: &TestGateway, id: &str, service: &str, want: bool, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let now = health(gw, id).await;
        if now.iter().any(|(n, h)| n == service && *h == Some(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service} not healthy={want} within {limit:?}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_a_stopped_mariadb_and_an_http_500_and_can_refuse_callers() {
    let mut db = tokio::task::spawn_blocking(MariaDb::start).await.unwrap();
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        heartbeat_secs: Some(1),
        configure: Some(|c| c.limits.refuse_unhealthy_services = true),
        ..Default::default()
    })
    .await;
    let mut web = ServiceConfig::new("web", ServiceKind::Http, app.addr.to_string());
    web.health = Some(HealthCheck {
        path: Some("/status/204".into()),
        ..probe(HealthProbe::Http)
    });
    let mut broken = ServiceConfig::new("broken", ServiceKind::Http, app.addr.to_string());
    broken.health = Some(HealthCheck {
        path: Some("/status/500".into()),
        ..probe(HealthProbe::Http)
    });
    let mut mysql = ServiceConfig::new("db", ServiceKind::Tcp, db.addr.to_string());
    mysql.health = Some(probe(HealthProbe::Mysql));
    let config = gw.register_services(vec![web, broken, mysql]).await;
    let agent = TestAgent::start_connected(config).await;
    let id = agent.id().to_owned();
    let key = gw.key(&id).await;

    let limit = Duration::from_secs(10);
    wait_health(&gw, &id, "web", true, limit).await;
    wait_health(&gw, &id, "broken", false, limit).await;
    wait_health(&gw, &id, "db", true, limit).await;
    let scrape = gw.scrape().await;
    let up = |svc: &str| {
        scrape.get(
            "g2c_agent_service_up",
            &[("registration", id.as_str()), ("service", svc)],
        )
    };
    assert_eq!(
        (up("web"), up("broken"), up("db")),
        (Some(1.0), Some(0.0), Some(1.0))
    );

    let call = |svc: &str| {
        Request::builder()
            .uri(format!("/r/{svc}--{id}/hello"))
            .header("g2c-key", key.as_str())
            .body(Full::default())
            .unwrap()
    };
    let r = send(gw.http(), call("web")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = send(gw.http(), call("broken")).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.headers["g2c-error"], "local_service_unhealthy");

    // Stopped: unhealthy within two heartbeats (one second of slack for this machine).
    db.kill();
    let stopped = Instant::now();
    wait_health(&gw, &id, "db", false, Duration::from_secs(3)).await;
    let noticed = stopped.elapsed();
    let db = tokio::task::spawn_blocking(move || {
        db.restart();
        db
    })
    .await
    .unwrap();
    wait_health(&gw, &id, "db", true, limit).await;
    eprintln!("a stopped MariaDB showed unhealthy after {noticed:?}");
    drop(db);
}
