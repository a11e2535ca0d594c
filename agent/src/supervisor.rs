//! The running agent's supervisor, shared by the tunnel loop and the local API/GUI: the live
//! configuration (a watch channel the tunnel follows), "reconnect now", "restart", and the
//! config file itself (validated, backed up and written atomically before it is applied).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, ConfigError};
use crate::status::Status;

/// What applying a configuration change did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApplyOutcome {
    /// Where the previous file was copied, when there was one.
    pub backup: Option<PathBuf>,
    /// Top-level sections that changed.
    pub changed: Vec<String>,
    /// The tunnel reconnects to apply the change (gateway, identity or the set of services).
    pub reconnect: bool,
    /// Sections that take effect only after a restart of the agent.
    pub restart_required: Vec<String>,
}

/// Shared control of one running agent.
pub struct Supervisor {
    status: Arc<Status>,
    config: watch::Sender<Arc<AgentConfig>>,
    config_path: Option<PathBuf>,
    log_dir_override: Option<PathBuf>,
    reconnect: watch::Sender<u64>,
    restart: AtomicBool,
    run_token: Mutex<Option<CancellationToken>>,
    file_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Supervisor for an agent running `config` (already loaded, paths resolved). With a
    /// `config_path`, the GUI edits that file; without one, edits are live only.
    /// `log_dir_override` keeps a log directory whatever the file says (`G2C_LOG_DIR`).
    pub fn new(
        config: AgentConfig,
        status: Arc<Status>,
        config_path: Option<PathBuf>,
        log_dir_override: Option<PathBuf>,
    ) -> Arc<Self> {
        Arc::new(Self {
            status,
            log_dir_override,
            config: watch::Sender::new(Arc::new(config)),
            config_path,
            reconnect: watch::Sender::new(0),
            restart: AtomicBool::new(false),
            run_token: Mutex::new(None),
            file_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The live configuration.
    pub fn config(&self) -> Arc<AgentConfig> {
        self.config.borrow().clone()
    }

    /// Follow configuration changes.
    pub fn subscribe_config(&self) -> watch::Receiver<Arc<AgentConfig>> {
        self.config.subscribe()
    }

    /// The config file the agent was started with.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// The shared status.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Drop the current tunnel session (or cut a backoff wait short) and connect again.
    pub fn request_reconnect(&self) {
        self.reconnect.send_modify(|n| *n += 1);
    }

    /// Follow reconnect requests.
    pub fn subscribe_reconnect(&self) -> watch::Receiver<u64> {
        self.reconnect.subscribe()
    }

    /// Stop the tunnel and the local API, reload the config file and start both again.
    pub fn request_restart(&self) {
        self.restart.store(true, Ordering::SeqCst);
        if let Some(t) = self
            .run_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            t.cancel();
        }
    }

    /// A token for one run of the agent: cancelled by `shutdown` or by a restart request.
    pub(crate) fn begin_run(&self, shutdown: &CancellationToken) -> CancellationToken {
        let token = shutdown.child_token();
        *self.run_token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
        token
    }

    /// Whether the run that just ended was ended by a restart request (clears the request).
    pub(crate) fn take_restart(&self) -> bool {
        self.restart.swap(false, Ordering::SeqCst)
    }

    /// The configuration as the file has it (relative paths unresolved), or the live one when
    /// the agent has no file.
    pub fn file_config(&self) -> Result<AgentConfig, ConfigError> {
        match &self.config_path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.clone(),
                    source,
                })?;
                AgentConfig::from_toml(&text, path)
            }
            None => Ok((*self.config()).clone()),
        }
    }

    /// The live form of a file configuration: paths resolved, overrides applied.
    fn live_form(&self, mut config: AgentConfig) -> AgentConfig {
        if let Some(path) = &self.config_path {
            config.resolve_paths(path);
        }
        if self.log_dir_override.is_some() {
            config.log.dir = self.log_dir_override.clone();
        }
        config
    }

    /// Validate `new`, back up and atomically rewrite the config file, then apply the change
    /// to the running agent. An invalid config changes nothing and names the field.
    pub async fn update_config(&self, new: AgentConfig) -> Result<ApplyOutcome, ConfigError> {
        new.validate()?;
        let live = self.live_form(new.clone());
        crate::config::check_key_file(&live.key_file)?;
        let _file = self.file_lock.lock().await;
        let mut outcome = ApplyOutcome::default();
        if let Some(path) = &self.config_path {
            let mut backup = OsString::from(path.as_os_str());
            backup.push(".bak");
            let backup = PathBuf::from(backup);
            if path.exists() {
                std::fs::copy(path, &backup).map_err(|source| ConfigError::Io {
                    path: backup.clone(),
                    source,
                })?;
                outcome.backup = Some(backup);
            }
            new.save(path)?;
        }
        let old = self.config();
        outcome.changed = old.changed_sections(&live);
        outcome.reconnect = old.needs_new_session(&live);
        if old.local_api != live.local_api {
            outcome.restart_required.push("local_api".into());
        }
        if old.log != live.log && crate::logging::reconfigure(&live.log).is_err() {
            outcome.restart_required.push("log".into());
        }
        tracing::info!(
            changed = ?outcome.changed,
            reconnect = outcome.reconnect,
            restart_required = ?outcome.restart_required,
            "configuration updated"
        );
        self.status.inspector().configure(&live.inspector);
        self.config.send_replace(Arc::new(live));
        Ok(outcome)
    }

    /// Re-read the config file into the live configuration (at a restart).
    pub fn reload_from_file(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let config = self.live_form(AgentConfig::load(path)?);
        let _ = crate::logging::reconfigure(&config.log);
        self.config.send_replace(Arc::new(config));
        Ok(())
    }
}
