//! A rolling restart of all three nodes (real binaries on PostgreSQL behind HAProxy), one at a
//! time, under a steady 200 requests a second through the load balancer: not one request
//! fails. Each node drains (`/readyz` 503 first, then GoAway to its agents, which reconnect
//! elsewhere before letting go, then in-flight requests finish) and exits 0.

use std::time::Duration;

use g2c_tests::backend::Backend;
use g2c_tests::cluster::Cluster;
use g2c_tests::load::{failures, Load, Target};
use g2c_tests::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_in_turn_under_200_requests_a_second_loses_none() {
    let mut cluster = Cluster::start(3).await;
    let app = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = cluster
        .agent(dir.path(), &[&format!("web={}", app.addr)], &[])
        .await;
    for i in 0..3 {
        cluster.wait_balanced(i).await;
    }
    let target = Target {
        addr: cluster.lb.http,
        registration: agent.id.clone(),
        key: agent.key.clone(),
    };
    let load = Load::steady(target, 200, Duration::from_secs(120));
    wait_until(Duration::from_secs(5), "load flowing", || async {
        app.seen().len() > 100
    })
    .await;
    for i in 0..3 {
        let held = cluster.holders(&agent.id).await.contains(&i);
        let started = std::time::Instant::now();
        cluster.stop_node(i, Duration::from_secs(30)).await;
        let drained = started.elapsed();
        cluster.start_node(i).await;
        cluster.wait_nodes_alive(i, 3).await;
        cluster
            .wait_holders(&agent.id, 2, Duration::from_secs(15))
            .await;
        cluster.wait_known_everywhere().await;
        cluster.wait_balanced(i).await;
        eprintln!(
            "node {i} (held a tunnel: {held}): drained in {drained:?}, serving again after {:?}",
            started.elapsed()
        );
    }
    let seen = app.seen().len();
    wait_until(
        Duration::from_secs(5),
        "load after the last restart",
        || async { app.seen().len() > seen + 200 },
    )
    .await;
    let all = load.finish().await;
    let failed = failures(&all);
    let slowest = all.iter().map(|o| o.took).max().unwrap();
    eprintln!(
        "rolling restart: {} requests, {} failed, slowest {slowest:?}",
        all.len(),
        failed.len()
    );
    assert!(all.len() > 1000, "the load ran throughout");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}
