//! The public TCP wing: ports for agents' TCP services (MySQL and any other protocol).
//!
//! Each TCP service of a registration has a stable port from the store. The port listens only
//! while the registration has a live tunnel and only if the service has a CIDR allowlist (fail
//! closed). A connection from outside the allowlist is closed at once and counted; an allowed
//! one becomes one data stream, spliced both ways with half-close preserved, `TCP_NODELAY` and
//! keepalive on, and no idle timeout (pooled database connections idle for hours).
//!
//! The wing follows the registry's session events and the credential cache's changes (an
//! allowlist set for a connected agent opens its port); nothing calls into it. In a cluster
//! the ports of a registration whose tunnel another node holds listen here too (the
//! connection crosses the peer link), so a TCP load balancer may send a caller to any node.

mod relay;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use dashmap::DashMap;
use g2c_proto::{ServiceDecl, ServiceKind};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::core::registry::SessionEvent;
use crate::core::remote::Remote;
use crate::core::Core;
use crate::shutdown::Phase;
use relay::{Conn, Via};

/// The public TCP wing: its open listeners, by `(registration, service)`.
pub struct PublicTcp {
    core: Arc<Core>,
    remote: Option<Arc<dyn Remote>>,
    open: DashMap<(String, String), (u16, CancellationToken)>,
    next_conn: AtomicU64,
}

impl PublicTcp {
    /// Start following `core`'s sessions and credentials (and, in a cluster, the tunnels
    /// other nodes hold, through `remote`).
    pub fn start(core: Arc<Core>, remote: Option<Arc<dyn Remote>>) -> Arc<Self> {
        let wing = Arc::new(Self {
            core: core.clone(),
            remote,
            open: DashMap::new(),
            next_conn: AtomicU64::new(0),
        });
        let follow = follow(
            wing.clone(),
            core.registry.subscribe(),
            core.auth.subscribe(),
        );
        core.spawn(tracing::info_span!("public_tcp"), follow);
        wing
    }

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

/// Open a session's ports when it comes up, close a registration's when its last session
/// went, re-check every session when credentials changed; close everything when the gateway
/// starts going away.
async fn follow(
    wing: Arc<PublicTcp>,
    mut events: mpsc::UnboundedReceiver<SessionEvent>,
    mut credentials: watch::Receiver<i64>,
) {
    let core = wing.core.clone();
    let going_away = core.shutdown.reached(Phase::GoingAway);
    tokio::pin!(going_away);
    let mut remote_tick = tokio::time::interval(REMOTE_CHECK);
    remote_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(SessionEvent::Up(session)) => {
                    open_ports(&wing, &session.registration_id, Some(&session.services)).await
                }
                Some(SessionEvent::Down { registration, .. }) => {
                    if !wing.held_anywhere(&registration) {
                        wing.close_registration(&registration);
                    }
                }
                None => return,
            },
            Ok(()) = credentials.changed() => {
                for session in core.registry.all() {
                    open_ports(&wing, &session.registration_id, Some(&session.services)).await;
                }
                follow_remote(&wing).await;
            }
            _ = remote_tick.tick(), if wing.remote.is_some() => follow_remote(&wing).await,
            _ = &mut going_away => {
                wing.close_all();
                return;
            }
        }
    }
}

/// How often a cluster node looks again at which registrations other nodes hold.
const REMOTE_CHECK: Duration = Duration::from_secs(1);

impl PublicTcp {
    /// Whether this node or (as it last heard) another holds `registration`'s tunnel.
    fn held_anywhere(&self, registration: &str) -> bool {
        self.core.registry.get(registration).is_some()
            || self.remote.as_ref().is_some_and(|r| r.holds(registration))
    }
}

/// Open the ports of registrations other nodes hold; close those nobody holds any more.
async fn follow_remote(wing: &Arc<PublicTcp>) {
    let Some(remote) = &wing.remote else { return };
    for reg in remote.held() {
        if wing.core.registry.get(&reg).is_none() {
            open_ports(wing, &reg, None).await;
        }
    }
    let gone: Vec<String> = wing
        .open
        .iter()
        .map(|e| e.key().0.clone())
        .filter(|reg| !wing.held_anywhere(reg))
        .collect();
    for reg in gone {
        wing.close_registration(&reg);
    }
}

