//! Ground2Cloud agent: registers with a gateway, keeps one SSH tunnel open to it, and splices
//! every stream the gateway opens to a local service named in its own config.
#![forbid(unsafe_code)]

/// Reconnect pacing, shared with the gateway's own reconnect loops.
pub use g2c_proto::backoff;
pub mod config;
pub mod gui;
pub mod health;
pub mod inspect;
pub mod local_api;
pub mod logging;
pub mod origin_h2;
pub mod origin_tls;
pub mod quickack;
pub mod register;
pub mod service;
pub mod splice;
pub mod status;
pub mod supervisor;
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

/// How a run of the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `shutdown` fired.
    Shutdown,
    /// A restart was requested (GUI): reload the config and run again.
    Restart,
}

/// Run the agent until `shutdown` fires; returns after in-flight streams drained.
pub async fn run(
    config: AgentConfig,
    status: Arc<status::Status>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    config.validate()?;
    let control = supervisor::Supervisor::new(config, status, None, None);
    let auth = Arc::new(gui::auth::GuiAuth::ephemeral());
    run_with(control, auth, shutdown, None).await.map(|_| ())
}

/// Feed the traffic charts the tunnel's byte totals, once per series bucket, until `stop`.
async fn sample_bytes(status: Arc<status::Status>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let s = status.snapshot();
                status.inspector().sample_bytes(s.bytes_in, s.bytes_out);
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// One run of the agent under `control`: the local API/GUI and the tunnel, until `shutdown`
/// fires or a restart is requested. Records the local API's bound address in `api_addr_file`
/// (what `g2c-agent status` reads).
pub async fn run_with(
    control: Arc<supervisor::Supervisor>,
    auth: Arc<gui::auth::GuiAuth>,
    shutdown: CancellationToken,
    api_addr_file: Option<std::path::PathBuf>,
) -> Result<Exit, AgentError> {
    let config = control.config();
    config.validate()?;
    g2c_proto::sshkeys::read_private_key(&config.key_file)?;
    let run = control.begin_run(&shutdown);
    control.status().inspector().configure(&config.inspector);
    tokio::spawn(sample_bytes(control.status().clone(), run.clone()));
    // The tunnel matters more than the GUI: if its port is taken, say so and go on.
    let api = match gui::bind(&config.local_api).await {
        Ok(listener) => {
            if let (Some(file), Ok(addr)) = (&api_addr_file, listener.local_addr()) {
                if let Err(e) = std::fs::write(file, addr.to_string()) {
                    tracing::warn!(file = %file.display(), error = %e, "cannot record the local API address");
                }
            }
            Some(tokio::spawn(gui::serve(
                listener,
                control.clone(),
                auth,
                run.clone(),
            )))
        }
        Err(e) => {
            tracing::error!(addr = %config.local_api.listen, error = %e, "local API and GUI not available");
            None
        }
    };
    tunnel::run(control.clone(), run).await;
    if let Some(api) = api {
        api.abort();
        let _ = api.await;
    }
    if let Some(file) = api_addr_file {
        let _ = std::fs::remove_file(file);
    }
    if control.take_restart() && !shutdown.is_cancelled() {
        return Ok(Exit::Restart);
    }
    Ok(Exit::Shutdown)
}
