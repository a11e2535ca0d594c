//! One agent tunnel on the gateway side: open the forwarded channel back to the agent, run yamux
//! over it (gateway = client mode), answer the control stream's Hello, publish the session, and
//! keep serving heartbeats until either side goes away.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use g2c_proto::frame::{read_frame, write_frame};
use g2c_proto::mux::{self, Mode, Mux, MuxStream};
use g2c_proto::{ControlMessage, ServiceDecl, PROTOCOL_VERSION};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::registry::AgentSession;
use crate::store::Registration;
use crate::Shared;

/// How long the agent has to open the control stream and say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most services one agent may announce.
const MAX_SERVICES: usize = 64;

pub(super) async fn run(
    shared: Arc<Shared>,
    ssh: russh::server::Handle,
    reg: Registration,
    address: String,
    port: u32,
    peer: SocketAddr,
) {
    let channel = match ssh
        .channel_open_forwarded_tcpip(address, port, peer.ip().to_string(), u32::from(peer.port()))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "could not open the forwarded channel");
            return;
        }
    };
    let limits = &shared.config.limits;
    let (mux, mut inbound) = mux::spawn_limited(
        channel.into_stream().compat(),
        Mode::Client,
        limits.max_streams_per_tunnel,
        limits.yamux_window_headroom_mib << 20,
    );
    let control = match tokio::time::timeout(HELLO_TIMEOUT, inbound.recv()).await {
        Ok(Some(s)) => s,
        _ => {
            tracing::warn!("agent did not open a control stream in time");
            mux.close();
            return;
        }
    };
    let (read, mut write) = tokio::io::split(control);
    let mut frames = spawn_reader(read);

    let (agent_version, services) = match tokio::time::timeout(HELLO_TIMEOUT, frames.recv()).await {
        Ok(Some(ControlMessage::Hello {
            version,
            agent_version,
            services,
        })) => match check_hello(version, &services) {
            Ok(()) => (agent_version, services),
            Err(reason) => {
                tracing::warn!(%reason, "refused agent hello");
                let _ = write_frame(&mut write, &ControlMessage::Refused { reason }).await;
                mux.close();
                return;
            }
        },
        _ => {
            tracing::warn!("agent sent no valid hello");
            mux.close();
            return;
        }
    };
    let heartbeat = shared.config.limits.heartbeat();
    let welcome = ControlMessage::Welcome {
        version: PROTOCOL_VERSION,
        registration_id: reg.id.clone(),
        heartbeat_secs: heartbeat.as_secs() as u32,
        max_streams: shared.config.limits.max_streams_per_tunnel as u32,
    };
    if write_frame(&mut write, &welcome).await.is_err() {
        mux.close();
        return;
    }

    let session = Arc::new(AgentSession {
        id: shared.registry.next_session_id(),
        registration_id: reg.id.clone(),
        mux: mux.clone(),
        ssh,
        services,
        agent_version,
        peer,
        connected_at: SystemTime::now(),
        inflight: Default::default(),
        last_heartbeat: Default::default(),
        go_away: Default::default(),
    });
    let metrics = &shared.metrics;
    metrics.sessions_opened.with_label_values(&[&reg.id]).inc();
    if shared.registry.insert(session.clone()) {
        metrics
            .sessions_replaced
            .with_label_values(&[&reg.id])
            .inc();
    }
    metrics.agent_up(&reg.id, &session.agent_version);
    metrics.agents_connected.set(shared.registry.len() as i64);
    tracing::info!(session = session.id, agent_version = %session.agent_version, "agent connected");
    crate::tcp::open_for_session(&shared, &session).await;

    let end = control_loop(
        &shared,
        &session,
        &mut frames,
        &mut inbound,
        &mut write,
        heartbeat,
    )
    .await;
    shared.registry.remove_if(&reg.id, session.id);
    if end == ControlEnd::Draining {
        tracing::info!(
            session = session.id,
            inflight = session.inflight(),
            "agent draining"
        );
        drain(&session, &mux).await;
        let _ = write_frame(
            &mut write,
            &ControlMessage::GoAway {
                reason: "drained".into(),
            },
        )
        .await;
    }
    session.close("tunnel ended");
    if shared.registry.get(&reg.id).is_none() {
        shared.tcp.close_registration(&reg.id);
        metrics.agent_down(&reg.id, &session.agent_version, &session.services);
    }
    metrics.agents_connected.set(shared.registry.len() as i64);
    tracing::info!(session = session.id, "agent disconnected");
}

fn check_hello(version: u16, services: &[ServiceDecl]) -> Result<(), String> {
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {version} is not supported (gateway speaks {PROTOCOL_VERSION})"
        ));
    }
    if services.len() > MAX_SERVICES {
        return Err(format!("at most {MAX_SERVICES} services"));
    }
    let mut names = std::collections::HashSet::new();
    for s in services {
        if s.name.is_empty() || s.name.len() > 64 || !names.insert(s.name.as_str()) {
            return Err(format!("invalid or duplicate service name {:?}", s.name));
        }
    }
    Ok(())
}

