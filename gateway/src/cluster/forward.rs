//! The dialling half of the peer link: one multiplexed TLS connection per peer node, made on
//! first use and again after it broke, and [`Forwarder::open`], which reaches a registration's
//! tunnel through the nodes that hold it: each holder in turn until one takes the stream or
//! answers finally. Holders that answered "draining" are asked again last, with leave to take
//! it anyway; a peer whose link just failed is tried after the others for a while.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::future::BoxFuture;
use g2c_proto::handshake::OpenError;
use g2c_proto::mux::{self, Mode, Mux, MuxError, MuxHandle, MuxStream};
use g2c_proto::peer::{self, Dial, DialError};
use g2c_proto::tuning;
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::peer_tls::PeerTls;
use super::presence::{Holder, Presence};
use crate::core::metrics::Metrics;
use crate::core::remote::Remote;

/// Longest a connection to a peer (TCP and TLS) may take; a hung peer costs no more.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a holder may take to answer a dial (it opens a stream to its agent meanwhile).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer whose link failed is tried only after the others: longer than a node's
/// lease (6 s) and the presence poll after it, so a hung node is asked at most once before its
/// holdings leave the picture.
const PENALTY: Duration = Duration::from_secs(10);
/// Most streams open at once on one peer link, each way.
const PEER_STREAMS: usize = 1024;

/// One peer's link.
#[derive(Default)]
struct Link {
    conn: tokio::sync::Mutex<Option<MuxHandle>>,
    failed_at: Mutex<Option<Instant>>,
}

impl Link {
    fn penalised(&self) -> bool {
        self.failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < PENALTY)
    }

    fn failed(&self) {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the link failed after `since` (while a caller waited for its turn to connect).
    fn failed_since(&self, since: Instant) -> bool {
        self.failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t > since)
    }
}

/// The links to every peer, by peer address.
pub struct Forwarder {
    presence: Arc<Presence>,
    tls: PeerTls,
    links: DashMap<String, Arc<Link>>,
    metrics: Metrics,
}

impl Forwarder {
    /// Links on `tls` to the holders `presence` knows of.
    pub fn new(presence: Arc<Presence>, tls: PeerTls, metrics: Metrics) -> Self {
        Self {
            presence,
            tls,
            links: DashMap::new(),
            metrics,
        }
    }

    fn link(&self, addr: &str) -> Arc<Link> {
        if let Some(l) = self.links.get(addr) {
            return l.clone();
        }
        self.links.entry(addr.to_owned()).or_default().clone()
    }

    /// The live connection to `addr`, made now if there is none.
    /// Callers queued behind a connect that failed give up at once rather than each paying
    /// the connect timeout in turn.
    async fn handle(&self, link: &Link, addr: &str) -> Result<MuxHandle, &'static str> {
        let asked = Instant::now();
        let mut conn = link.conn.lock().await;
        if let Some(h) = conn.as_ref().filter(|h| !h.is_closed()) {
            return Ok(h.clone());
        }
        if link.failed_since(asked) {
            return Err("connect");
        }
        *conn = None;
        let made = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(addr))
            .await
            .unwrap_or(Err("connect"));
        match made {
            Ok(h) => {
                tracing::info!(peer = addr, "peer link up");
                *conn = Some(h.clone());
                Ok(h)
            }
            Err(reason) => {
                link.failed(); // before the lock is let go: the callers queued behind see it
                self.metrics
                    .peer_link_failures
                    .with_label_values(&[reason])
                    .inc();
                Err(reason)
            }
        }
    }

    async fn connect(&self, addr: &str) -> Result<MuxHandle, &'static str> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|_| "connect")?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connector
            .connect(self.tls.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                tracing::warn!(peer = addr, error = %e, "peer link TLS failed");
                "tls"
            })?;
        let (handle, _inbound) = mux::spawn_limited(
            tls.compat(),
            Mode::Client,
            PEER_STREAMS,
            tuning::YAMUX_WINDOW_HEADROOM,
        );
        Ok(handle)
    }

    /// One holder: a stream with its dial answered, or why not.
    async fn try_holder(&self, holder: &Holder, dial: &Dial) -> Result<MuxStream, DialError> {
        let link = self.link(&holder.addr);
        let handle = match self.handle(&link, &holder.addr).await {
            Ok(h) => h,
            Err(_) => {
                return Err(DialError::Broken("no link to the peer"));
            }
        };
        let mut stream = match handle.open().await {
            Ok(s) => s,
            Err(MuxError::TooManyStreams) => return Err(DialError::Broken("peer link full")),
            Err(_) => {
                link.failed();
                return Err(DialError::Broken("peer link closed"));
            }
        };
        match peer::dial(&mut stream, dial, ANSWER_TIMEOUT).await {
            Ok(()) => Ok(stream),
            Err(e @ DialError::Broken(_)) => {
                // A hung or broken peer: the next request makes a fresh link.
                link.failed();
                handle.close();
                self.metrics
                    .peer_link_failures
                    .with_label_values(&["closed"])
                    .inc();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn open_through(&self, mut dial: Dial) -> Result<MuxStream, OpenError> {
        let mut holders = self.presence.holders(&dial.registration);
        holders.sort_by_key(|h| self.link(&h.addr).penalised());
        let mut draining = Vec::new();
        let count = |outcome: &str| {
            self.metrics
                .peer_forwarded
                .with_label_values(&[outcome])
                .inc()
        };
        for pass in 0..2 {
            let round = if pass == 0 {
                std::mem::take(&mut holders)
            } else {
                dial.even_if_draining = true;
                std::mem::take(&mut draining)
            };
            for holder in &round {
                match self.try_holder(holder, &dial).await {
                    Ok(stream) => {
                        count("ok");
                        return Ok(stream);
                    }
                    Err(DialError::Open(e)) => {
                        count("refused");
                        return Err(e);
                    }
                    Err(DialError::Draining) => draining.push(holder.clone()),
                    Err(e) => {
                        tracing::debug!(peer = %holder.node, error = %e, "trying the next holder");
                    }
                }
            }
        }
        count("unreachable");
        Err(OpenError::TunnelClosed)
    }
}

impl Remote for Forwarder {
    fn holds(&self, registration: &str) -> bool {
        self.presence.holds(registration)
    }

    fn held(&self) -> Vec<String> {
        self.presence.held()
    }

    fn open(&self, dial: Dial) -> BoxFuture<'_, Result<MuxStream, OpenError>> {
        Box::pin(self.open_through(dial))
    }
}
