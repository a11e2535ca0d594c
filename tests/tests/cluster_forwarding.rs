//! Three gateway nodes (the real binary) on PostgreSQL behind HAProxy, one agent keeping
//! tunnels on two of them: HTTP requests through every node, and a real MariaDB client through
//! the TCP service port of the node without a tunnel, reach the app (the third node forwards
//! over the peer link). Its adversarial twin: a node whose peer certificate comes from another
//! CA is refused by its peers, and its callers get a clear error, not a hang.

use std::net::SocketAddr;
use std::time::Duration;

use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::cluster::{node_ip, Cluster, PeerCerts};
use g2c_tests::harness::routed;
use g2c_tests::mariadb::MariaDb;
use g2c_tests::procs::{GatewayProc, GatewaySpec};
use g2c_tests::prom::scrape;
use g2c_tests::wait_until;
use http::{Method, StatusCode};

async fn forwarded(node: &GatewayProc, outcome: &str) -> f64 {
    scrape(node.addrs.admin)
        .await
        .get("g2c_peer_forwarded_total", &[("outcome", outcome)])
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reaches_the_app_over_http_and_mysql_the_one_without_a_tunnel_by_its_peers() {
    let cluster = Cluster::start(3).await;
    let app = Backend::start().await;
    let db = MariaDb::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = cluster
        .agent(
            dir.path(),
            &[&format!("web={}", app.addr)],
            &[&format!("db={}", db.addr)],
        )
        .await;
    let holders = cluster.holders(&agent.id).await;
    let without = (0..3).find(|i| !holders.contains(i)).unwrap();
    eprintln!("tunnels on nodes {holders:?}; node {without} has none");

    for i in 0..3 {
        let node = cluster.node(i);
        let body = format!("through node {i}");
        let r = send(
            node.addrs.http.unwrap(),
            routed(Method::POST, &agent.id, "/echo", &agent.key, body.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "node {i}: {:?}", r.body);
        assert_eq!(
            r.body,
            body.as_bytes(),
            "node {i} carries the body both ways"
        );
    }
    let through = cluster.node(without);
    assert!(
        forwarded(through, "ok").await >= 1.0,
        "node {without} forwarded over the peer link"
    );
    let m = scrape(through.addrs.admin).await;
    assert_eq!(m.get("g2c_cluster_tunnels_held", &[]), Some(0.0));
    assert_eq!(m.get("g2c_cluster_remote_tunnels", &[]), Some(1.0));
    assert_eq!(m.get("g2c_cluster_nodes_alive", &[]), Some(3.0));
    for &h in &holders {
        let m = scrape(cluster.node(h).addrs.admin).await;
        assert_eq!(
            m.get("g2c_cluster_tunnels_held", &[]),
            Some(1.0),
            "node {h}"
        );
    }

    // Through the load balancer: every request answered, whichever node HAProxy picks.
    for n in 0..30 {
        let path = format!("/bytes/{}", 100 + n);
        let r = send(
            cluster.lb.http,
            routed(Method::GET, &agent.id, &path, &agent.key, ""),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body.len(), 100 + n);
    }
    assert_eq!(app.seen().len(), 33, "the app saw every request once");

    // MySQL through the TCP service port of the node without a tunnel.
    let allowed = cluster
        .node(0)
        .cli(&[
            "--json",
            "registration",
            "allow",
            &agent.id,
            "db",
            "127.0.0.0/8",
        ])
        .await;
    let port = serde_json::from_str::<serde_json::Value>(&allowed).unwrap()["port"]
        .as_u64()
        .unwrap() as u16;
    let public = SocketAddr::new(node_ip(without), port);
    wait_until(
        Duration::from_secs(10),
        "the TCP port listens on the node without the tunnel",
        || async move { tokio::net::TcpStream::connect(public).await.is_ok() },
    )
    .await;
    let out = MariaDb::cli(
        public,
        "CREATE TABLE t (n INT); INSERT INTO t VALUES (40), (2); SELECT SUM(n) FROM t;",
    )
    .unwrap_or_else(|e| panic!("mariadb through node {without}: {e}"));
    assert!(out.contains("42"), "{out}");
    assert!(forwarded(through, "ok").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_strangers_certificate_is_refused_by_its_peers() {
    let cluster = Cluster::start(2).await;
    let app = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = cluster
        .agent(dir.path(), &[&format!("web={}", app.addr)], &[])
        .await;

    // A third node on the same database, its peer certificate from another CA (same name).
    let stranger_certs = PeerCerts::generate();
    let sdir = tempfile::tempdir().unwrap();
    let stranger = GatewayProc::start_spec(
        sdir.path(),
        &GatewaySpec {
            ip: Some(node_ip(2)),
            store_url: Some(&cluster.url),
            cluster: Some(&stranger_certs),
            ..Default::default()
        },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the stranger sees the tunnel held elsewhere",
        || async {
            scrape(stranger.addrs.admin)
                .await
                .get("g2c_cluster_remote_tunnels", &[])
                == Some(1.0)
        },
    )
    .await;
    let r = send(
        stranger.addrs.http.unwrap(),
        routed(Method::GET, &agent.id, "/x", &agent.key, ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    assert_eq!(r.error_code(), Some("agent_offline"));
    let m = scrape(stranger.addrs.admin).await;
    assert!(
        m.get("g2c_peer_link_failures_total", &[("reason", "tls")]) >= Some(1.0),
        "the stranger's TLS was refused"
    );
    assert_eq!(forwarded(&stranger, "ok").await, 0.0);
    assert!(app.seen().is_empty(), "nothing reached the app");
    // The real nodes still serve.
    let r = send(
        cluster.node(0).addrs.http.unwrap(),
        routed(Method::GET, &agent.id, "/x", &agent.key, ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}
