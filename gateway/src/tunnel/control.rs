//! The gateway's side of a tunnel's control stream once the session is up: heartbeats and
//! their acks, the agent's reports (relayed as metrics), the agent's Draining notice, and the
//! gateway's GoAway at shutdown, and in a cluster the node list agents keep their other
//! tunnels on. An agent that opens a stream of its own breaks the protocol
//! and loses its session.

use std::sync::Arc;
use std::time::Duration;

use g2c_proto::frame::{read_frame, write_frame};
use g2c_proto::mux::MuxStream;
use g2c_proto::{ControlMessage, ServiceDecl};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::core::registry::AgentSession;
use crate::core::Core;

/// Longest a draining agent's in-flight requests are waited for.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long an agent told to go away has to close the tunnel itself.
const GO_AWAY_WAIT: Duration = Duration::from_millis(400);
/// The same in a cluster: the agent opens its replacement tunnel on another node first.
const CLUSTER_GO_AWAY_WAIT: Duration = Duration::from_secs(5);

/// How the control conversation ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ControlEnd {
    /// The tunnel broke, the agent went silent, or it was told to go away.
    Closed,
    /// The agent is shutting down and asked for a drain.
    Draining,
}

/// Serve the control stream until the conversation ends; hands back the write half for the
/// last words.
pub(super) async fn serve(
    core: &Arc<Core>,
    session: &AgentSession,
    control: MuxStream,
    mut inbound: mpsc::Receiver<MuxStream>,
) -> (ControlEnd, WriteHalf<MuxStream>) {
    let (read, mut write) = tokio::io::split(control);
    let mut frames = spawn_reader(core, read);
    // The agent heartbeats every interval; three missed beats mean it is gone even if SSH
    // keepalives still pass (a wedged agent).
    let silence_limit = core.config.limits.heartbeat() * 3;
    let mut nodes = core.nodes.subscribe();
    nodes.mark_changed();
    let end = loop {
        tokio::select! {
            Ok(()) = nodes.changed() => {
                let view = nodes.borrow_and_update().clone();
                if let Some(view) = view {
                    let msg = ControlMessage::Nodes {
                        this: view.this.clone(),
                        nodes: view.nodes.clone(),
                    };
                    if write_frame(&mut write, &msg).await.is_err() {
                        break ControlEnd::Closed;
                    }
                }
            }
            msg = tokio::time::timeout(silence_limit, frames.recv()) => match msg {
                Ok(Some(msg)) => {
                    if let Some(end) = on_message(core, session, msg, &mut write).await {
                        break end;
                    }
                }
                Ok(None) => break ControlEnd::Closed,
                Err(_) => {
                    tracing::warn!("agent heartbeats stopped");
                    break ControlEnd::Closed;
                }
            },
            _ = session.link.closed() => break ControlEnd::Closed,
            // Only the gateway opens data streams; an agent that opens one is not ours.
            Some(_) = inbound.recv() => {
                tracing::warn!("the agent opened a stream; closing its session (protocol violation)");
                core.metrics.ssh_closed.with_label_values(&["protocol_violation"]).inc();
                break ControlEnd::Closed;
            }
            _ = session.go_away.cancelled() => {
                let wait = match core.config.cluster {
                    Some(_) => CLUSTER_GO_AWAY_WAIT,
                    None => GO_AWAY_WAIT,
                };
                go_away(session, &mut write, wait).await;
                break ControlEnd::Closed;
            }
        }
    };
    (end, write)
}

/// Handle one message from the agent; `Some` when it ends the conversation.
async fn on_message(
    core: &Core,
    session: &AgentSession,
    msg: ControlMessage,
    write: &mut WriteHalf<MuxStream>,
) -> Option<ControlEnd> {
    let reg = session.registration_id.as_str();
    match msg {
        ControlMessage::Heartbeat { seq } => {
            let now = crate::store::now_unix();
            session
                .last_heartbeat
                .store(now as u64, std::sync::atomic::Ordering::Relaxed);
            core.metrics
                .agent_last_heartbeat
                .with_label_values(&[reg])
                .set(now);
            let ack = ControlMessage::HeartbeatAck { seq };
            if write_frame(write, &ack).await.is_err() {
                return Some(ControlEnd::Closed);
            }
        }
        ControlMessage::Report { mut report } => {
            announced_only(&mut report, &session.services);
            core.metrics.agent_report(reg, &report);
            *session.health.write().unwrap_or_else(|p| p.into_inner()) = report.services;
        }
        ControlMessage::Draining => return Some(ControlEnd::Draining),
        other => tracing::debug!(?other, "ignored control message"),
    }
    None
}

/// Tell the agent to go away; it closes the tunnel once it has read it: do not cut it first.
async fn go_away(session: &AgentSession, write: &mut WriteHalf<MuxStream>, wait: Duration) {
    let bye = ControlMessage::GoAway {
        reason: "gateway shutting down".into(),
    };
    if write_frame(write, &bye).await.is_ok() {
        tracing::info!("told the agent to go away");
        let _ = tokio::time::timeout(wait, session.link.closed()).await;
    }
}

/// The agent asked for a drain: wait until no request is in flight on its session (or the
/// tunnel dies, or the limit passes), then say GoAway.
pub(super) async fn drain(session: &AgentSession, write: &mut WriteHalf<MuxStream>) {
    tracing::info!(
        session = session.id,
        inflight = session.inflight(),
        "agent draining"
    );
    tokio::select! {
        _ = session.inflight.idle() => {}
        _ = session.link.closed() => {}
        _ = tokio::time::sleep(DRAIN_LIMIT) => tracing::warn!("drain limit reached"),
    }
    let bye = ControlMessage::GoAway {
        reason: "drained".into(),
    };
    let _ = write_frame(write, &bye).await;
}

/// Read control frames on their own task so the loop above can select on them safely.
fn spawn_reader(core: &Core, mut read: ReadHalf<MuxStream>) -> mpsc::Receiver<ControlMessage> {
    let (tx, rx) = mpsc::channel(16);
    core.spawn(tracing::debug_span!("control_reader"), async move {
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
