//! Ground2Cloud agent: registers with a gateway, keeps one SSH tunnel open to it, and splices
//! every stream the gateway opens to a local service named in its own config.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod health;
pub mod register;
pub mod splice;
pub mod status;
pub mod tunnel;

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
    config.validate()?;
    let key = g2c_proto::sshkeys::read_private_key(&config.key_file)?;
    tunnel::run(config, key, status, shutdown).await;
    Ok(())
}
