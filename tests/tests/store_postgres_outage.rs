//! A gateway on PostgreSQL, and the database going away under it (a fast shutdown and start,
//! as `pg_ctl restart -m fast`) under four request loops: requests over the tunnel
//! keep succeeding on cached credentials, the node stays ready, a registration during the
//! outage gets a clear 503 (`overloaded`), and everything recovers by itself once the server
//! is back (the pool reconnects; no restart of the gateway).

use std::time::{Duration, Instant};

use bytes::Bytes;
use g2c_gateway::config::GatewayConfig;
use g2c_tests::backend::Backend;
use g2c_tests::client::{send, Reply};
use g2c_tests::harness::{routed, GatewayOptions, TestGateway};
use g2c_tests::load::{failures, Load, Target};
use g2c_tests::postgres::Postgres;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

const PK: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoO77y3o9L9fItc8Lm9cP9mP6pRSA0kwuMdoO6DNAFg u";

fn quick_store_timeouts(c: &mut GatewayConfig) {
    c.store.connect_timeout_secs = 1;
}

async fn register(gw: &TestGateway, token: &str) -> Reply {
    let body = serde_json::json!({ "public_key": PK, "token": token }).to_string();
    let req = Request::post("/v1/registrations")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    send(gw.addrs.backchannel, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_keeps_tunnels_serving_and_refuses_writes_with_503_until_it_is_back() {
    let mut pg = Postgres::start();
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        store_url: Some(pg.create_database()),
        configure: Some(quick_store_timeouts),
        ..Default::default()
    })
    .await;
    let (agent, key) = gw.web_agent(app.addr).await;
    let token = gw.store.create_token(Some(1), None).await.unwrap().secret;
    let ok = send(gw.http(), routed(Method::GET, agent.id(), "/x", &key, "")).await;
    assert_eq!(ok.status, StatusCode::OK);

    // Four request loops over the tunnel for the whole outage and recovery.
    let load = Load::loops(
        Target {
            addr: gw.http(),
            registration: agent.id().to_owned(),
            key: key.clone(),
        },
        4,
        Duration::from_secs(60),
    );
    pg.stop();
    let down = Instant::now();
    for i in 0..20 {
        let r = send(gw.http(), routed(Method::GET, agent.id(), "/x", &key, "")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i} during the outage");
    }
    let ready = send(gw.addrs.admin, gw.admin_request(Method::GET, "/readyz")).await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "still ready: {:?}",
        ready.body
    );
    assert!(String::from_utf8_lossy(&ready.body).contains("store unreachable"));
    let refused = register(&gw, &token).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.error_code(), Some("overloaded"));
    assert!(refused.headers.contains_key("retry-after"));
    eprintln!("outage checks took {:?}", down.elapsed());

    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    let created = loop {
        let r = register(&gw, &token).await;
        if r.status == StatusCode::CREATED || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let ok = send(gw.http(), routed(Method::GET, agent.id(), "/x", &key, "")).await;
    assert_eq!(ok.status, StatusCode::OK);
    let all = load.finish().await;
    let failed = failures(&all);
    eprintln!(
        "{} requests under load through the stop and restart, {} failed",
        all.len(),
        failed.len()
    );
    assert!(all.len() > 100, "the load ran: {}", all.len());
    assert!(failed.is_empty(), "{:?}", failed.first().map(|o| &o.result));
}
