//! `[cluster]`: how this node meets the other nodes of a cluster (a PostgreSQL store shared
//! by several nodes). The peer link listens on `peer_listen` and speaks mutually
//! authenticated TLS: every node presents a certificate signed by the cluster CA (`ca`) for
//! the one name `server_name`, and accepts only peers that do the same.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The peer link and the node's advertised addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where the peer link listens (a private interface).
    pub peer_listen: SocketAddr,
    /// Where other nodes reach this one; default: the bound `peer_listen` address.
    #[serde(default)]
    pub peer_advertise: Option<String>,
    /// `host:port` agents dial for this node's SSH (their second tunnel goes straight to a
    /// node); default: the bound SSH listener's address.
    #[serde(default)]
    pub ssh_advertise: Option<String>,
    /// PEM of the cluster CA: the only issuer of peer certificates this node trusts.
    pub ca: PathBuf,
    /// PEM certificate chain of this node (issued by `ca` for `server_name`).
    pub cert: PathBuf,
    /// PEM private key of this node.
    pub key: PathBuf,
    /// The name every node's certificate carries and every peer checks.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// How long a draining node keeps serving with `/readyz` at 503 before it stops accepting,
    /// so the load balancer's health check sees it first (milliseconds).
    #[serde(default = "default_announce")]
    pub drain_announce_ms: u64,
}

fn default_server_name() -> String {
    "g2c-node".into()
}

fn default_announce() -> u64 {
    2000
}

impl ClusterConfig {
    /// Resolve relative file paths against the config file's directory.
    pub fn resolve_relative_to(&mut self, dir: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key] {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }

    /// The checks serde cannot make.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server_name.is_empty() {
            return Err(ConfigError::invalid(
                "cluster.server_name",
                "must name the peer certificates' subject",
            ));
        }
        if self.drain_announce_ms > 120_000 {
            return Err(ConfigError::invalid(
                "cluster.drain_announce_ms",
                "must be at most 120000",
            ));
        }
        for (field, v) in [
            ("cluster.peer_advertise", &self.peer_advertise),
            ("cluster.ssh_advertise", &self.ssh_advertise),
        ] {
            if v.as_deref().is_some_and(|a| a.rsplit_once(':').is_none()) {
                return Err(ConfigError::invalid(field, "must be host:port"));
            }
        }
        Ok(())
    }
}
