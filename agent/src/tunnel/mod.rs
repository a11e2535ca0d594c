//! The agent's tunnel: [`connect`] dials the gateway over SSH (pinned host key, public-key
//! auth) and asks for the registration's forward; [`session`] runs yamux over the forwarded
//! channel, says Hello and serves every stream the gateway opens, with [`heartbeat`] on the
//! control stream. [`run`] here reconnects forever with jittered exponential backoff until
//! shutdown.

mod connect;
mod heartbeat;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::supervisor::Supervisor;

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

/// Longest random wait before reconnecting after a GoAway.
const GO_AWAY_SPREAD: Duration = Duration::from_secs(2);

/// Run the agent's tunnel until `shutdown` fires. Never returns because the gateway is down.
/// Follows the live configuration in `control`: each session uses the config of its start.
pub async fn run(control: Arc<Supervisor>, shutdown: CancellationToken) {
    let status = control.status().clone();
    let mut reconnects = control.subscribe_reconnect();
    let mut config = control.config();
    let mut backoff = backoff_for(&config);
    loop {
        config = control.config();
        let gateway = format!("{}:{}", config.gateway.ssh_host, config.gateway.ssh_port);
        status.set_identity(gateway.clone(), config.registration_id.clone());
        let started = Instant::now();
        let span = tracing::info_span!("session", registration = %config.registration_id, %gateway);
        let result = session::session(&control, &config, &shutdown)
            .instrument(span)
            .await;
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
                let delay = Duration::from_millis(rand::Rng::gen_range(
                    &mut rand::thread_rng(),
                    0..=GO_AWAY_SPREAD.as_millis() as u64,
                ));
                tracing::info!(%gateway, delay_ms = delay.as_millis() as u64, "gateway went away; reconnecting after a random delay");
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