/// Open the public ports of a registration's TCP services: those its agent announced here
/// (`announced`), or, for a tunnel on another node, every one the operator opened. Only ports
/// the operator opened (`registration allow`) exist: announcing a service allocates nothing.
async fn open_ports(wing: &Arc<PublicTcp>, registration: &str, announced: Option<&[ServiceDecl]>) {
    let core = &wing.core;
    let opened = match core.store.tcp_services(Some(registration)).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the registration's TCP services");
            return;
        }
    };
    let names: Vec<String> = match announced {
        Some(decls) => decls
            .iter()
            .filter(|s| s.kind == ServiceKind::Tcp)
            .map(|s| s.name.clone())
            .collect(),
        None => opened.iter().map(|t| t.service.clone()).collect(),
    };
    for name in names {
        let Some(info) = opened.iter().find(|t| t.service == name) else {
            tracing::info!(service = %name, "TCP service not exposed: the operator has not opened it (registration allow)");
            continue;
        };
        if info.allow.is_empty() {
            tracing::warn!(service = %name, port = info.port, "TCP service not exposed: no CIDR allowlist configured (fail closed)");
            continue;
        }
        let key = (registration.to_owned(), name.clone());
        if wing
            .open
            .get(&key)
            .is_some_and(|e| e.value().0 == info.port)
        {
            continue;
        }
        let addr = SocketAddr::new(core.config.tcp.bind, info.port);
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(service = %name, %addr, error = %e, "cannot bind public TCP port");
                continue;
            }
        };
        let token = CancellationToken::new();
        if let Some((_, (_, old))) = wing.open.remove(&key) {
            old.cancel();
        }
        wing.open.insert(key.clone(), (info.port, token.clone()));
        tracing::info!(service = %name, port = info.port, allow = ?info.allow, "public TCP port open");
        let span =
            tracing::info_span!("tcp", registration = %key.0, service = %key.1, port = info.port);
        core.spawn(
            span,
            accept_loop(wing.clone(), listener, key.0, key.1, token),
        );
    }
}

async fn accept_loop(
    wing: Arc<PublicTcp>,
    listener: TcpListener,
    registration: String,
    service: String,
    stop: CancellationToken,
) {
    let core = &wing.core;
    let labels = [registration.as_str(), service.as_str()];
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    while let Some((tcp, peer)) = crate::accept::next(&listener, stop.cancelled(), "tcp").await {
        if !core
            .auth
            .snapshot()
            .tcp_allowed(&registration, &service, peer.ip())
        {
            core.metrics.tcp_refused.with_label_values(&labels).inc();
            tracing::info!(%peer, "TCP connection refused: source not in the allowlist");
            drop(tcp);
            continue;
        }
        let via = match (core.registry.get(&registration), &wing.remote) {
            (Some(session), _) => Via::Local(session),
            (None, Some(remote)) if remote.holds(&registration) => {
                Via::Remote(remote.clone(), registration.clone())
            }
            _ => {
                drop(tcp);
                continue;
            }
        };
        core.metrics.tcp_accepted.with_label_values(&labels).inc();
        let id = wing.next_conn.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("conn", %peer, id);
        let conn = Conn {
            core: core.clone(),
            service: service.clone(),
            peer,
            port,
            id,
        };
        match &via {
            // Served on the tunnel's worker, its socket moved there ([`crate::workers`]).
            Via::Local(session) => {
                let runtime = session.runtime.clone();
                crate::workers::spawn_connection_on(&runtime, core.tasks(), tcp, move |tcp| {
                    conn.relay(via, tcp).instrument(span)
                });
            }
            Via::Remote(..) => core.spawn(span, conn.relay(via, tcp)),
        }
    }
}
