//! Ground2Cloud agent: registers with a gateway, keeps one SSH tunnel open to it, and splices
//! every stream the gateway opens to a local service named in its own config.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod health;
pub mod local_api;
pub mod logging;
pub mod register;
pub mod service;
pub mod splice;
pub mod status;
pub mod tunnel;
#[cfg(windows)]
pub mod winsvc;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;

/// Why the agent could not start. (Once started it never gives up on the gateway.)
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The private key is unusable.
    #[error(transparent)]
    Key(#[from] g2c_proto::sshkeys::KeyFileError),
}

/// Run the agent until `shutdown` fires; returns after in-flight streams drained.
pub async fn run(
    config: AgentConfig,
    status: Arc<status::Status>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    run_with(config, status, shutdown, None).await
}

/// [`run`], also recording the local API's bound address in `api_addr_file` (what
/// `g2c-agent status` reads).
pub async fn run_with(
    config: AgentConfig,
    status: Arc<status::Status>,
    shutdown: CancellationToken,
    api_addr_file: Option<std::path::PathBuf>,
) -> Result<(), AgentError> {
    config.validate()?;
    let key = g2c_proto::sshkeys::read_private_key(&config.key_file)?;
    // The tunnel matters more than the status API: if its port is taken, say so and go on.
    let api = match tokio::net::TcpListener::bind(config.local_api.listen).await {
        Ok(listener) => {
            if let (Some(file), Ok(addr)) = (&api_addr_file, listener.local_addr()) {
                if let Err(e) = std::fs::write(file, addr.to_string()) {
                    tracing::warn!(file = %file.display(), error = %e, "cannot record the local API address");
                }
            }
            Some(tokio::spawn(local_api::serve(
                listener,
                status.clone(),
                shutdown.clone(),
            )))
        }
        Err(e) => {
            tracing::error!(addr = %config.local_api.listen, error = %e, "local API not available");
            None
        }
    };
    tunnel::run(config, key, status, shutdown).await;
    if let Some(api) = api {
        api.abort();
    }
    if let Some(file) = api_addr_file {
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}
