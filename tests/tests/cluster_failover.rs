//! Losing a node of three (real binaries, PostgreSQL, HAProxy in front) while 8 request
//! loops run through the load balancer, the agent keeping tunnels on two nodes:
//! - killed (SIGKILL): every request started a second after the kill succeeds, the agent has
//!   two tunnels again within 5 s, and the dead node leaves the others' lookups when its lease
//!   expires;
//! - hung (SIGSTOP): requests started 3 s after it hung succeed (the peer link's connect and
//!   answer timeouts, then the next holder), and once continued the node finds its lease gone
//!   and joins again.

use std::time::{Duration, Instant};

use g2c_tests::backend::Backend;
use g2c_tests::cluster::{Cluster, ClusterAgent};
use g2c_tests::load::{failures, Load, Outcome, Target};
use g2c_tests::prom::scrape;
use g2c_tests::wait_until;

async fn cluster_with_agent(app: &Backend, dir: &std::path::Path) -> (Cluster, ClusterAgent) {
    let cluster = Cluster::start(3).await;
    let agent = cluster
        .agent(dir, &[&format!("web={}", app.addr)], &[])
        .await;
    for i in 0..3 {
        cluster.wait_balanced(i).await;
    }
    (cluster, agent)
}

fn target(cluster: &Cluster, agent: &ClusterAgent) -> Target {
    Target {
        addr: cluster.lb.http,
        registration: agent.id.clone(),
        key: agent.key.clone(),
    }
}

/// Failed requests among those started at or after `from`; panics listing them.
fn assert_none_failed_after(all: &[Outcome], from: Instant, what: &str) {
    let late: Vec<_> = failures(all)
        .into_iter()
        .filter(|o| o.started >= from)
        .collect();
    let before = failures(all).len() - late.len();
    eprintln!(
        "{what}: {} requests, {} failed before the mark, {} after",
        all.len(),
        before,
        late.len()
    );
    assert!(
        late.is_empty(),
        "{what}: {} failed, first: {:?}",
        late.len(),
        late.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_costs_only_the_requests_it_was_serving() {
    let app = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, agent) = cluster_with_agent(&app, dir.path()).await;
    let victim = cluster.holders(&agent.id).await[0];
    let load = Load::loops(target(&cluster, &agent), 8, Duration::from_secs(60));
    wait_until(Duration::from_secs(5), "load flowing", || async {
        app.seen().len() > 50
    })
    .await;

    cluster.kill_node(victim).await;
    let killed = Instant::now();
    cluster
        .wait_holders(&agent.id, 2, Duration::from_secs(5))
        .await;
    eprintln!("two tunnels again {:?} after the kill", killed.elapsed());
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    for &i in &survivors {
        cluster.wait_nodes_alive(i, 2).await;
    }
    eprintln!(
        "the dead node left the lookups {:?} after the kill",
        killed.elapsed()
    );
    // Some more load after the dust settled, then the verdict.
    let settled = app.seen().len();
    wait_until(Duration::from_secs(5), "more load", || async {
        app.seen().len() > settled + 100
    })
    .await;
    let all = load.finish().await;
    assert_none_failed_after(&all, killed + Duration::from_secs(1), "SIGKILL");
    let holders = cluster.holders(&agent.id).await;
    assert_eq!(holders.len(), 2);
    assert!(!holders.contains(&victim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_is_failed_over_within_three_seconds_and_rejoins_when_continued() {
    let app = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cluster, agent) = cluster_with_agent(&app, dir.path()).await;
    let victim = cluster.holders(&agent.id).await[0];
    let load = Load::loops(target(&cluster, &agent), 8, Duration::from_secs(60));
    wait_until(Duration::from_secs(5), "load flowing", || async {
        app.seen().len() > 50
    })
    .await;

    cluster.node(victim).proc.signal("STOP");
    let hung = Instant::now();
    // Past the lease (6 s) and the sweep, so the node wakes to find it gone.
    let survivor = (0..3).find(|&i| i != victim).unwrap();
    cluster.wait_nodes_alive(survivor, 2).await;
    let seen = app.seen().len();
    wait_until(Duration::from_secs(5), "more load", || async {
        app.seen().len() > seen + 100
    })
    .await;
    let all = load.finish().await;
    assert_none_failed_after(&all, hung + Duration::from_secs(3), "SIGSTOP");
    let slowest = all
        .iter()
        .filter(|o| o.started >= hung + Duration::from_secs(3))
        .map(|o| o.took)
        .max()
        .unwrap();
    eprintln!("slowest request started 3 s after the hang: {slowest:?}");

    cluster.node(victim).proc.signal("CONT");
    let admin = cluster.node(victim).addrs.admin;
    wait_until(
        Duration::from_secs(10),
        "the node finds its lease lost",
        || async {
            scrape(admin)
                .await
                .get("g2c_cluster_lease_lost_total", &[("reason", "expired")])
                == Some(1.0)
        },
    )
    .await;
    cluster.wait_nodes_alive(victim, 3).await;
    cluster.wait_nodes_alive(survivor, 3).await;
}
