//! Agent configuration: TOML, strict (`deny_unknown_fields`), validated field by field so
//! `g2c-agent config check` can name the bad one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use g2c_proto::config_error::ConfigError;
pub use inspector::InspectorConfig;
pub use service::{HealthCheck, HealthProbe, ServiceConfig, StatusSet};

mod inspector;
mod service;

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Registration ID (the SSH user name).
    pub registration_id: String,
    /// Private key file (OpenSSH format, mode 0600); relative to the config file.
    pub key_file: PathBuf,
    /// Where the gateway is and how to recognise it.
    pub gateway: GatewayEndpoint,
    /// Local services this agent forwards to. Nothing else is ever reachable through it.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Reconnect pacing.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Log files.
    #[serde(default, skip_serializing_if = "LogConfig::is_default")]
    pub log: LogConfig,
    /// The local status API (and, later, the GUI).
    #[serde(default, skip_serializing_if = "LocalApiConfig::is_default")]
    pub local_api: LocalApiConfig,
    /// The GUI's request inspector.
    #[serde(default, skip_serializing_if = "InspectorConfig::is_default")]
    pub inspector: InspectorConfig,
}

/// Rotating log files, written beside stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Directory of the log files (default: the per-OS log directory). Logging goes on to
    /// stderr alone if it cannot be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Rotate `agent.log` once it would pass this many bytes.
    pub max_bytes: u64,
    /// Files kept, the live one included.
    pub max_files: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

impl LogConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The directory log files go to.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_log_dir)
    }
}

/// The per-OS log directory of a service installation.
pub fn default_log_dir() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        PathBuf::from(base).join("Ground2Cloud").join("logs")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Logs/Ground2Cloud")
    } else {
        PathBuf::from("/var/log/ground2cloud")
    }
}

/// The agent's local HTTP API (status now; the GUI builds on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalApiConfig {
    /// Address to listen on (loopback; port 0 picks a free one).
    pub listen: std::net::SocketAddr,
    /// Allow a non-loopback address (off: such an address is refused).
    pub allow_remote: bool,
}

impl Default for LocalApiConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 3015)),
            allow_remote: false,
        }
    }
}

impl LocalApiConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The gateway's SSH endpoint and pinned identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayEndpoint {
    /// Host to dial.
    pub ssh_host: String,
    /// Port to dial.
    pub ssh_port: u16,
    /// The gateway's host key (OpenSSH one-line format); any other key is refused.
    pub host_key: String,
    /// Port to ask the gateway to forward (assigned at registration).
    pub tunnel_port: u16,
    /// Backchannel URL used at registration, kept for re-registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel: Option<String>,
    /// Tunnels kept open at once, each to a different node of a clustered gateway (the node
    /// list comes from the gateway once the first tunnel is up; a single-node gateway sends
    /// none, and one tunnel is kept). 1 to 4; a change takes effect at the next restart.
    #[serde(default = "default_connections")]
    pub connections: u8,
}

fn default_connections() -> u8 {
    2
}

impl GatewayEndpoint {
    /// The endpoint a registration answer names, its host key pinned.
    pub fn from_registration(
        answer: &g2c_proto::registration::RegisterResponse,
        backchannel: Option<String>,
    ) -> Self {
        Self {
            ssh_host: answer.ssh_host.clone(),
            ssh_port: answer.ssh_port,
            host_key: answer.gateway_host_key.clone(),
            tunnel_port: answer.tunnel_port,
            backchannel,
            connections: default_connections(),
        }
    }
}

/// Jittered exponential backoff settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// First delay, milliseconds.
    pub initial_delay_ms: u64,
    /// Largest delay, milliseconds.
    pub max_delay_ms: u64,
    /// A session that lasted this long resets the backoff, seconds.
    pub stable_after_secs: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_delay_ms: 250,
            max_delay_ms: 30_000,
            stable_after_secs: 30,
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(field, message)
}

/// Whether the private key file can be read and parsed (before a config naming it is saved).
pub fn check_key_file(path: &Path) -> Result<(), ConfigError> {
    g2c_proto::sshkeys::read_private_key(path)
        .map(|_| ())
        .map_err(|e| invalid("key_file", e.to_string()))
}

/// Whether `addr` looks like `host:port` with a valid port.
pub fn valid_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

impl AgentConfig {
    /// The config of a fresh registration: its identity and gateway from the answer, the key
    /// that was registered, `services`, and default reconnect, log and local API settings.
    pub fn for_registration(
        answer: &g2c_proto::registration::RegisterResponse,
        key_file: PathBuf,
        services: Vec<ServiceConfig>,
        backchannel: Option<String>,
    ) -> Self {
        Self {
            registration_id: answer.registration_id.clone(),
            key_file,
            gateway: GatewayEndpoint::from_registration(answer, backchannel),
            services,
            reconnect: ReconnectConfig::default(),
            log: LogConfig::default(),
            local_api: LocalApiConfig::default(),
            inspector: InspectorConfig::default(),
        }
    }

