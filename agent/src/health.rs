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
        .map(|s| &s.config)
        .filter(|s| s.probed())
        .map(|s| async move {
            let started = Instant::now();
            let healthy = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(s.address())).await,
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

/// Test one service now, as the GUI's "test" button does: for `http` services an HTTP
/// `GET /` whose status line is reported, for `tcp` services a TCP connect.
pub async fn test_service(service: &crate::config::ServiceConfig) -> crate::status::ProbeResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut tcp = TcpStream::connect(service.address())
            .await
            .map_err(|e| format!("connect to {}: {e}", service.local))?;
        if service.kind != g2c_proto::ServiceKind::Http {
            return Ok::<_, String>((true, "TCP connect ok".to_owned()));
        }
        if service.is_https() {
            let tls = crate::origin_tls::OriginTls::for_service(service)?
                .ok_or("https service without TLS settings")?;
            let mut tls = tls
                .connect(tcp)
                .await
                .map_err(|e| format!("TLS to {}: {e}", service.local))?;
            return http_status(&mut tls, service.address()).await;
        }
        http_status(&mut tcp, service.address()).await
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())));
    let (healthy, detail) = outcome.unwrap_or_else(|e| (false, e));
    crate::status::ProbeResult {
        name: service.name.clone(),
        healthy,
        latency_us: started.elapsed().as_micros() as u64,
        detail,
        at: 0,
    }
}

/// Send `GET /` and read the status line: healthy below 500.
async fn http_status<S>(tcp: &mut S, host: &str) -> Result<(bool, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: g2c-agent-test\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = tcp.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    match line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(code) if line.starts_with("HTTP/") => Ok((code < 500, format!("HTTP {code}"))),
        _ => Err(format!(
            "not an HTTP answer: {:?}",
            line.chars().take(60).collect::<String>()
        )),
    }
}
