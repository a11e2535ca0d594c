//! What one tenant can take from the others, tried as an attacker holding a valid
//! registration: public ports (announcing TCP services allocates none; an operator's opening is
//! capped per registration; a new registration never gets a port a TCP service holds) and
//! metric series (a replaced session leaves none behind; the agent version is bounded).

use std::collections::HashSet;
use std::time::Duration;

use g2c_gateway::store::StoreError;
use g2c_proto::{ServiceDecl, ServiceKind};
use g2c_tests::harness::TestGateway;
use g2c_tests::rogue::{self, Hello, Misbehaviour};
use g2c_tests::wait_until;

/// A registration whose agent config names one HTTP service on a closed local port.
async fn web_registration(gw: &TestGateway) -> g2c_agent::config::AgentConfig {
    let closed: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    gw.register(&[("web", ServiceKind::Http, closed)]).await
}

fn tcp_services(n: usize) -> Vec<ServiceDecl> {
    (0..n)
        .map(|i| ServiceDecl {
            name: format!("db{i}"),
            kind: ServiceKind::Tcp,
        })
        .collect()
}

/// On main every TCP name in a Hello took a permanent port from the shared range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcing_tcp_services_allocates_no_port() {
    let gw = TestGateway::start().await;
    let cfg = web_registration(&gw).await;
    let hello = Hello {
        agent_version: "9.9.9".into(),
        services: tcp_services(64),
    };
    let _rogue = rogue::connect_saying(&cfg, hello, Misbehaviour::Silent)
        .await
        .unwrap();
    // The operator opens the last one, and it listens: the TCP wing has handled the session
    // (it opens a session's services in the order announced), so whatever announcing would
    // have allocated is in the store by now.
    gw.open_tcp(&cfg.registration_id, "db63", &["127.0.0.1/32"])
        .await;
    let held = gw.store.tcp_services(None).await.unwrap();
    let names: Vec<&str> = held.iter().map(|t| t.service.as_str()).collect();
    assert_eq!(names, ["db63"], "ports allocated by announcing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_opens_at_most_the_quota_of_ports_per_registration() {
    let gw = TestGateway::start().await;
    let cfg = web_registration(&gw).await;
    let mut ports = gw.config.limits.ports();
    ports.per_registration = 3;
    let allow = ["127.0.0.1/32".to_owned()];
    for i in 0..3 {
        gw.store
            .set_tcp_allow(&cfg.registration_id, &format!("db{i}"), &allow, ports)
            .await
            .unwrap();
    }
    let over = gw
        .store
        .set_tcp_allow(&cfg.registration_id, "db3", &allow, ports)
        .await;
    assert!(matches!(over, Err(StoreError::PortQuota(3))), "{over:?}");
    // Changing an already opened service's allowlist is not a new port.
    gw.store
        .set_tcp_allow(&cfg.registration_id, "db0", &[], ports)
        .await
        .unwrap();
}

/// On main a new registration's tunnel port ignored the ports TCP services held, so two
/// tenants could be handed the same public port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_registration_never_gets_a_port_a_tcp_service_holds() {
    let gw = TestGateway::start().await;
    let ports = gw.config.limits.ports();
    let allow = ["127.0.0.1/32".to_owned()];
    let mut held = HashSet::new();
    for _ in 0..4 {
        let cfg = web_registration(&gw).await;
        assert!(
            held.insert(cfg.gateway.tunnel_port),
            "tunnel port {} handed out twice",
            cfg.gateway.tunnel_port
        );
        for svc in ["a", "b", "c"] {
            let t = gw
                .store
                .set_tcp_allow(&cfg.registration_id, svc, &allow, ports)
                .await
                .unwrap();
            // The first service reuses the registration's own tunnel port; the others are new.
            if svc != "a" {
                assert!(held.insert(t.port), "port {} handed out twice", t.port);
            } else {
                assert_eq!(t.port, cfg.gateway.tunnel_port);
            }
        }
    }
}

/// On main a session replaced by one with another version left `g2c_agent_info` for the old
/// version behind for good: reconnecting with new versions minted series without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_session_leaves_no_series_behind() {
    let gw = TestGateway::start().await;
    let cfg = web_registration(&gw).await;
    let mut rogues = Vec::new();
    for i in 0..5 {
        let version = format!("9.9.{i}");
        let hello = Hello {
            agent_version: version.clone(),
            ..Default::default()
        };
        rogues.push(
            rogue::connect_saying(&cfg, hello, Misbehaviour::Silent)
                .await
                .unwrap(),
        );
        wait_until(
            Duration::from_secs(5),
            "only the newest version",
            || async {
                let info = gw.scrape().await.series("g2c_agent_info");
                info.len() == 1 && info[0]["version"] == version
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_version_that_is_no_version_is_refused_before_any_series() {
    let gw = TestGateway::start().await;
    let cfg = web_registration(&gw).await;
    for version in ["v".repeat(4096), "1.0\"} 1\ng2c_fake 1".into()] {
        let hello = Hello {
            agent_version: version,
            ..Default::default()
        };
        let refused = rogue::connect_saying(&cfg, hello, Misbehaviour::Silent).await;
        assert!(
            refused.as_ref().is_err_and(|r| r.contains("agent version")),
            "{:?}",
            refused.err()
        );
    }
    assert!(gw.scrape().await.series("g2c_agent_info").is_empty());
}
