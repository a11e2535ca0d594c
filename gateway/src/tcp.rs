//! Public TCP ports for agents' TCP services (MySQL and any other protocol).
//!
//! Each TCP service of a registration has a stable port from the store. The port listens only
//! while the registration has a live tunnel and only if the service has a CIDR allowlist (fail
//! closed). A connection from outside the allowlist is closed at once and counted; an allowed
//! one becomes one data stream, spliced both ways with half-close preserved, `TCP_NODELAY` and
//! keepalive on, and no idle timeout (pooled database connections idle for hours).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use g2c_proto::frame::{read_frame, write_frame};
use g2c_proto::mux::Mux;
use g2c_proto::{tuning, Ack, ServiceKind, StreamHeader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::registry::AgentSession;
use crate::store::PortRange;
use crate::Shared;

/// Open public TCP listeners, by `(registration, service)`.
#[derive(Default)]
pub struct TcpPorts {
    open: DashMap<(String, String), (u16, CancellationToken)>,
    next_conn: AtomicU64,
}

impl TcpPorts {
    /// Stop every listener of `registration`.
    pub fn close_registration(&self, registration: &str) {
        self.open.retain(|(reg, service), (port, token)| {
            if reg == registration {
                tracing::info!(registration = %reg, %service, port = *port, "closing public TCP port");
                token.cancel();
                false
            } else {
                true
            }
        });
    }

    /// Stop everything (shutdown).
    pub fn close_all(&self) {
        for entry in self.open.iter() {
            entry.value().1.cancel();
        }
        self.open.clear();
    }

    /// Ports currently listening, for admin views and tests.
    pub fn listening(&self, registration: &str) -> Vec<(String, u16)> {
        self.open
            .iter()
            .filter(|e| e.key().0 == registration)
            .map(|e| (e.key().1.clone(), e.value().0))
            .collect()
    }
}

/// Set TCP keepalive (and nodelay) on a socket leg.
pub fn tune_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
}

/// Open the public ports for a newly connected session's TCP services.
pub async fn open_for_session(shared: &Arc<Shared>, session: &AgentSession) {
    let range = PortRange {
        start: shared.config.limits.port_range_start,
        end: shared.config.limits.port_range_end,
    };
    for svc in session
        .services
        .iter()
        .filter(|s| s.kind == ServiceKind::Tcp)
    {
        let info = match shared
            .store
            .tcp_service(&session.registration_id, &svc.name, range)
            .await
        {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(service = %svc.name, error = %e, "no public port for TCP service");
                continue;
            }
        };
        if info.allow.is_empty() {
            tracing::warn!(service = %svc.name, port = info.port, "TCP service not exposed: no CIDR allowlist configured (fail closed)");
            continue;
        }
        let key = (session.registration_id.clone(), svc.name.clone());
        if shared
            .tcp
            .open
            .get(&key)
            .is_some_and(|e| e.value().0 == info.port)
        {
            continue;
        }
        let addr = SocketAddr::new(shared.config.tcp.bind, info.port);
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(service = %svc.name, %addr, error = %e, "cannot bind public TCP port");
                continue;
            }
        };
        let token = CancellationToken::new();
        if let Some((_, (_, old))) = shared.tcp.open.remove(&key) {
            old.cancel();
        }
        shared
            .tcp
            .open
            .insert(key.clone(), (info.port, token.clone()));
        tracing::info!(service = %svc.name, port = info.port, allow = ?info.allow, "public TCP port open");
        let span =
            tracing::info_span!("tcp", registration = %key.0, service = %key.1, port = info.port);
        tokio::spawn(accept_loop(shared.clone(), listener, key.0, key.1, token).instrument(span));
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    registration: String,
    service: String,
    stop: CancellationToken,
) {
    while let Some((tcp, peer)) = crate::accept::next(&listener, &stop, "tcp").await {
        if !shared
            .auth
            .snapshot()
            .tcp_allowed(&registration, &service, peer.ip())
        {
            shared.metrics.tcp_refused.inc();
            tracing::info!(%peer, "TCP connection refused: source not in the allowlist");
            drop(tcp);
            continue;
        }
        let Some(session) = shared.registry.get(&registration) else {
            drop(tcp);
            continue;
        };
        shared.metrics.tcp_accepted.inc();
        let id = shared.tcp.next_conn.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("conn", %peer, id);
        tokio::spawn(relay(session, service.clone(), tcp, peer, id).instrument(span));
    }
}

async fn relay(
    session: Arc<AgentSession>,
    service: String,
    mut tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
) {
    tune_socket(&tcp);
    let Ok(mut stream) = session.mux.open().await else {
        return;
    };
    let header = StreamHeader::new(service, format!("tcp-{id}"), peer.to_string());
    let ack = tokio::time::timeout(tuning::STREAM_ACK_TIMEOUT, async {
        write_frame(&mut stream, &header).await?;
        read_frame::<Ack, _>(&mut stream).await
    })
    .await;
    match ack {
        Ok(Ok(Some(Ack::Ok))) => {}
        other => {
            tracing::info!(?other, "agent refused the TCP stream");
            return;
        }
    }
    match tokio::io::copy_bidirectional_with_sizes(
        &mut tcp,
        &mut stream,
        tuning::SPLICE_BUFFER,
        tuning::SPLICE_BUFFER,
    )
    .await
    {
        Ok((up, down)) => tracing::debug!(up, down, "TCP connection closed"),
        Err(e) => tracing::debug!(error = %e, "TCP connection ended with an error"),
    }
}
