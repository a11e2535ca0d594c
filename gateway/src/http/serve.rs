//! Accept loop shared by every HTTP listener of the gateway (front door, backchannel, admin):
//! optional TLS, HTTP/1.1 + HTTP/2, upgrades, header-read timeout, and three-step shutdown
//! (stop accepting, drain for a bounded grace period, then drop what is left).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::body::ProxyBody;
use super::framing::{watched, AmbiguousFraming};

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one HTTP listener.
#[derive(Clone)]
pub struct ServeOptions {
    /// Name for logs (`front`, `backchannel`, `admin`).
    pub name: &'static str,
    /// TLS acceptor, if the listener speaks TLS.
    pub tls: Option<TlsAcceptor>,
    /// Time allowed for a request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// Time in-flight requests get after shutdown starts.
    pub grace: Duration,
    /// Largest request head, bytes (431 past it).
    pub max_header_bytes: usize,
    /// Most request headers (431 past it).
    pub max_headers: usize,
}

/// Serve `handler` on `listener` until `shutdown` fires, then drain.
///
/// `handler` is called per request with the caller's address and whether the connection is TLS.
pub async fn serve<H, F>(
    listener: TcpListener,
    opts: ServeOptions,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr, bool) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes)
        .max_headers(opts.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(opts.max_header_bytes as u32);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    tracing::info!(listener = opts.name, addr = ?local, tls = opts.tls.is_some(), "listening");
    while let Some((tcp, peer)) = crate::accept::next(&listener, &shutdown, opts.name).await {
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let handler = handler.clone();
        let tls = opts.tls.clone();
        let span = tracing::debug_span!("conn", listener = opts.name, %peer);
        tokio::spawn(
            async move {
                let is_tls = tls.is_some();
                // Ambiguous framing seen on this connection's bytes, for the handler to refuse.
                let framing = AmbiguousFraming::default();
                let flag = framing.0.clone();
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    // Only then: no per-request allocation on the common path. The watcher
                    // sees the bytes before hyper parses them, so the ambiguous request itself
                    // is already marked.
                    if framing.seen() {
                        req.extensions_mut().insert(framing.clone());
                    }
                    let fut = handler(req, peer, is_tls);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(stream)) => {
                                let stream = watched(stream, flag);
                                let conn = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service);
                                watcher.watch(conn).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        }
                    }
                    None => {
                        let tcp = watched(tcp, flag);
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                        watcher.watch(conn).await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    tracing::info!(listener = opts.name, "stopped accepting; draining");
    if tokio::time::timeout(opts.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = opts.name,
            "grace period over; dropping remaining connections"
        );
    }
}
