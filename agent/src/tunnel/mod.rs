//! The agent's tunnel: [`connect`] dials the gateway over SSH (pinned host key, public-key
//! auth) and asks for the registration's forward; [`session`] runs yamux over the forwarded
//! channel, says Hello and serves every stream the gateway opens, with [`heartbeat`] on the
//! control stream. [`run`] here keeps `gateway.connections` tunnels ([`fleet`]: each on its
//! own node of a clustered gateway), each reconnecting forever with jittered exponential
//! backoff until shutdown; a tunnel told to go away stays open until its replacement is up.

mod connect;
mod fleet;
mod heartbeat;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::supervisor::Supervisor;
use fleet::Fleet;

pub use connect::client_config;

/// Why one tunnel session ended.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// Network or SSH failure.
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
    /// The gateway presented a host key other than the pinned one.
    #[error("the gateway's host key does not match the pinned key; refusing to connect")]
    HostKeyMismatch,
    /// The gateway refused our key (unregistered or revoked).
    #[error("the gateway refused authentication for registration {0}")]
    AuthRefused(String),
    /// The gateway refused our forward request.
    #[error("the gateway refused the tunnel port {0}")]
    ForwardRefused(u16),
    /// The control-stream handshake failed.
    #[error("control stream: {0}")]
    Control(String),
    /// A step took too long.
    #[error("timed out while {0}")]
    Timeout(&'static str),
}

/// Why a session ended without an error.
pub(super) enum SessionEnd {
    /// Shutdown, or the gateway closed the tunnel.
    Closed,
    /// A reconnect was asked for (GUI, or a config change that needs a new session): connect
    /// again at once.
    Reconnect(&'static str),
    /// The gateway said GoAway (it is shutting down): reconnect after a short random delay, so
    /// a fleet told at once does not land on the next gateway in the same instant.
    GoAway,
}

/// Longest random wait before reconnecting after a GoAway from a gateway that named no other
/// node (a restart of the one gateway): a fleet told at once does not land in the same instant.
const GO_AWAY_SPREAD: Duration = Duration::from_secs(2);
/// The same when other nodes are known: the replacement tunnel goes there at once.
const GO_AWAY_SPREAD_CLUSTER: Duration = Duration::from_millis(200);

/// Run the agent's tunnels until `shutdown` fires. Never returns because the gateway is down.
/// Follows the live configuration in `control`: each session uses the config of its start.
/// `gateway.connections` tunnels are kept, each to its own node once a clustered gateway
/// named its nodes (one to a single gateway).
pub async fn run(control: Arc<Supervisor>, shutdown: CancellationToken) {
    let slots = usize::from(control.config().gateway.connections.max(1));
    let fleet = Fleet::new(slots);
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..slots {
        let span = tracing::info_span!("tunnel", slot);
        tasks.spawn(
            slot_loop(control.clone(), shutdown.clone(), fleet.clone(), slot).instrument(span),
        );
    }
    tasks.join_all().await;
}

/// One tunnel slot: connect, serve, reconnect with jittered exponential backoff (reset after
/// a stable session), until shutdown.
async fn slot_loop(
    control: Arc<Supervisor>,
    shutdown: CancellationToken,
    fleet: Arc<Fleet>,
    slot: usize,
) {
    let status = control.status().clone();
    let mut reconnects = control.subscribe_reconnect();
    let mut picture = fleet.subscribe();
    let mut config = control.config();
    let mut backoff = backoff_for(&config);
    let mut avoid: Option<String> = None;
    let mut release: Option<CancellationToken> = None;
    let mut attempt = 0u32;
    loop {
        config = control.config();
        let fallback = format!("{}:{}", config.gateway.ssh_host, config.gateway.ssh_port);
        let Some(target) = fleet.choose(slot, attempt, avoid.as_deref(), &fallback) else {
            // Nothing free for this slot: wait for the picture to change.
            picture.mark_unchanged();
            tokio::select! {
                _ = picture.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        };
        attempt = attempt.wrapping_add(1);
        if slot == 0 {
            status.set_identity(fallback.clone(), config.registration_id.clone());
        }
        let started = Instant::now();
        let gateway = target.addr.clone();
        let span = tracing::info_span!("session", registration = %config.registration_id, %gateway, node = ?target.node);
        let link = session::Link {
            fleet: fleet.clone(),
            slot,
            target: target.clone(),
            release: release.take(),
            let_go: CancellationToken::new(),
        };
        let result = session::session(&control, &config, &shutdown, &link)
            .instrument(span)
            .await;
        if let Some(r) = &link.release {
            r.cancel(); // the replacement failed: let the old one go anyway
        }
        if shutdown.is_cancelled() {
            status.set_disconnected(None);
            return;
        }
        let error = match result {
            Ok(SessionEnd::Reconnect(why)) => {
                tracing::info!(%gateway, reason = why, "reconnecting now");
                status.set_disconnected(None);
                backoff = backoff_for(&control.config());
                continue;
            }
            Ok(SessionEnd::GoAway) => {
                avoid = target.node.clone();
                release = Some(link.let_go.clone());
                let spread = match target.node {
                    Some(_) => GO_AWAY_SPREAD_CLUSTER,
                    None => GO_AWAY_SPREAD,
                };
                let delay = Duration::from_millis(rand::Rng::gen_range(
                    &mut rand::thread_rng(),
                    0..=spread.as_millis() as u64,
                ));
                tracing::info!(%gateway, delay_ms = delay.as_millis() as u64, "gateway went away; reconnecting elsewhere after a random delay");
                status.set_disconnected(Some("the gateway went away (shutting down)".into()));
                backoff = backoff_for(&control.config());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = reconnects.changed() => {}
                    _ = shutdown.cancelled() => { return; }
                }
                continue;
            }
            Ok(SessionEnd::Closed) => None,
            Err(e) => Some(e.to_string()),
        };
        match &error {
            Some(e) => tracing::warn!(%gateway, error = %e, "tunnel down"),
            None => tracing::warn!(%gateway, "tunnel closed by the gateway"),
        }
        avoid = target.node.clone();
        status.set_disconnected(error);
        if started.elapsed() >= Duration::from_secs(config.reconnect.stable_after_secs) {
            backoff = backoff_for(&control.config());
        }
        let delay = backoff.next_delay();
        tracing::info!(
            attempt = backoff.attempts(),
            delay_ms = delay.as_millis() as u64,
            "reconnecting after delay"
        );
        reconnects.mark_unchanged();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = reconnects.changed() => { backoff = backoff_for(&control.config()); }
            _ = shutdown.cancelled() => { return; }
        }
    }
}

fn backoff_for(config: &AgentConfig) -> Backoff {
    let r = &config.reconnect;
    Backoff::new(
        Duration::from_millis(r.initial_delay_ms),
        Duration::from_millis(r.max_delay_ms),
    )
}
