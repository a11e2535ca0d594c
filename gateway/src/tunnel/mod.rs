//! The tunnel wing: the embedded SSH server agents dial (public-key auth bound to a
//! registration, one `tcpip-forward` for the registration's own port, or for port 0 from a
//! stock `ssh -R` site, and nothing else: no shell, no exec, no direct-tcpip, no
//! compression), and each tunnel's session over it. It
//! owns the host key; sessions are published through the core's registry.

mod control;
mod handler;
mod plain;
pub mod preauth;
mod session;
mod stage;

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use g2c_proto::tuning;
use russh::keys::PrivateKey;
use russh::{MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::shutdown::Phase;
use handler::TunnelHandler;
use stage::{SessionCounts, Stage};

/// SSH server configuration: tuned window and packets, AES-256-GCM first, no compression,
/// keepalive so a dead agent is noticed within ~15 s.
pub fn server_config(host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        keys: vec![host_key],
        window_size: tuning::SSH_WINDOW_SIZE,
        maximum_packet_size: tuning::SSH_MAX_PACKET_SIZE,
        channel_buffer_size: tuning::SSH_CHANNEL_QUEUE,
        preferred: tuning::ssh_preferred(),
        max_auth_attempts: 3,
        inactivity_timeout: None,
        keepalive_interval: Some(tuning::SSH_KEEPALIVE_INTERVAL),
        keepalive_max: tuning::SSH_KEEPALIVE_MAX,
        nodelay: true,
        ..Default::default()
    }
}

/// Accept SSH connections until the gateway aborts. A connection that has not authenticated
/// within `limits.ssh_preauth_timeout_secs`, or that a newer one evicts past
/// `limits.ssh_max_unauthenticated`, is closed; so is an authenticated one without its forward
/// by `limits.ssh_forward_timeout_secs`. A registration holds at most
/// `limits.ssh_max_sessions_per_registration` sessions.
pub async fn serve(
    listener: TcpListener,
    core: Arc<Core>,
    host_key: PrivateKey,
    workers: crate::workers::Workers,
) {
    let config = Arc::new(server_config(host_key));
    let unauthenticated = preauth::PreAuth::new(core.config.limits.ssh_max_unauthenticated);
    let counts = Arc::new(SessionCounts::default());
    tracing::info!(listener = "ssh", addr = ?listener.local_addr().ok(), "listening");
    let stop = core.shutdown.reached(Phase::Aborting);
    tokio::pin!(stop);
    while let Some((tcp, peer)) = crate::accept::next(&listener, &mut stop, "ssh").await {
        let _ = tcp.set_nodelay(true);
        let (ticket, evicted) = unauthenticated.admit();
        if evicted {
            core.metrics
                .ssh_closed
                .with_label_values(&["preauth_evicted"])
                .inc();
        }
        let evicted = ticket.evicted.clone();
        let (stage, watch) = tokio::sync::watch::channel(Stage::Connected);
        let handler = TunnelHandler::new(core.clone(), peer, ticket, stage, counts.clone());
        let (core2, config) = (core.clone(), config.clone());
        let span = tracing::info_span!("ssh", %peer);
        // The tunnel and everything it spawns run on one worker ([`crate::workers`]).
        workers.spawn_connection(core.tasks(), tcp, move |tcp| {
            connection(core2, config, tcp, handler, evicted, watch).instrument(span)
        });
    }
}

/// One SSH connection, closed at the pre-auth deadline or on eviction unless it authenticated,
/// and at the forward deadline unless its forward was granted.
async fn connection(
    core: Arc<Core>,
    config: Arc<russh::server::Config>,
    tcp: TcpStream,
    handler: TunnelHandler,
    evicted: CancellationToken,
    stage: tokio::sync::watch::Receiver<Stage>,
) {
    // russh reads each packet in pieces (length, then body): a read buffer turns those into
    // one syscall per burst (writes pass straight through).
    let io = tokio::io::BufReader::with_capacity(tuning::SSH_READ_BUFFER, tcp);
    // russh runs a session in a task of its own once the key exchange is done: dropping our
    // future then leaves it running, so a connection past that point is ended by its handle.
    let running = Arc::new(std::sync::OnceLock::<russh::server::Handle>::new());
    let session = {
        let running = running.clone();
        async move {
            match russh::server::run_stream(config, io, handler).await {
                Ok(session) => {
                    let _ = running.set(session.handle());
                    if let Err(e) = session.await {
                        tracing::debug!(error = %e, "ssh session ended with an error");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "ssh handshake failed"),
            }
        }
    };
    tokio::pin!(session);
    let limits = &core.config.limits;
    let started = tokio::time::Instant::now();
    let reached = |stage: &tokio::sync::watch::Receiver<Stage>, want: Stage| {
        let mut stage = stage.clone();
        async move { stage.wait_for(|s| *s >= want).await.is_ok() }
    };
    let authenticated = reached(&stage, Stage::Authenticated);
    let preauth = tokio::time::timeout_at(started + limits.ssh_preauth_timeout(), authenticated);
    let refusal = tokio::select! {
        _ = &mut session => return,
        done = preauth => (!matches!(done, Ok(true))).then_some("preauth_deadline"),
        _ = evicted.cancelled(), if *stage.borrow() == Stage::Connected => Some("preauth_evicted"),
    };
    let refusal = match refusal {
        Some(r) => Some(r),
        None => {
            let forwarding = reached(&stage, Stage::Forwarding);
            let forward = tokio::time::timeout(limits.ssh_forward_timeout(), forwarding);
            tokio::select! {
                _ = &mut session => return,
                done = forward => (!matches!(done, Ok(true))).then_some("forward_deadline"),
            }
        }
    };
    if let Some(reason) = refusal {
        if reason != "preauth_evicted" {
            core.metrics.ssh_closed.with_label_values(&[reason]).inc();
        }
        tracing::debug!(
            reason,
            "closing an ssh connection that did not get that far"
        );
        if let Some(handle) = running.get() {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, reason.into(), "en".into())
                .await;
        }
        return; // dropping the session before the key exchange closes the socket
    }
    session.await;
}
