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
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use g2c_proto::frame::{read_frame, write_frame};
use g2c_proto::mux::Mux;
use g2c_proto::tap::{Tap, TapObserver};
use g2c_proto::{tuning, Ack, ServiceKind, StreamHeader};
use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audit::{rfc3339, AuditRecord};
use crate::metrics::GaugeGuard;
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
    let labels = [registration.as_str(), service.as_str()];
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    while let Some((tcp, peer)) = crate::accept::next(&listener, &stop, "tcp").await {
        if !shared
            .auth
            .snapshot()
            .tcp_allowed(&registration, &service, peer.ip())
        {
            shared.metrics.tcp_refused.with_label_values(&labels).inc();
            tracing::info!(%peer, "TCP connection refused: source not in the allowlist");
            drop(tcp);
            continue;
        }
        let Some(session) = shared.registry.get(&registration) else {
            drop(tcp);
            continue;
        };
        shared.metrics.tcp_accepted.with_label_values(&labels).inc();
        let id = shared.tcp.next_conn.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("conn", %peer, id);
        let conn = Conn {
            shared: shared.clone(),
            service: service.clone(),
            peer,
            port,
            id,
        };
        tokio::spawn(conn.relay(session, tcp).instrument(span));
    }
}

/// One accepted public TCP connection.
struct Conn {
    shared: Arc<Shared>,
    service: String,
    peer: SocketAddr,
    port: u16,
    id: u64,
}

impl Conn {
    /// Splice the connection through a new data stream, then write its audit line.
    async fn relay(self, session: Arc<AgentSession>, tcp: TcpStream) {
        let started = Instant::now();
        let reg = session.registration_id.as_str();
        let m = &self.shared.metrics;
        let _active = (
            GaugeGuard::new(m.tcp_active.with_label_values(&[reg, &self.service])),
            GaugeGuard::new(m.active_streams.with_label_values(&[reg])),
        );
        let counters = Counters {
            read: m.bytes.with_label_values(&[reg, "tcp", "in"]),
            written: m.bytes.with_label_values(&[reg, "tcp", "out"]),
            n_read: 0,
            n_written: 0,
        };
        let mut counted = Tap::new(tcp, counters);
        let error = splice(&session, &self.service, &mut counted, self.peer, self.id)
            .await
            .err();
        let (up, down) = (counted.observer().n_read, counted.observer().n_written);
        if self.shared.audit.enabled() {
            let request_id = format!("tcp-{}", self.id);
            let caller = self.peer.to_string();
            self.shared.audit.record(&AuditRecord {
                time: rfc3339(SystemTime::now()),
                kind: "tcp",
                registration: Some(reg),
                key_id: None,
                caller,
                method: None,
                path: None,
                service: Some(&self.service),
                status: None,
                bytes_in: up,
                bytes_out: down,
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                error,
                request_id: &request_id,
            });
        }
        tracing::debug!(port = self.port, up, down, ?error, "TCP connection closed");
    }
}

/// Open a stream for `service`, then copy both ways (the socket counts the bytes). Fails with
/// an error code when the agent or the local service refused.
async fn splice(
    session: &AgentSession,
    service: &str,
    tcp: &mut Tap<TcpStream, Counters>,
    peer: SocketAddr,
    id: u64,
) -> Result<(), &'static str> {
    tune_socket(tcp.get_ref());
    let mut stream = match session.mux.open().await {
        Ok(s) => s,
        Err(g2c_proto::mux::MuxError::TooManyStreams) => {
            return Err(g2c_proto::error_code::OVERLOADED)
        }
        Err(_) => return Err(g2c_proto::error_code::AGENT_OFFLINE),
    };
    let header = StreamHeader::new(service, format!("tcp-{id}"), peer.to_string());
    let ack = tokio::time::timeout(tuning::STREAM_ACK_TIMEOUT, async {
        write_frame(&mut stream, &header).await?;
        read_frame::<Ack, _>(&mut stream).await
    })
    .await;
    match ack {
        Ok(Ok(Some(Ack::Ok))) => {}
        Ok(Ok(Some(Ack::Error { .. }))) => {
            tracing::info!(?ack, "agent refused the TCP stream");
            return Err(g2c_proto::error_code::LOCAL_SERVICE_UNAVAILABLE);
        }
        Err(_) => return Err(g2c_proto::error_code::UPSTREAM_TIMEOUT),
        other => {
            tracing::info!(?other, "TCP stream failed before the agent answered");
            return Err(g2c_proto::error_code::AGENT_OFFLINE);
        }
    }
    if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
        tcp,
        &mut stream,
        tuning::SPLICE_BUFFER,
        tuning::SPLICE_BUFFER,
    )
    .await
    {
        tracing::debug!(error = %e, "TCP connection ended with an error");
    }
    Ok(())
}

/// Adds a connection's bytes to two metric counters as they flow (a pooled database connection
/// may live for days; its traffic must show before it closes), and keeps the connection's own
/// totals for its audit line.
struct Counters {
    read: IntCounter,
    written: IntCounter,
    n_read: u64,
    n_written: u64,
}

impl TapObserver for Counters {
    fn read(&mut self, bytes: &[u8]) {
        self.read.inc_by(bytes.len() as u64);
        self.n_read += bytes.len() as u64;
    }

    fn wrote(&mut self, n: usize) {
        self.written.inc_by(n as u64);
        self.n_written += n as u64;
    }
}
