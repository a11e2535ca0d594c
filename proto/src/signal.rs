//! The one shutdown trigger both binaries use: Ctrl-C, or SIGTERM on Unix (what systemd and
//! `docker stop` send), cancels the process's shutdown token.

use tokio_util::sync::CancellationToken;

/// Wait for Ctrl-C or SIGTERM, then cancel `token`.
pub async fn shutdown_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
    token.cancel();
}
