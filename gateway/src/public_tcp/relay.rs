//! One accepted public TCP connection: a data stream to the agent's service, spliced both
//! ways (the socket counts the bytes as they flow), then its audit line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use g2c_proto::peer::Dial;
use g2c_proto::tap::{Tap, TapObserver};
use g2c_proto::StreamHeader;
use prometheus::IntCounter;
use tokio::net::TcpStream;

use super::tune_socket;
use crate::core::audit::{rfc3339, AuditRecord};
use crate::core::metrics::GaugeGuard;
use crate::core::registry::AgentSession;
use crate::core::remote::Remote;
use crate::core::Core;
use crate::error::RequestError;

/// The tunnel a connection goes through.
pub(super) enum Via {
    /// This node's session.
    Local(Arc<AgentSession>),
    /// Another node's, over the peer link (`registration`'s).
    Remote(Arc<dyn Remote>, String),
}

impl Via {
    fn registration(&self) -> &str {
        match self {
            Via::Local(s) => &s.registration_id,
            Via::Remote(_, reg) => reg,
        }
    }
}

/// One accepted public TCP connection.
pub(super) struct Conn {
    pub(super) core: Arc<Core>,
    pub(super) service: String,
    pub(super) peer: SocketAddr,
    pub(super) port: u16,
    pub(super) id: u64,
}

impl Conn {
    /// Splice the connection through a new data stream, then write its audit line.
    pub(super) async fn relay(self, via: Via, tcp: TcpStream) {
        let started = Instant::now();
        let reg = via.registration();
        let m = &self.core.metrics;
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
        let error = splice(
            &self.core,
            &via,
            &self.service,
            &mut counted,
            self.peer,
            self.id,
        )
        .await
        .err();
        let (up, down) = (counted.observer().n_read, counted.observer().n_written);
        if self.core.audit.enabled() {
            let request_id = format!("tcp-{}", self.id);
            let caller = self.peer.to_string();
            self.core.audit.record(&AuditRecord {
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
                caller_request_id: None,
            });
        }
        tracing::debug!(port = self.port, up, down, ?error, "TCP connection closed");
    }
}

/// Open a stream for `service`, then copy both ways (the socket counts the bytes). Fails with
/// an error code when the tunnel, the agent or the local service refused.
async fn splice(
    core: &Core,
    via: &Via,
    service: &str,
    tcp: &mut Tap<TcpStream, Counters>,
    peer: SocketAddr,
    id: u64,
) -> Result<(), &'static str> {
    tune_socket(tcp.get_ref());
    let request_id = format!("tcp-{id}");
    let (opened, _peer) = match via {
        Via::Local(session) => {
            let header = StreamHeader::new(service, request_id, peer.to_string());
            (session.link.open(&header).await, None)
        }
        Via::Remote(remote, reg) => {
            let dial = Dial::new(
                reg.as_str(),
                Some(service.to_owned()),
                request_id,
                peer.to_string(),
            );
            let gauge = core.metrics.peer_streams_open.with_label_values(&["out"]);
            (
                remote
                    .open(dial)
                    .await
                    .map(tokio_util::either::Either::Left),
                Some(GaugeGuard::new(gauge)),
            )
        }
    };
    let mut stream = opened.map_err(|e| {
        tracing::info!(error = %e, "TCP stream refused");
        RequestError::from_open(e, via.registration(), service).code()
    })?;
    if let Err(e) = g2c_proto::copy::copy_both_ways(tcp, &mut stream).await {
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

    fn wrote(&mut self, bytes: &[u8]) {
        self.written.inc_by(bytes.len() as u64);
        self.n_written += bytes.len() as u64;
    }
}
