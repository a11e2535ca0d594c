//! Gateway configuration: TOML, strict (`deny_unknown_fields`), checked by [`GatewayConfig::validate`].
//!
//! Every field has a default that runs on a developer's machine (loopback-friendly ports, an
//! SQLite file in the working directory); `deploy/gateway.toml` shows the production ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use g2c_proto::config_error::ConfigError;

use crate::core::cidr::Cidr;

mod cluster;
mod limits;
mod store;
pub use cluster::ClusterConfig;
pub use limits::LimitsConfig;
pub use store::{mask_password, StoreConfig};

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Domain under which `<registration>.<base_domain>` routes to a registration.
    pub base_domain: String,
    /// Where registrations, tokens and keys live.
    pub store: StoreConfig,
    /// Plain-HTTP front door (development, or behind a TLS terminator).
    pub http: Option<ListenerConfig>,
    /// HTTPS front door.
    pub https: Option<TlsListenerConfig>,
    /// SSH server for agent tunnels.
    pub ssh: SshConfig,
    /// Registration API for agents.
    pub backchannel: BackchannelConfig,
    /// Admin API and `/metrics`.
    pub admin: AdminConfig,
    /// Public TCP ports for agents' TCP services.
    pub tcp: TcpConfig,
    /// Timeouts and limits.
    pub limits: LimitsConfig,
    /// Request audit log.
    pub audit: AuditConfig,
    /// Networks of the proxies in front of the gateway (CIDR). Only from these are a caller's
    /// `X-Forwarded-For` appended to and its `X-Request-Id` kept; from anyone else the gateway
    /// sets both itself (the caller's id goes on as `X-Caller-Request-Id`).
    pub trusted_proxies: Vec<String>,
    /// The peer link to the other nodes, when the store is shared (PostgreSQL).
    pub cluster: Option<ClusterConfig>,
}

/// Where the audit log goes: a size-rotated file and/or stdout (neither: off).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Write one JSON line per request to stdout.
    pub stdout: bool,
    /// Write them to this file, rotated by size.
    pub file: Option<PathBuf>,
    /// Rotate the file once it would pass this many bytes.
    pub max_bytes: u64,
    /// Files kept, the live one included.
    pub max_files: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            stdout: false,
            file: None,
            max_bytes: 100 * 1024 * 1024,
            max_files: 10,
        }
    }
}

/// Public TCP port settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Address the public TCP ports bind to.
    pub bind: std::net::IpAddr,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            bind: std::net::IpAddr::from([0, 0, 0, 0]),
        }
    }
}

/// A plain listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind.
    pub listen: SocketAddr,
}

/// The admin listener and who may use it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to bind (a private interface).
    pub listen: SocketAddr,
    /// File holding the bearer token that `/v1/*` (and `/metrics` unless `open_metrics`) need.
    /// Default: `admin_token` beside the store, created with a random token on first start.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Host names (with or without port) the listener answers to besides IP literals and
    /// `localhost`: anything else is refused, so a DNS-rebound page cannot read the API.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Whether `/metrics` may be scraped without the token (`/healthz` and `/readyz` always
    /// may: probes carry no credentials).
    #[serde(default = "yes")]
    pub open_metrics: bool,
}

fn yes() -> bool {
    true
}

impl AdminConfig {
    /// Where the admin token lives: the configured file, or `admin_token` beside the store.
    pub fn token_path(&self, store: &StoreConfig) -> PathBuf {
        self.token_file.clone().unwrap_or_else(|| {
            store
                .path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("admin_token")
        })
    }
}

/// A listener that speaks TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// SSH server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Host key file (OpenSSH format; generated with mode 0600 if missing).
    pub host_key: PathBuf,
    /// Host name agents are told to dial (answered by the backchannel).
    pub public_host: String,
    /// Port agents are told to dial; defaults to the listen port.
    pub public_port: Option<u16>,
}

/// Backchannel settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackchannelConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain; with `key`, the backchannel speaks TLS.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            base_domain: "localhost".into(),
            store: StoreConfig::default(),
            http: Some(ListenerConfig {
                listen: "0.0.0.0:8000".parse().expect("literal"),
            }),
            https: None,
            ssh: SshConfig::default(),
            backchannel: BackchannelConfig::default(),
            admin: AdminConfig {
                listen: "127.0.0.1:9091".parse().expect("literal"),
                token_file: None,
                allowed_hosts: Vec::new(),
                open_metrics: true,
            },
            tcp: TcpConfig::default(),
            limits: LimitsConfig::default(),
            audit: AuditConfig::default(),
            trusted_proxies: Vec::new(),
            cluster: None,
        }
    }
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:2222".parse().expect("literal"),
            host_key: "g2c-host-key".into(),
            public_host: "127.0.0.1".into(),
            public_port: None,
        }
    }
}

impl Default for BackchannelConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:3014".parse().expect("literal"),
            cert: None,
            key: None,
        }
    }
}

impl GatewayConfig {
    /// Parse a TOML document (no validation).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Read, parse and validate a config file. Relative paths inside it are resolved against the
    /// file's directory, so a config works from any working directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::from_toml(&text, path)?;
        if let Some(dir) = path.parent() {
            cfg.resolve_relative_to(dir);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_relative_to(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        fix(&mut self.store.path);
        fix(&mut self.ssh.host_key);
        if let Some(t) = &mut self.https {
            fix(&mut t.cert);
            fix(&mut t.key);
        }
        if let Some(c) = &mut self.backchannel.cert {
            fix(c);
        }
        if let Some(k) = &mut self.backchannel.key {
            fix(k);
        }
        if let Some(f) = &mut self.audit.file {
            fix(f);
        }
        if let Some(f) = &mut self.admin.token_file {
            fix(f);
        }
        if let Some(c) = &mut self.cluster {
            c.resolve_relative_to(dir);
        }
    }

    /// The `trusted_proxies` networks (every entry parses once the config is validated).
    pub fn trusted_proxy_networks(&self) -> Vec<Cidr> {
        self.trusted_proxies
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect()
    }

    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: &str| Err(ConfigError::invalid(field, message));
        if self.http.is_none() && self.https.is_none() {
            return invalid(
                "http",
                "at least one of [http] or [https] must be configured",
            );
        }
        if self.base_domain.is_empty() || self.base_domain.starts_with('.') {
            return invalid(
                "base_domain",
                "must be a domain name such as g2c.example.com",
            );
        }
        if self.backchannel.cert.is_some() != self.backchannel.key.is_some() {
            return invalid("backchannel.cert", "cert and key must be given together");
        }
        for p in &self.trusted_proxies {
            if p.parse::<Cidr>().is_err() {
                return invalid(
                    "trusted_proxies",
                    "each entry must be a CIDR such as 10.0.0.0/8",
                );
            }
        }
        self.limits.validate()?;
        self.store.validate()?;
        if let Some(c) = &self.cluster {
            if self.store.url.is_none() {
                return invalid(
                    "cluster",
                    "a cluster needs a shared store: set store.url to the PostgreSQL database",
                );
            }
            c.validate()?;
        }
        if self.audit.max_bytes < 4096 {
            return invalid("audit.max_bytes", "must be at least 4096");
        }
        if self.audit.max_files == 0 {
            return invalid("audit.max_files", "must be at least 1");
        }
        if self.ssh.public_host.is_empty() {
            return invalid("ssh.public_host", "must name the host agents dial");
        }
        Ok(())
    }
}
