//! The agent's tunnel: dial the gateway over SSH (pinned host key, public-key auth), ask for the
//! registration's forward, run yamux over the forwarded channel (agent = server mode), say Hello
//! on the control stream, then serve every stream the gateway opens. Reconnects forever with
//! jittered exponential backoff until shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use g2c_proto::frame::{read_frame, write_frame};
use g2c_proto::mux::{self, Mode, Mux};
use g2c_proto::{sshkeys, tuning, AgentReport, ControlMessage, ServiceDecl, PROTOCOL_VERSION};
use russh::client::{self, Msg};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::Channel;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::control::Control;
use crate::splice::{serve_stream, service_map, ServiceMap};

/// How long one connection attempt (TCP + SSH handshake + auth + forward) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long in-flight streams get to finish on shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

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

/// SSH client configuration: AES-256-GCM first, no compression, tuned window, keepalive.
pub fn client_config() -> client::Config {
    client::Config {
        preferred: tuning::ssh_preferred(),
        window_size: tuning::SSH_WINDOW_SIZE,
        maximum_packet_size: tuning::SSH_MAX_PACKET_SIZE,
        keepalive_interval: Some(tuning::SSH_KEEPALIVE_INTERVAL),
        keepalive_max: tuning::SSH_KEEPALIVE_MAX,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    }
}

struct ClientHandler {
    pinned: PublicKey,
    tunnel_port: u16,
    channels: mpsc::Sender<Channel<Msg>>,
    mismatch: Arc<AtomicBool>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let ok = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => sshkeys::same_key(key, &self.pinned),
            PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !ok {
            self.mismatch.store(true, Ordering::SeqCst);
        }
        Ok(ok)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        if connected_port != u32::from(self.tunnel_port) {
            drop(reply);
            return Ok(());
        }
        reply.accept().await;
        let _ = self.channels.try_send(channel);
        Ok(())
    }
}

