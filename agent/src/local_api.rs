//! The client side of the agent's local API (served by `gui`): `g2c-agent status` asks the
//! running agent, with the GUI secret as a bearer token, so it reports facts from the live
//! process, not guesses.
//!
//! The bound address is written to a small file beside the config (`<config stem>.api`), so
//! `status` and `gui` find an agent that listens on a port picked at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// Where the running agent records its API address, next to its config file.
pub fn addr_file(config: &Path) -> PathBuf {
    config.with_extension("api")
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

/// Ask the agent listening on `addr` for its status (3 s for the whole exchange), showing
/// the GUI `secret` as a bearer token.
pub async fn fetch_status(
    addr: SocketAddr,
    secret: &str,
) -> Result<crate::status::StatusSnapshot, StatusError> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|_| StatusError::NotRunning(addr))?;
        let req = Request::get("/v1/status")
            .header(http::header::HOST, "localhost")
            .header(http::header::AUTHORIZATION, format!("Bearer {secret}"))
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
