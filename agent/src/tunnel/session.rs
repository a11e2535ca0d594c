//! One tunnel session: dial, run yamux over the forwarded channel (agent = server mode), say
//! Hello, then serve every stream the gateway opens, heartbeat, report health and follow live
//! configuration changes until the session ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use g2c_proto::handshake::{self, HelloError};
use g2c_proto::mux::{self, Mode, Mux, MuxHandle, MuxStream};
use g2c_proto::{AgentReport, ControlMessage, ServiceDecl, ServiceHealth};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::fleet::{Fleet, Target};
use super::heartbeat::{Heartbeat, NodesHeard};
use super::{connect, SessionEnd, TunnelError};
use crate::config::AgentConfig;
use crate::splice::{serve_stream, service_map, ServiceMap};
use crate::status::Status;
use crate::supervisor::Supervisor;

/// How long in-flight streams get to finish on shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// How long a tunnel the gateway told to go away stays open while its replacement connects.
const LINGER: Duration = Duration::from_secs(5);

/// Which tunnel of the agent's fleet a session is, and where it dials.
pub(super) struct Link {
    /// The agent's tunnels.
    pub fleet: Arc<Fleet>,
    /// This session's slot.
    pub slot: usize,
    /// Where to dial.
    pub target: Target,
    /// The slot's previous tunnel, told to go away and kept open until this one is up:
    /// cancelled once it is.
    pub release: Option<CancellationToken>,
    /// Cancelled when this tunnel, told to go away, may close (its replacement is up).
    pub let_go: CancellationToken,
}

/// One connection: returns when the tunnel ends (Ok if closed by shutdown or the gateway).
pub(super) async fn session(
    supervisor: &Supervisor,
    config: &AgentConfig,
    shutdown: &CancellationToken,
    link: &Link,
) -> Result<SessionEnd, TunnelError> {
    let status = supervisor.status().clone();
    let mut reconnects = supervisor.subscribe_reconnect();
    let mut config_changes = supervisor.subscribe_config();
    reconnects.mark_unchanged();
    config_changes.mark_unchanged();
    let (handle, channel) = connect::connect(config, &link.target.addr).await?;
    let (mux, inbound) = mux::spawn(channel.into_stream().compat(), Mode::Server);
    let mut control = mux
        .open()
        .await
        .map_err(|e| TunnelError::Control(e.to_string()))?;
    let hello_sent = Instant::now();
    let welcome = handshake::say_hello(&mut control, env!("CARGO_PKG_VERSION"), decls(config))
        .await
        .map_err(|e| match e {
            HelloError::Timeout(_) => TunnelError::Timeout("waiting for the gateway's welcome"),
            other => TunnelError::Control(other.to_string()),
        })?;
    status.set_rtt(hello_sent.elapsed());
    let _up = status.tunnel_up();
    if let Some(previous) = &link.release {
        previous.cancel();
    }
    tracing::info!(
        services = config.services.len(),
        slot = link.slot,
        "tunnel up"
    );
    let (read, write) = tokio::io::split(control);
    let services = Arc::new(service_map(&config.services, None));
    let (health_tx, health_rx) = mpsc::channel(1);
    let mut s = Session {
        config: config.clone(),
        status: status.clone(),
        heartbeat: Heartbeat::start(
            read,
            write,
            status,
            NodesHeard {
                fleet: link.fleet.clone(),
                slot: link.slot,
            },
        ),
        prober: start_prober(services.clone(), welcome.heartbeat, health_tx.clone()),
        services,
        interval: welcome.heartbeat,
        health_tx,
        streams: JoinSet::new(),
        next_stream: 0,
        mux,
    };
    let result = s
        .serve(
            inbound,
            health_rx,
            &mut reconnects,
            &mut config_changes,
            shutdown,
        )
        .await;
    s.prober.abort();
    link.fleet.lost(link.slot);
    let Session {
        mut streams, mux, ..
    } = s;
    let close = async move {
        streams.abort_all();
        mux.close();
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "agent closing", "en")
            .await;
    };
    if matches!(result, Ok(SessionEnd::GoAway)) && !shutdown.is_cancelled() {
        // Told to go away: the streams in flight finish while the replacement connects.
        let let_go = link.let_go.clone();
        tokio::spawn(
            async move {
                let _ = tokio::time::timeout(LINGER, let_go.cancelled()).await;
                close.await;
            }
            .in_current_span(),
        );
    } else {
        close.await;
    }
    result
}

fn decls(config: &AgentConfig) -> Vec<ServiceDecl> {
    config
        .services
        .iter()
        .map(|s| ServiceDecl {
            name: s.name.clone(),
            kind: s.kind,
        })
        .collect()
}