    /// Parse TOML (no validation).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Read, parse and validate; `key_file` is resolved against the config's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::from_toml(&text, path)?;
        cfg.validate()?;
        cfg.resolve_paths(path);
        Ok(cfg)
    }

    /// Resolve a relative `key_file` against the directory of the config file at `path`.
    pub fn resolve_paths(&mut self, path: &Path) {
        if self.key_file.is_relative() {
            if let Some(dir) = path.parent() {
                self.key_file = dir.join(&self.key_file);
            }
        }
    }

    /// The top-level sections that differ between `self` and `other`.
    pub fn changed_sections(&self, other: &Self) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |name: &str, changed: bool| {
            if changed {
                out.push(name.to_owned());
            }
        };
        diff(
            "registration_id",
            self.registration_id != other.registration_id,
        );
        diff("key_file", self.key_file != other.key_file);
        diff("gateway", self.gateway != other.gateway);
        diff("services", self.services != other.services);
        diff("reconnect", self.reconnect != other.reconnect);
        diff("log", self.log != other.log);
        diff("local_api", self.local_api != other.local_api);
        diff("inspector", self.inspector != other.inspector);
        out
    }

    /// Whether going from `self` to `other` needs a new tunnel session: a different gateway
    /// or identity, or a different set of announced services (the Hello names them). A changed
    /// local address or health check applies to the running session.
    pub fn needs_new_session(&self, other: &Self) -> bool {
        let announced = |c: &Self| {
            let mut v: Vec<_> = c
                .services
                .iter()
                .map(|s| (s.name.clone(), s.kind))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        self.registration_id != other.registration_id
            || self.key_file != other.key_file
            || self.gateway != other.gateway
            || announced(self) != announced(other)
    }

    /// Write the config as TOML, atomically (temp file + rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_owned(),
            source,
        };
        let text = toml::to_string_pretty(self).map_err(|e| invalid("config", e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("toml.tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write;
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.registration_id;
        if id.is_empty()
            || id.len() > 63
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid("registration_id", "must be a lowercase DNS label"));
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(invalid("key_file", "must name the private key file"));
        }
        let g = &self.gateway;
        if g.ssh_host.is_empty() {
            return Err(invalid("gateway.ssh_host", "must not be empty"));
        }
        if g.ssh_port == 0 {
            return Err(invalid("gateway.ssh_port", "must be a port number 1-65535"));
        }
        if g.tunnel_port == 0 {
            return Err(invalid(
                "gateway.tunnel_port",
                "must be a port number 1-65535",
            ));
        }
        if g2c_proto::sshkeys::parse_public(&g.host_key).is_err() {
            return Err(invalid("gateway.host_key", "is not an OpenSSH public key"));
        }
        if !(1..=4).contains(&g.connections) {
            return Err(invalid("gateway.connections", "must be 1 to 4"));
        }
        self.validate_services()?;
        self.validate_rest()
    }

    /// Names unique and well formed, local addresses `host:port`.
    fn validate_services(&self) -> Result<(), ConfigError> {
        if self.services.is_empty() {
            return Err(invalid("services", "at least one service is needed"));
        }
        let mut names = HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            if s.name.is_empty()
                || s.name.len() > 64
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                || s.name.contains("--")
            {
                return Err(invalid(
                    format!("services[{i}].name"),
                    "letters, digits, - and _ only (1-64), no \"--\" (it separates service and registration in host names)",
                ));
            }
            if !names.insert(s.name.to_ascii_lowercase()) {
                return Err(invalid(
                    format!("services[{i}].name"),
                    format!("duplicate service {:?}", s.name),
                ));
            }
            s.validate(i)?;
        }
        Ok(())
    }

    /// Reconnect timing, log rotation, the local API's address.
    fn validate_rest(&self) -> Result<(), ConfigError> {
        let r = &self.reconnect;
        if r.initial_delay_ms == 0 || r.initial_delay_ms > r.max_delay_ms {
            return Err(invalid(
                "reconnect.initial_delay_ms",
                "must be at least 1 and not above max_delay_ms",
            ));
        }
        if self.log.max_bytes < 1024 {
            return Err(invalid("log.max_bytes", "must be at least 1024"));
        }
        if self.log.max_files == 0 {
            return Err(invalid("log.max_files", "must be at least 1"));
        }
        let api = &self.local_api;
        if !api.listen.ip().is_loopback() && !api.allow_remote {
            return Err(invalid(
                "local_api.listen",
                format!(
                    "{} is not a loopback address; set local_api.allow_remote = true to expose it",
                    api.listen
                ),
            ));
        }
        self.inspector.validate()
    }

    /// The per-OS path a service installation reads.
    pub fn default_path() -> PathBuf {
        if cfg!(windows) {
            let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
            PathBuf::from(base).join("Ground2Cloud").join("agent.toml")
        } else {
            PathBuf::from("/etc/ground2cloud/agent.toml")
        }
    }
}
