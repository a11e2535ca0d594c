//! Upstream HTTP/1.1 connections to an agent's local app, each one a data stream through the
//! tunnel, pooled per agent session (keep-alive), so a busy tunnel does not pay a stream open
//! and an agent round trip per request.
//!
//! A pool belongs to one session: when a session is replaced its successor gets a fresh pool,
//! and the old idle connections die with the old tunnel. A connection goes back to its pool
//! when the app's response body has been read to its end (an upgraded or cut one never does).

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::core::link::TunnelStream;
use bytes::Bytes;
use dashmap::DashMap;
use g2c_proto::peer::Dial;
use g2c_proto::StreamHeader;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::CallerBody;
use crate::core::metrics::GaugeGuard;
use crate::core::registry::AgentSession;
use crate::core::remote::Remote;
use crate::core::Core;
use crate::error::RequestError;

/// How long a connection handed back at the end of a response may take to be ready again.
const READY_WAIT: Duration = Duration::from_millis(50);

/// Every session's pool, by registration.
pub struct Pools {
    by_registration: DashMap<String, Arc<Pool>>,
    max_idle: usize,
}

/// The idle connections of one session, each to one of its HTTP services (an agent has a
/// handful, so a scan beats a map).
pub struct Pool {
    session: u64,
    idle: Mutex<Vec<(String, SendRequest<CallerBody>)>>,
    max_idle: usize,
}

impl Pools {
    /// Pools keeping at most `max_idle` idle connections per session.
    pub fn new(max_idle: usize) -> Self {
        Self {
            by_registration: DashMap::new(),
            max_idle,
        }
    }

    /// The pool of `session` (a fresh one when the registration's session changed).
    pub fn get(&self, session: &AgentSession) -> Arc<Pool> {
        if let Some(p) = self.by_registration.get(&session.registration_id) {
            if p.session == session.id {
                return p.clone();
            }
        }
        let pool = Arc::new(Pool {
            session: session.id,
            idle: Mutex::new(Vec::new()),
            max_idle: self.max_idle,
        });
        self.by_registration
            .insert(session.registration_id.clone(), pool.clone());
        pool
    }