/// Why a session ended without an error.
enum SessionEnd {
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
pub async fn run(control: Arc<Control>, shutdown: CancellationToken) {
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
        let result = session(&control, &config, &shutdown).instrument(span).await;
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

/// How a session the gateway ended ended: at its request (reconnect at once) or not.
fn ended(go_away: &AtomicBool) -> SessionEnd {
    if go_away.load(Ordering::SeqCst) {
        SessionEnd::GoAway
    } else {
        SessionEnd::Closed
    }
}

fn backoff_for(config: &AgentConfig) -> Backoff {
    let r = &config.reconnect;
    Backoff::new(
        Duration::from_millis(r.initial_delay_ms),
        Duration::from_millis(r.max_delay_ms),
    )
}

/// One connection: returns when the tunnel ends (Ok if closed by shutdown or the gateway).
async fn session(
    control: &Control,
    config: &AgentConfig,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, TunnelError> {
    let status = control.status();
    let mut reconnects = control.subscribe_reconnect();
    let mut config_changes = control.subscribe_config();
    reconnects.mark_unchanged();
    config_changes.mark_unchanged();
    let mut services = Arc::new(service_map(&config.services, None));
    let key = Arc::new(
        sshkeys::read_private_key(&config.key_file)
            .map_err(|e| TunnelError::Control(e.to_string()))?,
    );
    let g = &config.gateway;
    let pinned =
        sshkeys::parse_public(&g.host_key).map_err(|e| TunnelError::Control(e.to_string()))?;
    let (chan_tx, mut chan_rx) = mpsc::channel(1);
    let mismatch = Arc::new(AtomicBool::new(false));
    let handler = ClientHandler {
        pinned,
        tunnel_port: g.tunnel_port,
        channels: chan_tx,
        mismatch: mismatch.clone(),
    };
    let setup = async {
        let tcp = tokio::net::TcpStream::connect((g.ssh_host.as_str(), g.ssh_port))
            .await
            .map_err(|e| TunnelError::Ssh(russh::Error::from(e)))?;
        let _ = tcp.set_nodelay(true);
        // One read syscall per burst instead of several per SSH packet; writes pass through.
        let io = tokio::io::BufReader::with_capacity(tuning::SSH_READ_BUFFER, tcp);
        let mut handle = client::connect_stream(Arc::new(client_config()), io, handler)
            .await
            .map_err(|e| {
                if mismatch.load(Ordering::SeqCst) {
                    TunnelError::HostKeyMismatch
                } else {
                    TunnelError::Ssh(e)
                }
            })?;
        let auth = handle
            .authenticate_publickey(
                &config.registration_id,
                PrivateKeyWithHashAlg::new(key, None),
            )
            .await?;
        if !auth.success() {
            return Err(TunnelError::AuthRefused(config.registration_id.clone()));
        }
        handle
            .tcpip_forward("g2c", u32::from(g.tunnel_port))
            .await
            .map_err(|_| TunnelError::ForwardRefused(g.tunnel_port))?;
        let channel = chan_rx
            .recv()
            .await
            .ok_or(TunnelError::Control("no forwarded channel".into()))?;
        Ok::<_, TunnelError>((handle, channel))
    };
    let (handle, channel) = tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .map_err(|_| TunnelError::Timeout("connecting to the gateway"))??;

    let (mux, mut inbound) = mux::spawn(channel.into_stream().compat(), Mode::Server);
    let control = mux
        .open()
        .await
        .map_err(|e| TunnelError::Control(e.to_string()))?;
    let (mut read, mut write) = tokio::io::split(control);
    let hello = ControlMessage::Hello {
        version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        services: config
            .services
            .iter()
            .map(|s| ServiceDecl {
                name: s.name.clone(),
                kind: s.kind,
            })
            .collect(),
    };
    let hello_sent = Instant::now();
    let welcome = tokio::time::timeout(Duration::from_secs(10), async {
        write_frame(&mut write, &hello).await?;
        read_frame::<ControlMessage, _>(&mut read).await
    })
    .await
    .map_err(|_| TunnelError::Timeout("waiting for the gateway's welcome"))?
    .map_err(|e| TunnelError::Control(e.to_string()))?;
    let heartbeat = match welcome {
        Some(ControlMessage::Welcome { heartbeat_secs, .. }) => {
            Duration::from_secs(u64::from(heartbeat_secs.clamp(1, 300)))
        }
        Some(ControlMessage::Refused { reason }) => {
            return Err(TunnelError::Control(format!("refused: {reason}")))
        }
        other => return Err(TunnelError::Control(format!("unexpected answer {other:?}"))),
    };
    status.set_rtt(hello_sent.elapsed());
    status.set_connected();
    tracing::info!(services = config.services.len(), "tunnel up");

    // Control reader: acks advance `last_ack` (and give the round-trip time); GoAway or EOF
    // ends the session.
    let last_ack = Arc::new(AtomicU64::new(0));
    let last_sent = Arc::new(std::sync::Mutex::new((0u64, Instant::now())));
    let control_done = CancellationToken::new();
    let go_away = Arc::new(AtomicBool::new(false));
    {
        let go_away = go_away.clone();
        let last_ack = last_ack.clone();
        let last_sent = last_sent.clone();
        let control_done = control_done.clone();
        let status = status.clone();
        tokio::spawn(async move {
            loop {
                match read_frame::<ControlMessage, _>(&mut read).await {
                    Ok(Some(ControlMessage::HeartbeatAck { seq })) => {
                        last_ack.store(seq, Ordering::SeqCst);
                        let (sent_seq, at) = *last_sent.lock().unwrap_or_else(|p| p.into_inner());
                        if sent_seq == seq {
                            status.set_rtt(at.elapsed());
                        }
                    }
                    Ok(Some(ControlMessage::GoAway { reason })) => {
                        tracing::info!(%reason, "gateway asked us to reconnect");
                        go_away.store(true, Ordering::SeqCst);
                        break;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            control_done.cancel();
        });
    }

    // Health probes run on their own task (a slow local service must not hold up streams);
    // each round is reported to the gateway as soon as it is done.
    let (health_tx, mut health_rx) = mpsc::channel(1);
    let start_prober = |services: Arc<ServiceMap>| {
        tokio::spawn(
            crate::health::probe_loop(services, heartbeat, health_tx.clone())
                .instrument(tracing::debug_span!("health")),
        )
    };
    let mut prober = start_prober(services.clone());
    let mut streams = JoinSet::new();
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut next_stream = 0u64;
    let result = loop {
        tokio::select! {
            s = inbound.recv() => match s {
                Some(stream) => {
                    next_stream += 1;
                    let span = tracing::debug_span!("stream", id = next_stream);
                    let (services, status) = (services.clone(), status.clone());
                    streams.spawn(async move {
                        let _active = status.stream_started();
                        serve_stream(stream, services, &status).await;
                    }.instrument(span));
                }
                None => break Ok(SessionEnd::Closed),
            },
            _ = reconnects.changed() => break Ok(SessionEnd::Reconnect("reconnect requested")),
            Ok(()) = config_changes.changed() => {
                let new = config_changes.borrow_and_update().clone();
                if config.needs_new_session(&new) {
                    break Ok(SessionEnd::Reconnect("configuration changed"));
                }
                // Same announced services: new streams use the new addresses at once, and open
                // streams of a changed service close (a pooled connection must not keep
                // talking to the old address).
                services = Arc::new(service_map(&new.services, Some(&services)));
                prober.abort();
                prober = start_prober(services.clone());
                tracing::info!("services updated in place");
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            Some(health) = health_rx.recv() => {
                status.set_services(health.clone());
                let report = AgentReport {
                    reconnects: status.reconnects(),
                    active_streams: streams.len() as u32,
                    services: health,
                };
                if write_frame(&mut write, &ControlMessage::Report { report }).await.is_err() {
                    break Ok(SessionEnd::Closed);
                }
            }
            _ = tick.tick() => {
                if seq > 0 && seq.saturating_sub(last_ack.load(Ordering::SeqCst)) >= 3 {
                    break Err(TunnelError::Timeout("waiting for heartbeat answers"));
                }
                seq += 1;
                *last_sent.lock().unwrap_or_else(|p| p.into_inner()) = (seq, Instant::now());
                if write_frame(&mut write, &ControlMessage::Heartbeat { seq }).await.is_err() {
                    break Ok(SessionEnd::Closed);
                }
            }
            _ = control_done.cancelled() => break Ok(ended(&go_away)),
            _ = mux.closed() => break Ok(ended(&go_away)),
            _ = shutdown.cancelled() => {
                // Ask the gateway to stop routing here; it closes the tunnel once its requests in
                // flight are done (idle pooled connections do not hold us up).
                tracing::info!(streams = streams.len(), "shutting down: draining");
                if write_frame(&mut write, &ControlMessage::Draining).await.is_ok() {
                    let drained = async {
                        tokio::select! {
                            _ = control_done.cancelled() => {}
                            _ = mux.closed() => {}
                        }
                    };
                    if tokio::time::timeout(DRAIN_GRACE, drained).await.is_err() {
                        tracing::warn!("drain grace over; closing remaining streams");
                    }
                }
                break Ok(SessionEnd::Closed);
            }
        }
    };
    prober.abort();
    streams.abort_all();
    mux.close();
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "agent closing", "en")
        .await;
    result
}
