//! Cluster membership with the real gateway binary, two nodes on one PostgreSQL: each holds a
//! lease on the database's clock and sees the other; a node hung with SIGSTOP past its lease is
//! swept by the other (its tunnel presence goes with it), and once continued it finds its lease
//! gone, closes the tunnels it held (nothing stale is served) and joins again under a new id,
//! its agent reconnecting.

use std::time::Duration;

use g2c_tests::backend::Backend;
use g2c_tests::postgres::{Postgres, USER};
use g2c_tests::procs::{register_agent, start_agent, GatewayProc};
use g2c_tests::prom::scrape;
use g2c_tests::wait_until;

fn psql(pg: &Postgres, db_url: &str, sql: &str) -> String {
    let db = db_url.rsplit('/').next().unwrap();
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.addr.port().to_string(),
            "-U",
            USER,
            "-d",
            db,
        ])
        .args(["-Atc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The node id a gateway's log says it joined under (the latest).
fn joined_as(gw: &GatewayProc) -> String {
    let log = gw.proc.log_text();
    let line = log
        .lines()
        .rfind(|l| l.contains("joined the cluster"))
        .unwrap_or_else(|| panic!("no join in the log: {log}"));
    line.rsplit("node=").next().unwrap().trim().to_owned()
}

async fn nodes_alive(gw: &GatewayProc) -> Option<f64> {
    scrape(gw.addrs.admin)
        .await
        .get("g2c_cluster_nodes_alive", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_is_swept_and_on_waking_drops_its_tunnels_and_rejoins() {
    let pg = Postgres::start();
    let url = pg.create_database();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = GatewayProc::start_on(da.path(), None, "", Some(&url)).await;
    let b = GatewayProc::start_on(db.path(), None, "", Some(&url)).await;
    wait_until(Duration::from_secs(10), "each node sees two", || async {
        nodes_alive(&a).await == Some(2.0) && nodes_alive(&b).await == Some(2.0)
    })
    .await;

    let app = Backend::start().await;
    let (reg, config) = register_agent(
        &a,
        da.path(),
        &[&format!("web=127.0.0.1:{}", app.addr.port())],
    )
    .await;
    let _agent = start_agent(&config, da.path().join("agent.log"));
    a.wait_connected(&reg, Duration::from_secs(10)).await;
    let first_node = psql(&pg, &url, "SELECT node_id FROM tunnel_presence");
    let a_id = joined_as(&a);
    assert_eq!(first_node, a_id, "node A records the tunnel it holds");

    a.proc.signal("STOP");
    wait_until(
        Duration::from_secs(15),
        "node B sweeps the hung node",
        || async {
            // Out of lookups once the lease expires; its row (and presence) gone at the sweep
            // that follows.
            nodes_alive(&b).await == Some(1.0)
                && psql(&pg, &url, "SELECT count(*) FROM tunnel_presence") == "0"
        },
    )
    .await;
    assert_eq!(psql(&pg, &url, "SELECT count(*) FROM nodes"), "1", "swept");

    a.proc.signal("CONT");
    wait_until(
        Duration::from_secs(10),
        "node A finds its lease lost",
        || async {
            scrape(a.addrs.admin)
                .await
                .get("g2c_cluster_lease_lost_total", &[("reason", "expired")])
                == Some(1.0)
        },
    )
    .await;
    wait_until(
        Duration::from_secs(15),
        "A rejoined and its agent is back",
        || async {
            let presence = psql(&pg, &url, "SELECT node_id FROM tunnel_presence");
            nodes_alive(&b).await == Some(2.0) && !presence.is_empty() && presence != a_id
        },
    )
    .await;
    assert!(a.proc.log_text().contains("lease was lost"));
    assert_eq!(
        psql(&pg, &url, "SELECT node_id FROM tunnel_presence"),
        joined_as(&a),
        "the tunnel is recorded under A's new id"
    );
}