    /// Drop the pool of a session that ended.
    pub fn forget(&self, registration: &str, session: u64) {
        self.by_registration
            .remove_if(registration, |_, p| p.session == session);
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, SendRequest<CallerBody>)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `service` that is ready for a request, if there is one.
    async fn checkout(&self, service: &str) -> Option<SendRequest<CallerBody>> {
        loop {
            let mut sender = {
                let mut idle = self.lock();
                let i = idle.iter().rposition(|(s, _)| s == service)?;
                idle.swap_remove(i).1
            };
            if sender.is_ready() {
                return Some(sender);
            }
            if !sender.is_closed()
                && matches!(
                    tokio::time::timeout(READY_WAIT, sender.ready()).await,
                    Ok(Ok(()))
                )
            {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, service: String, sender: SendRequest<CallerBody>) {
        let mut idle = self.lock();
        if idle.len() < self.max_idle && !sender.is_closed() {
            idle.push((service, sender));
        }
    }
}

/// A request sent upstream: the app's response, and the connection that carried it (hand it
/// back with [`PooledBody`] unless the connection was upgraded).
pub struct Sent {
    /// The app's response.
    pub response: Response<Incoming>,
    /// The connection it came on.
    pub sender: SendRequest<CallerBody>,
}

/// Why a request could not be sent.
pub enum SendError {
    /// No connection to the app could be had (tunnel, agent or app refused).
    Connect(RequestError),
    /// The connection failed while the request was under way.
    Http(hyper::Error),
}

/// Send `req` to `service` on an idle connection of `pool`, or on a new one. A pooled
/// connection that closed before it took the request is retried once on a fresh one.
pub async fn send(
    core: &Core,
    pool: &Pool,
    session: &AgentSession,
    service: &str,
    mut req: Request<CallerBody>,
) -> Result<Sent, SendError> {
    loop {
        let (mut sender, pooled) = match pool.checkout(service).await {
            Some(s) => (s, true),
            None => (
                connect(core, session, service)
                    .await
                    .map_err(SendError::Connect)?,
                false,
            ),
        };
        match sender.try_send_request(req).await {
            Ok(response) => return Ok(Sent { response, sender }),
            Err(mut e) => match e.take_message() {
                Some(unsent) if pooled => req = unsent,
                _ => return Err(SendError::Http(e.into_error())),
            },
        }
    }
}

/// Send `req` once through a node that holds the registration's tunnel, on a fresh stream of
/// the peer link (not pooled: a stream through another node must end with its request, so
/// that node's drain can finish and a holder that went is never reused).
pub async fn send_remote(
    core: &Core,
    remote: &dyn Remote,
    registration: &str,
    service: Option<&str>,
    caller: std::net::SocketAddr,
    req: Request<CallerBody>,
) -> Result<Sent, SendError> {
    let dial = Dial::new(
        registration,
        service.map(str::to_owned),
        "fwd",
        caller.to_string(),
    );
    let stream = remote.open(dial).await.map_err(|e| {
        SendError::Connect(RequestError::from_open(
            e,
            registration,
            service.unwrap_or("http"),
        ))
    })?;
    let open = (
        GaugeGuard::new(
            core.metrics
                .active_streams
                .with_label_values(&[registration]),
        ),
        GaugeGuard::new(core.metrics.peer_streams_open.with_label_values(&["out"])),
    );
    let io = TunnelIo {
        stream: tokio_util::either::Either::Left(stream),
        _open: open.0,
        _peer: Some(open.1),
    };
    let mut sender = handshake(core, None, io, registration, "http")
        .await
        .map_err(SendError::Connect)?;
    match sender.try_send_request(req).await {
        Ok(response) => Ok(Sent { response, sender }),
        Err(e) => Err(SendError::Http(e.into_error())),
    }
}

/// Open a data stream to the session's HTTP `service` and start HTTP/1.1 on it.
async fn connect(
    core: &Core,
    session: &AgentSession,
    service: &str,
) -> Result<SendRequest<CallerBody>, RequestError> {
    let reg = session.registration_id.as_str();
    let header = StreamHeader::new(service, format!("pool-{}", session.id), "gateway".into());
    let stream = session
        .link
        .open(&header)
        .await
        .map_err(|e| RequestError::from_open(e, reg, service))?;
    let io = TunnelIo {
        stream,
        _open: GaugeGuard::new(core.metrics.active_streams.with_label_values(&[reg])),
        _peer: None,
    };
    handshake(core, Some(&session.runtime), io, reg, service).await
}

/// Start HTTP/1.1 on a data stream, its connection driven by a task of the gateway: on
/// `runtime` (the tunnel's worker) when given, else on the current one.
async fn handshake(
    core: &Core,
    runtime: Option<&tokio::runtime::Handle>,
    io: TunnelIo,
    reg: &str,
    service: &str,
) -> Result<SendRequest<CallerBody>, RequestError> {
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| RequestError::LocalServiceUnavailable {
            registration: reg.to_owned(),
            service: service.to_owned(),
            detail: format!("HTTP/1.1 handshake on the data stream failed: {e}"),
        })?;
    let span = tracing::debug_span!("upstream", registration = reg);
    let drive = async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    };
    match runtime {
        Some(runtime) => core.spawn_on(runtime, span, drive),
        None => core.spawn(span, drive),
    }
    Ok(sender)
}

/// Where a connection goes back to: its pool, under its service.
pub struct Return<'a> {
    /// The connection.
    pub sender: SendRequest<CallerBody>,
    /// Its pool.
    pub pool: &'a Arc<Pool>,
    /// The service it is connected to.
    pub service: String,
}

/// The app's response body; hands its connection back to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    back: Option<(SendRequest<CallerBody>, Weak<Pool>, String)>,
    ended: bool,
}

impl PooledBody {
    /// Wrap `inner`; `back` is where the connection returns, `None` for one not to reuse.
    pub fn new(inner: Incoming, back: Option<Return<'_>>) -> Self {
        Self {
            inner,
            back: back.map(|r| (r.sender, Arc::downgrade(r.pool), r.service)),
            ended: false,
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if !(self.ended || self.inner.is_end_stream()) {
            return; // cut short: the connection cannot be reused
        }
        if let Some((sender, pool, service)) = self.back.take() {
            if let Some(pool) = pool.upgrade() {
                pool.checkin(service, sender);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A data stream as an upstream connection, counted in `g2c_active_streams` (and, through
/// another node, in `g2c_peer_streams_open`) while it lives.
struct TunnelIo {
    stream: TunnelStream,
    _open: GaugeGuard,
    _peer: Option<GaugeGuard>,
}

impl AsyncRead for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
