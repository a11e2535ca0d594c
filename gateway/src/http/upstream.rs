//! Upstream HTTP/1.1 connections to an agent's local app, each one a yamux stream, pooled per
//! agent session by hyper-util's client (keep-alive), so a busy tunnel does not pay a stream open
//! and an agent round trip per request.
//!
//! The pool key is `<registration>--<session id>`: when a session is replaced, its successor gets
//! a fresh pool and the old idle connections die with the old tunnel.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use g2c_proto::frame::{read_frame, write_frame};
use g2c_proto::mux::{Mux, MuxError, MuxStream};
use g2c_proto::{tuning, Ack, StreamHeader};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::CallerBody;
use crate::metrics::{GaugeGuard, Metrics};
use crate::registry::Registry;

/// Why a connection to the local app could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No live session (or it was replaced, or the tunnel broke while opening).
    #[error("agent offline")]
    AgentOffline,
    /// The agent could not reach the local service.
    #[error("{0}")]
    LocalUnavailable(String),
    /// The agent did not acknowledge the stream in time.
    #[error("agent did not answer the stream header in time")]
    Timeout,
    /// The tunnel is up but has no stream to spare (`limits.max_streams_per_tunnel`).
    #[error("the tunnel has no free stream")]
    TooManyStreams,
}

/// The pooled client type.
pub type UpstreamClient = Client<TunnelConnector, CallerBody>;

/// Authority used in upstream URIs (and as pool key) for a session.
pub fn authority(registration: &str, session_id: u64) -> String {
    format!("{registration}--{session_id}")
}

/// Build the pooled client.
pub fn client(registry: Arc<Registry>, idle_per_agent: usize, metrics: Metrics) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(idle_per_agent)
        .set_host(false)
        .http1_preserve_header_case(false)
        .build(TunnelConnector { registry, metrics })
}

/// Opens a yamux stream to the agent and performs the header/ack exchange.
#[derive(Clone)]
pub struct TunnelConnector {
    registry: Arc<Registry>,
    metrics: Metrics,
}

impl tower::Service<Uri> for TunnelConnector {
    type Response = TokioIo<TunnelIo>;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<Self::Response, UpstreamError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let registry = self.registry.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let (registration, session_id) = host
                .rsplit_once("--")
                .and_then(|(r, s)| Some((r, s.parse::<u64>().ok()?)))
                .ok_or(UpstreamError::AgentOffline)?;
            let session = registry
                .get(registration)
                .filter(|s| s.id == session_id)
                .ok_or(UpstreamError::AgentOffline)?;
            let service = session
                .http_service()
                .ok_or_else(|| {
                    UpstreamError::LocalUnavailable("the agent offers no HTTP service".into())
                })?
                .to_owned();
            let mut stream = session.mux.open().await.map_err(|e| match e {
                MuxError::TooManyStreams => UpstreamError::TooManyStreams,
                MuxError::Closed | MuxError::Yamux(_) => UpstreamError::AgentOffline,
            })?;
            let header = StreamHeader::new(service, format!("pool-{session_id}"), "gateway".into());
            let ack = tokio::time::timeout(tuning::STREAM_ACK_TIMEOUT, async {
                write_frame(&mut stream, &header).await?;
                read_frame::<Ack, _>(&mut stream).await
            })
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|_| UpstreamError::AgentOffline)?;
            match ack {
                Some(Ack::Ok) => {
                    let gauge = metrics.active_streams.with_label_values(&[registration]);
                    Ok(TokioIo::new(TunnelIo {
                        stream,
                        _open: GaugeGuard::new(gauge),
                    }))
                }
                Some(Ack::Error { message, .. }) => Err(UpstreamError::LocalUnavailable(message)),
                None => Err(UpstreamError::AgentOffline),
            }
        })
    }
}

/// A yamux stream as an upstream connection, counted in `g2c_active_streams` while it lives.
pub struct TunnelIo {
    stream: MuxStream,
    _open: GaugeGuard,
}

impl Connection for TunnelIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
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

/// Find an [`UpstreamError`] in a client error's source chain.
pub fn find_upstream_error<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a UpstreamError> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(u) = e.downcast_ref::<UpstreamError>() {
            return Some(u);
        }
        cur = e.source();
    }
    None
}
