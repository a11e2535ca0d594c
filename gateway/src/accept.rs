//! The accept step every gateway listener shares (HTTP, SSH, public TCP ports): wait for a
//! connection or for the listener's stop, and back off briefly on accept errors (e.g. out of
//! file descriptors) without spinning and without delaying shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Pause after a failed accept.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection, or `None` once `stop` resolves.
pub async fn next<F: Future>(
    listener: &TcpListener,
    stop: F,
    name: &str,
) -> Option<(TcpStream, SocketAddr)> {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                        _ = &mut stop => return None,
                    }
                }
            },
            _ = &mut stop => return None,
        }
    }
}
