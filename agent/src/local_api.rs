//! The agent's local HTTP API on `127.0.0.1:3015` (configurable; a non-loopback address needs
//! `local_api.allow_remote`): `GET /v1/status` answers what the running agent knows about its
//! tunnel. `g2c-agent status` reads it, so it reports facts from the live process, not guesses;
//! the GUI builds on the same listener.
//!
//! The bound address is written to a small file beside the config (`<config stem>.api`), so
//! `status` finds an agent that listens on a port picked at start.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::status::Status;

/// Where the running agent records its API address, next to its config file.
pub fn addr_file(config: &Path) -> PathBuf {
    config.with_extension("api")
}

/// Serve the API on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, status: Arc<Status>, shutdown: CancellationToken) {
    tracing::info!(addr = ?listener.local_addr().ok(), "local API listening");
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "local API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let status = status.clone();
        let conn_shutdown = shutdown.clone();
        tokio::spawn(
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    let status = status.clone();
                    async move { Ok::<_, Infallible>(handle(&status, req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = conn_shutdown.cancelled() => {}
                }
            }
            .instrument(tracing::debug_span!("local_api", %peer)),
        );
    }
}

fn handle(status: &Status, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let json = |code: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/status") => json(
            StatusCode::OK,
            serde_json::to_string(&status.snapshot()).unwrap_or_default(),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#.into(),
        ),
    }
}

/// Why `g2c-agent status` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Nothing answers at the address.
    #[error("the agent is not running (nothing answers on {0})")]
    NotRunning(SocketAddr),
    /// Something answered, but not with a status.
    #[error("unexpected answer from {0}: {1}")]
    Protocol(SocketAddr, String),
}

/// Ask the agent listening on `addr` for its status (3 s for the whole exchange).
pub async fn fetch_status(addr: SocketAddr) -> Result<crate::status::StatusSnapshot, StatusError> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|_| StatusError::NotRunning(addr))?;
        let req = Request::get("/v1/status")
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|e| StatusError::Protocol(addr, e.to_string()))?;
        crate::register::exchange_json(TokioIo::new(tcp), req)
            .await
            .map_err(|e| StatusError::Protocol(addr, e.to_string()))
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), exchange)
        .await
        .map_err(|_| StatusError::Protocol(addr, "no answer within 3 s".into()))?
}
