//! SSH sessions that authenticate and then sit there, tried with the registration's real key:
//! one that never asks for its forward is closed at the forward deadline, and a registration
//! cannot hold more than its cap of sessions. (On main both were unlimited.)

use std::time::Duration;

use g2c_gateway::config::GatewayConfig;
use g2c_proto::ServiceKind;
use g2c_tests::harness::{GatewayOptions, TestAgent, TestGateway};
use g2c_tests::rogue;
use g2c_tests::wait_until;

fn short_forward_deadline(c: &mut GatewayConfig) {
    c.limits.ssh_preauth_timeout_secs = 1;
    c.limits.ssh_forward_timeout_secs = 1;
}

fn two_sessions(c: &mut GatewayConfig) {
    c.limits.ssh_max_sessions_per_registration = 2;
}

fn local() -> std::net::SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_forwards_is_closed_at_the_deadline() {
    let gw = TestGateway::start_with(GatewayOptions {
        configure: Some(short_forward_deadline),
        ..Default::default()
    })
    .await;
    let cfg = gw.register(&[("web", ServiceKind::Http, local())]).await;
    let idle = rogue::authenticated(&cfg).await.expect("the key is valid");
    wait_until(
        Duration::from_secs(5),
        "the idle session closed",
        || async { idle.is_closed() },
    )
    .await;
    let closed = gw.scrape().await.get(
        "g2c_ssh_connections_closed_total",
        &[("reason", "forward_deadline")],
    );
    assert_eq!(closed, Some(1.0));
    // A real agent forwards at once and stays.
    let agent = TestAgent::start_connected(cfg).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the deadline, on purpose
    assert!(
        agent.status.snapshot().connected,
        "a forwarding agent is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_holds_at_most_its_cap_of_sessions() {
    let gw = TestGateway::start_with(GatewayOptions {
        configure: Some(two_sessions),
        ..Default::default()
    })
    .await;
    let cfg = gw.register(&[("web", ServiceKind::Http, local())]).await;
    let first = rogue::authenticated(&cfg).await.expect("first");
    let second = rogue::authenticated(&cfg).await.expect("second");
    let third = rogue::authenticated(&cfg).await;
    assert!(third.is_err(), "a third session is refused");
    let refused = gw
        .scrape()
        .await
        .get("g2c_ssh_auth_failures_total", &[("reason", "session_cap")]);
    assert_eq!(refused, Some(1.0));
    // Other registrations are not affected, and a place freed is a place again.
    let other = gw.register(&[("web", ServiceKind::Http, local())]).await;
    assert!(rogue::authenticated(&other).await.is_ok());
    drop(first);
    wait_until(Duration::from_secs(5), "a place freed", || async {
        match rogue::authenticated(&cfg).await {
            Ok(s) => {
                drop(s);
                true
            }
            Err(_) => false,
        }
    })
    .await;
    drop(second);
}
