//! Session lifecycle: a second session for a registration replaces the first at once, and an
//! agent started before its gateway exists connects as soon as the gateway appears.

use std::time::{Duration, Instant};

use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, GatewayOptions, TestAgent, TestGateway};
use g2c_tests::wait_until;
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_replaces_the_first_immediately() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let cfg = gw.register(&[("web", ServiceKind::Http, app.addr)]).await;
    let mut first = TestAgent::start_connected(cfg.clone()).await;
    let key = gw.key(first.id()).await;
    let drops_before = first.status.snapshot().reconnects;
    let second = TestAgent::start_connected(cfg).await;
    let replaced = Instant::now();
    // Count the first session's drop (monotonic) rather than sample `connected`: the first agent
    // reconnects by itself within tens of milliseconds and would in turn replace the second.
    let s = first.status.clone();
    wait_until(Duration::from_secs(1), "first session closed", || {
        let r = s.snapshot().reconnects;
        async move { r > drops_before }
    })
    .await;
    eprintln!(
        "old session closed {:?} after the new one came up",
        replaced.elapsed()
    );
    first.stop().await;
    second.wait_connected().await;
    assert_eq!(
        send(gw.http(), routed(Method::GET, second.id(), "/", &key, ""))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_started_before_the_gateway_connects_when_it_appears() {
    let app = Backend::start().await;
    let mut gw = TestGateway::start().await;
    let cfg = gw.register(&[("web", ServiceKind::Http, app.addr)]).await;
    let key = gw.key(&cfg.registration_id).await;
    let (dir, addrs) = (gw.dir.clone(), gw.addrs.clone());
    gw.stop().await;
    drop(gw);

    let agent = TestAgent::start(cfg);
    let s = agent.status.clone();
    wait_until(Duration::from_secs(10), "a few failed attempts", || {
        let r = s.snapshot().reconnects;
        async move { r >= 3 }
    })
    .await;
    assert!(!agent.status.snapshot().connected);

    let gw = TestGateway::start_with(GatewayOptions {
        dir: Some(dir),
        addrs: Some(addrs),
        ..Default::default()
    })
    .await;
    agent.wait_connected().await;
    assert_eq!(
        send(gw.http(), routed(Method::GET, agent.id(), "/", &key, ""))
            .await
            .status,
        StatusCode::OK
    );
}