/// Read control frames on their own task so the loop below can select on them safely.
fn spawn_reader(mut read: ReadHalf<MuxStream>) -> mpsc::Receiver<ControlMessage> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match read_frame::<ControlMessage, _>(&mut read).await {
                Ok(Some(msg)) => {
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "control stream read failed");
                    return;
                }
            }
        }
    });
    rx
}

/// How the control conversation ended.
#[derive(Debug, PartialEq, Eq)]
enum ControlEnd {
    /// The tunnel broke or the agent went silent.
    Closed,
    /// The agent is shutting down and asked for a drain.
    Draining,
}

/// Longest a draining agent's in-flight requests are waited for.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Wait until no request is in flight on `session` (or the tunnel dies, or the limit passes).
async fn drain(session: &AgentSession, mux: &mux::MuxHandle) {
    let idle = async {
        while session.inflight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = idle => {}
        _ = mux.closed() => {}
        _ = tokio::time::sleep(DRAIN_LIMIT) => tracing::warn!("drain limit reached"),
    }
}

async fn control_loop(
    shared: &Shared,
    session: &AgentSession,
    frames: &mut mpsc::Receiver<ControlMessage>,
    inbound: &mut mpsc::Receiver<MuxStream>,
    write: &mut WriteHalf<MuxStream>,
    heartbeat: Duration,
) -> ControlEnd {
    // The agent heartbeats every interval; three missed beats mean it is gone even if SSH
    // keepalives still pass (a wedged agent).
    let silence_limit = heartbeat * 3;
    let reg = session.registration_id.as_str();
    loop {
        tokio::select! {
            msg = tokio::time::timeout(silence_limit, frames.recv()) => match msg {
                Ok(Some(ControlMessage::Heartbeat { seq })) => {
                    let now = crate::store::now_unix();
                    session.last_heartbeat.store(now as u64, std::sync::atomic::Ordering::Relaxed);
                    shared.metrics.agent_last_heartbeat.with_label_values(&[reg]).set(now);
                    if write_frame(write, &ControlMessage::HeartbeatAck { seq }).await.is_err() {
                        return ControlEnd::Closed;
                    }
                }
                Ok(Some(ControlMessage::Report { mut report })) => {
                    announced_only(&mut report, &session.services);
                    shared.metrics.agent_report(reg, &report);
                }
                Ok(Some(ControlMessage::Draining)) => return ControlEnd::Draining,
                Ok(Some(other)) => tracing::debug!(?other, "ignored control message"),
                Ok(None) => return ControlEnd::Closed,
                Err(_) => {
                    tracing::warn!("agent heartbeats stopped");
                    return ControlEnd::Closed;
                }
            },
            _ = session.mux.closed() => return ControlEnd::Closed,
            // Only the gateway opens data streams; an agent that opens one is not ours.
            Some(_) = inbound.recv() => {
                tracing::warn!("the agent opened a stream; closing its session (protocol violation)");
                shared.metrics.ssh_closed.with_label_values(&["protocol_violation"]).inc();
                return ControlEnd::Closed;
            }
            _ = session.go_away.cancelled() => {
                let bye = ControlMessage::GoAway { reason: "gateway shutting down".into() };
                if write_frame(write, &bye).await.is_ok() {
                    tracing::info!("told the agent to go away");
                    // The agent closes the tunnel once it has read it; do not cut it first.
                    let _ = tokio::time::timeout(Duration::from_millis(400), session.mux.closed()).await;
                }
                return ControlEnd::Closed;
            }
        }
    }
}

/// Keep only the services the agent announced in its Hello, so a (hostile) report cannot mint
/// metric label values.
fn announced_only(report: &mut g2c_proto::AgentReport, announced: &[ServiceDecl]) {
    report
        .services
        .retain(|s| announced.iter().any(|d| d.name == s.name));
}

#[cfg(test)]
mod tests {
    use g2c_proto::{AgentReport, ServiceDecl, ServiceHealth, ServiceKind};

    #[test]
    fn a_report_cannot_name_services_the_agent_did_not_announce() {
        let health = |name: &str| ServiceHealth {
            name: name.into(),
            healthy: true,
            latency_us: 1,
        };
        let mut report = AgentReport {
            reconnects: 0,
            active_streams: 0,
            services: (0..10_000)
                .map(|i| health(&format!("evil-{i}")))
                .chain([health("db")])
                .collect(),
        };
        let announced = [ServiceDecl {
            name: "db".into(),
            kind: ServiceKind::Tcp,
        }];
        super::announced_only(&mut report, &announced);
        assert_eq!(report.services, vec![health("db")]);
    }
}
