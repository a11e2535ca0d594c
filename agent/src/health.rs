//! Health probes of the agent's local services: a timed TCP connect to each service's local
//! address, run once per heartbeat interval. The results go to the gateway in the control
//! stream's `Report`, so an operator sees a dead local app in the gateway's metrics.

use std::time::{Duration, Instant};

use g2c_proto::ServiceHealth;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::splice::ServiceMap;

/// Longest a single probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Probe every service that has health checks on, concurrently.
pub async fn probe_all(services: &ServiceMap) -> Vec<ServiceHealth> {
    let probes = services
        .values()
        .filter(|s| s.probed())
        .map(|s| async move {
            let started = Instant::now();
            let healthy = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(&s.local)).await,
                Ok(Ok(_))
            );
            ServiceHealth {
                name: s.name.clone(),
                healthy,
                latency_us: started.elapsed().as_micros() as u64,
            }
        });
    let mut out = futures::future::join_all(probes).await;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Probe every `interval` (first at once) and send each round's results to `tx`, until the
/// receiver is gone.
pub async fn probe_loop(
    services: std::sync::Arc<ServiceMap>,
    interval: Duration,
    tx: mpsc::Sender<Vec<ServiceHealth>>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let round = probe_all(&services).await;
        if tx.send(round).await.is_err() {
            return;
        }
    }
}
