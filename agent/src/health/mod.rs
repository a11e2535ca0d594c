//! Health probes of the agent's local services, run once per heartbeat interval: a TCP
//! connect, an HTTP `GET` whose status must be one the operator counts as healthy, or a
//! MySQL/MariaDB login that the server counts as a complete connection. The results go to
//! the gateway in the control stream's `Report`, so an operator sees a dead local app in the
//! gateway's metrics and admin API, and the GUI shows them.

mod http;
mod mysql;

use std::time::Instant;

use g2c_proto::ServiceHealth;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::{HealthCheck, HealthProbe, ServiceConfig, StatusSet};
use crate::origin_tls::OriginTls;
use crate::splice::{LiveService, ServiceMap};

/// Probe every service that has health checks on, concurrently.
pub async fn probe_all(services: &ServiceMap) -> Vec<ServiceHealth> {
    let probes = services
        .values()
        .filter(|s| s.config.probed())
        .map(|s| async move {
            let started = Instant::now();
            let outcome = probe_live(s).await;
            if let Err(e) = &outcome {
                tracing::debug!(service = %s.config.name, error = %e, "health probe failed");
            }
            ServiceHealth {
                name: s.config.name.clone(),
                healthy: outcome.is_ok(),
                latency_us: started.elapsed().as_micros() as u64,
            }
        });
    let mut out = futures::future::join_all(probes).await;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// One probe of a running service with its configured check.
async fn probe_live(live: &LiveService) -> Result<String, String> {
    let tls = match &live.tls {
        Some(Ok(tls)) => Some(tls),
        Some(Err(e)) => return Err(e.clone()),
        None => None,
    };
    probe(&live.config, tls, &live.config.health_probe()).await
}

/// Run `check` against `service` within its timeout; `Ok` carries what was seen, `Err` why
/// the service is unhealthy.
pub async fn probe(
    service: &ServiceConfig,
    tls: Option<&OriginTls>,
    check: &HealthCheck,
) -> Result<String, String> {
    tokio::time::timeout(check.timeout(), async {
        if check.probe == HealthProbe::Mysql {
            return mysql::probe(service.address(), check.user()).await;
        }
        let tcp = TcpStream::connect(service.address())
            .await
            .map_err(|e| format!("connect to {}: {e}", service.local))?;
        match (check.probe, tls) {
            (HealthProbe::Tcp, _) => Ok("TCP connect ok".to_owned()),
            (_, Some(tls)) => {
                let mut tls = tls
                    .connect_h1(tcp)
                    .await
                    .map_err(|e| format!("TLS to {}: {e}", service.local))?;
                http::check(&mut tls, service.address(), check).await
            }
            (_, None) => http::check(&mut { tcp }, service.address(), check).await,
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {} ms", check.timeout_ms)))
}

/// Probe every `interval` (first at once) and send each round's results to `tx`, until the
/// receiver is gone.
pub async fn probe_loop(
    services: std::sync::Arc<ServiceMap>,
    interval: std::time::Duration,
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

/// Test one service now, as the GUI's "test" button does: its configured probe, else for
/// `http` services a `GET /` that any answer below 500 passes, for `tcp` ones a connect.
pub async fn test_service(service: &ServiceConfig) -> crate::status::ProbeResult {
    let started = Instant::now();
    let check = service.health.clone().unwrap_or_else(|| {
        let mut check = HealthCheck::new(match service.kind {
            g2c_proto::ServiceKind::Http => HealthProbe::Http,
            _ => HealthProbe::Tcp,
        });
        check.healthy_statuses = StatusSet::try_from("100-499".to_owned()).ok();
        check
    });
    let outcome = match OriginTls::for_service(service) {
        Ok(tls) => probe(service, tls.as_ref(), &check).await,
        Err(e) => Err(e),
    };
    let healthy = outcome.is_ok();
    let detail = outcome.unwrap_or_else(|e| e);
    crate::status::ProbeResult {
        name: service.name.clone(),
        healthy,
        latency_us: started.elapsed().as_micros() as u64,
        detail,
        at: 0,
    }
}