/// Health probes run on their own task (a slow local service must not hold up streams); each
/// round is reported to the gateway as soon as it is done.
fn start_prober(
    services: Arc<ServiceMap>,
    interval: Duration,
    tx: mpsc::Sender<Vec<ServiceHealth>>,
) -> JoinHandle<()> {
    tokio::spawn(
        crate::health::probe_loop(services, interval, tx)
            .instrument(tracing::debug_span!("health")),
    )
}

/// A live session's state.
struct Session {
    config: AgentConfig,
    status: Arc<Status>,
    heartbeat: Heartbeat,
    services: Arc<ServiceMap>,
    prober: JoinHandle<()>,
    interval: Duration,
    health_tx: mpsc::Sender<Vec<ServiceHealth>>,
    streams: JoinSet<()>,
    next_stream: u64,
    mux: MuxHandle,
}

impl Session {
    async fn serve(
        &mut self,
        mut inbound: mpsc::Receiver<MuxStream>,
        mut health: mpsc::Receiver<Vec<ServiceHealth>>,
        reconnects: &mut watch::Receiver<u64>,
        config_changes: &mut watch::Receiver<Arc<AgentConfig>>,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, TunnelError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let done = self.heartbeat.done.clone();
        let mux = self.mux.clone();
        loop {
            tokio::select! {
                s = inbound.recv() => match s {
                    Some(stream) => self.serve_stream(stream),
                    None => return Ok(SessionEnd::Closed),
                },
                _ = reconnects.changed() => return Ok(SessionEnd::Reconnect("reconnect requested")),
                Ok(()) = config_changes.changed() => {
                    let new = config_changes.borrow_and_update().clone();
                    if self.config.needs_new_session(&new) {
                        return Ok(SessionEnd::Reconnect("configuration changed"));
                    }
                    self.services_changed(&new);
                }
                Some(_) = self.streams.join_next(), if !self.streams.is_empty() => {}
                Some(health) = health.recv() => {
                    if self.report(health).await.is_err() {
                        return Ok(SessionEnd::Closed);
                    }
                }
                _ = tick.tick() => match self.heartbeat.beat().await {
                    Err(e @ TunnelError::Timeout(_)) => return Err(e),
                    Err(_) => return Ok(SessionEnd::Closed),
                    Ok(()) => {}
                },
                _ = done.cancelled() => return Ok(self.heartbeat.ended()),
                _ = mux.closed() => return Ok(self.heartbeat.ended()),
                _ = shutdown.cancelled() => {
                    self.drain().await;
                    return Ok(SessionEnd::Closed);
                }
            }
        }
    }

    fn serve_stream(&mut self, stream: MuxStream) {
        self.next_stream += 1;
        let span = tracing::debug_span!("stream", id = self.next_stream);
        let (services, status) = (self.services.clone(), self.status.clone());
        self.streams.spawn(
            async move {
                let _active = status.stream_started();
                serve_stream(stream, services, &status).await;
            }
            .instrument(span),
        );
    }

    /// Same announced services: new streams use the new addresses at once, and open streams of
    /// a changed service close (a pooled connection must not keep talking to the old address).
    fn services_changed(&mut self, new: &AgentConfig) {
        self.services = Arc::new(service_map(&new.services, Some(&self.services)));
        self.prober.abort();
        self.prober = start_prober(self.services.clone(), self.interval, self.health_tx.clone());
        tracing::info!("services updated in place");
    }

    async fn report(&mut self, health: Vec<ServiceHealth>) -> Result<(), TunnelError> {
        self.status.set_services(health.clone());
        let report = AgentReport {
            reconnects: self.status.reconnects(),
            active_streams: self.streams.len() as u32,
            services: health,
        };
        self.heartbeat
            .send(&ControlMessage::Report { report })
            .await
    }

    /// Ask the gateway to stop routing here; it closes the tunnel once its requests in flight
    /// are done (idle pooled connections do not hold us up).
    async fn drain(&mut self) {
        tracing::info!(streams = self.streams.len(), "shutting down: draining");
        if self.heartbeat.send(&ControlMessage::Draining).await.is_ok() {
            let done = self.heartbeat.done.clone();
            let drained = async {
                tokio::select! {
                    _ = done.cancelled() => {}
                    _ = self.mux.closed() => {}
                }
            };
            if tokio::time::timeout(DRAIN_GRACE, drained).await.is_err() {
                tracing::warn!("drain grace over; closing remaining streams");
            }
        }
    }
}
