//! Two gateway nodes on one PostgreSQL database: a key or a registration revoked through one
//! node's admin API is refused on the other within a second (its live stream cut, its tunnel
//! closed), also after every other database connection was killed with `pg_terminate_backend`
//! (the pool reconnects; the version poll does not depend on any one connection).

use std::time::{Duration, Instant};

use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, GatewayOptions, TestAgent, TestGateway};
use g2c_tests::postgres::Postgres;
use g2c_tests::prom::scrape;
use http::{Method, StatusCode};

const WITHIN: Duration = Duration::from_secs(1);

async fn node(url: &str) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        store_url: Some(url.to_owned()),
        ..Default::default()
    })
    .await
}

/// Poll `node` until a request with `key` gets `status`; how long that took.
async fn until_status(node: &TestGateway, reg: &str, key: &str, status: StatusCode) -> Duration {
    let from = Instant::now();
    loop {
        let r = send(node.http(), routed(Method::GET, reg, "/x", key, "")).await;
        if r.status == status {
            return from.elapsed();
        }
        assert!(
            from.elapsed() < Duration::from_secs(10),
            "never {status}: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn kill_other_connections(pg: &Postgres) {
    let out = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pg.addr.port().to_string(), "-U"])
        .arg(g2c_tests::postgres::USER)
        .args(["-d", "postgres", "-Atc"])
        .arg(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(n > 0, "the nodes had connections to kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_node_holds_on_the_other_within_a_second() {
    let pg = Postgres::start();
    let url = pg.create_database();
    let a = node(&url).await;
    let b = node(&url).await;
    let app = Backend::start().await;
    // The agent is on node B; the operator uses node A's admin API.
    let agent = TestAgent::start_connected(
        b.register(&[("web", g2c_proto::ServiceKind::Http, app.addr)])
            .await,
    )
    .await;
    let reg = agent.id().to_owned();
    let doomed = b.store.create_key(&reg).await.unwrap();
    let key = doomed.secret.clone();
    let spare = b.key(&reg).await;
    until_status(&b, &reg, &key, StatusCode::OK).await;

    kill_other_connections(&pg).await;
    // Revoke the key through node A's admin API.
    let revoke = format!("/v1/keys/{}/revoke", doomed.info.id);
    let r = send(a.addrs.admin, a.admin_request(Method::POST, &revoke)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let took = until_status(&b, &reg, &key, StatusCode::UNAUTHORIZED).await;
    eprintln!("key revocation reached the other node in {took:?}");
    assert!(took < WITHIN, "{took:?}");
    assert_eq!(
        send(b.http(), routed(Method::GET, &reg, "/x", &spare, ""))
            .await
            .status,
        StatusCode::OK,
        "the other key still works"
    );

    let revoke = format!("/v1/registrations/{reg}/revoke");
    let r = send(a.addrs.admin, a.admin_request(Method::POST, &revoke)).await;
    assert_eq!(r.status, StatusCode::OK);
    let from = Instant::now();
    let status = agent.status.clone();
    g2c_tests::wait_until(
        WITHIN,
        "node B closes the revoked registration's tunnel",
        || {
            let s = status.snapshot();
            async move { !s.connected }
        },
    )
    .await;
    eprintln!(
        "registration revocation closed the tunnel on the other node in {:?}",
        from.elapsed()
    );
    assert_ne!(
        send(b.http(), routed(Method::GET, &reg, "/x", &spare, ""))
            .await
            .status,
        StatusCode::OK
    );

    // Node B measured how late each change reached it (database clock at the write to its
    // refresh): both revocations, each under the second.
    let m = scrape(b.addrs.admin).await;
    let count = m
        .get("g2c_cluster_credentials_delay_seconds_count", &[])
        .unwrap_or(0.0);
    let sum = m
        .get("g2c_cluster_credentials_delay_seconds_sum", &[])
        .unwrap_or(0.0);
    eprintln!("credentials delay on node B: {count} changes, {sum:.3} s in all");
    assert!(count >= 2.0, "{count}");
    assert!(sum / count < WITHIN.as_secs_f64(), "{sum} / {count}");
}
