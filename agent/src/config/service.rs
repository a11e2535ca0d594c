//! One local service in the agent's configuration: its name, kind and address, the TLS
//! settings of an HTTPS origin, and how its health is probed; with the checks that name a bad
//! field.

use std::path::PathBuf;
use std::time::Duration;

use g2c_proto::ServiceKind;
use serde::{Deserialize, Serialize};

use super::{invalid, valid_host_port, ConfigError};

/// One local service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Name announced to the gateway.
    pub name: String,
    /// `http` or `tcp`.
    #[serde(default = "default_kind")]
    pub kind: ServiceKind,
    /// `host:port` the agent connects to (this machine or another host on its network), or
    /// `https://host:port` for an HTTP service served over TLS (verified, never downgraded).
    pub local: String,
    /// HTTPS origins: the CA that signed the origin's certificate (PEM); only it is trusted.
    /// Default: the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// HTTPS origins: the name sent as SNI and verified in the certificate. Default: the
    /// host of `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// HTTPS origins: accept any certificate (still encrypted, no longer authenticated).
    /// Logged as a warning whenever the service is set up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_skip_verify: bool,
    /// HTTPS origins: offer HTTP/2 by ALPN as well as HTTP/1.1. An origin that picks `h2`
    /// gets one multiplexed connection per service, and the agent translates the gateway's
    /// HTTP/1.1 to it (WebSocket upgrades then answer 501: keep this off for such apps).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
    /// Probe the service every heartbeat and report its health to the gateway. Default: on
    /// for `http` services (and for any service with a `health` section), off for `tcp` ones,
    /// because database servers count bare connects as failed handshakes (MySQL's
    /// `max_connect_errors` blocks the host): give those `health = { probe = "mysql" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<bool>,
    /// How the service is probed. Default: a TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// HTTP services: keep the first KiB of each request and response body for the GUI's
    /// Requests page (off: only heads, with credentials masked, are kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capture_bodies: bool,
}

/// How a service's health is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// What a probe does.
    pub probe: HealthProbe,
    /// `http`: the path asked for (`GET`). Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `http`: the statuses that count as healthy, e.g. `"200-299,301"`. Default `200-399`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_statuses: Option<StatusSet>,
    /// `mysql`: the user the probe logs in as, without a password. Create it without any
    /// privilege (`CREATE USER 'g2c_health'@'%'`); an "access denied" answer still shows a
    /// live server, and neither counts against `max_connect_errors`. Default `g2c_health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Longest one probe may take, milliseconds (1 to 30000). Default 2000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// What a health probe does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthProbe {
    /// A TCP connect.
    Tcp,
    /// An HTTP `GET` of `path`, healthy when the status is in `healthy_statuses`.
    Http,
    /// The MySQL/MariaDB handshake and a login, ended with `COM_QUIT`: the server speaks its
    /// protocol, and the connection is a complete one, never a failed handshake.
    Mysql,
}

/// HTTP statuses, as ranges (`"200-299,301"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self(vec![(200, 399)])
    }
}

impl TryFrom<String> for StatusSet {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let status = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("{s:?} is not an HTTP status (100-599)"))
        };
        let ranges = text
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (status(lo)?, status(hi)?);
                    if lo > hi {
                        return Err(format!("{part:?} runs backwards"));
                    }
                    Ok((lo, hi))
                }
                None => status(part).map(|c| (c, c)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(ranges))
    }
}

impl From<StatusSet> for String {
    fn from(set: StatusSet) -> String {
        set.0
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl HealthCheck {
    /// A probe of the given kind with its defaults.
    pub fn new(probe: HealthProbe) -> Self {
        Self {
            probe,
            path: None,
            healthy_statuses: None,
            user: None,
            timeout_ms: default_timeout_ms(),
        }
    }

    /// The path an `http` probe asks for.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }

    /// Whether an `http` probe's answer counts as healthy.
    pub fn healthy_status(&self, status: u16) -> bool {
        match &self.healthy_statuses {
            Some(set) => set.contains(status),
            None => StatusSet::default().contains(status),
        }
    }

    /// The user a `mysql` probe logs in as.
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("g2c_health")
    }

    /// Longest one probe may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

fn default_timeout_ms() -> u64 {
    2000
}

impl ServiceConfig {
    /// A plain service at `local` (`host:port`, or `https://host:port`).
    pub fn new(name: impl Into<String>, kind: ServiceKind, local: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind,
            local: local.into(),
            ca_file: None,
            server_name: None,
            tls_skip_verify: false,
            http2: false,
            health_check: None,
            health: None,
            capture_bodies: false,
        }
    }

    /// Whether the origin is reached over TLS (`local = "https://..."`).
    pub fn is_https(&self) -> bool {
        self.local.starts_with(HTTPS)
    }

    /// The `host:port` to connect to (without the `https://`).
    pub fn address(&self) -> &str {
        self.local.strip_prefix(HTTPS).unwrap_or(&self.local)
    }

    /// Whether this service is probed (the explicit setting, else the kind's default).
    pub fn probed(&self) -> bool {
        self.health_check
            .unwrap_or(self.health.is_some() || self.kind == ServiceKind::Http)
    }

    /// The probe to run: the configured one, else a TCP connect.
    pub fn health_probe(&self) -> HealthCheck {
        self.health
            .clone()
            .unwrap_or_else(|| HealthCheck::new(HealthProbe::Tcp))
    }

    /// Check this service's own fields (`i` is its index, for the field name).
    pub(super) fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let field = |f: &str| format!("services[{i}]{f}");
        if !valid_host_port(self.address()) {
            return Err(invalid(
                field(".local"),
                format!(
                    "{:?} is not host:port (or https://host:port) with a port 1-65535",
                    self.local
                ),
            ));
        }
        let tls_fields = self.ca_file.is_some()
            || self.server_name.is_some()
            || self.tls_skip_verify
            || self.http2;
        if self.is_https() && self.kind != ServiceKind::Http {
            return Err(invalid(field(".local"), "https:// is for http services"));
        }
        if tls_fields && !self.is_https() {
            return Err(invalid(
                field(""),
                "ca_file, server_name, tls_skip_verify and http2 need local = \"https://host:port\"",
            ));
        }
        if self.tls_skip_verify && (self.ca_file.is_some() || self.server_name.is_some()) {
            return Err(invalid(
                field(".tls_skip_verify"),
                "verifies nothing: drop ca_file and server_name, or drop tls_skip_verify",
            ));
        }
        match &self.health {
            Some(h) if self.health_check == Some(false) => Err(invalid(
                field(".health"),
                format!(
                    "health_check = false turns the {:?} probe off: drop one",
                    h.probe
                ),
            )),
            Some(h) => h.validate(self.kind, &field(".health")),
            None => Ok(()),
        }
    }
}

impl HealthCheck {
    fn validate(&self, kind: ServiceKind, field: &str) -> Result<(), ConfigError> {
        if !(1..=30_000).contains(&self.timeout_ms) {
            return Err(invalid(format!("{field}.timeout_ms"), "must be 1 to 30000"));
        }
        let http_fields = self.path.is_some() || self.healthy_statuses.is_some();
        if http_fields && self.probe != HealthProbe::Http {
            return Err(invalid(
                field,
                "path and healthy_statuses are for probe = \"http\"",
            ));
        }
        if self.user.is_some() && self.probe != HealthProbe::Mysql {
            return Err(invalid(field, "user is for probe = \"mysql\""));
        }
        if let Some(path) = &self.path {
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(invalid(
                    format!("{field}.path"),
                    "must start with / and hold no spaces or control characters",
                ));
            }
        }
        if let Some(user) = &self.user {
            if user.is_empty() || user.len() > 80 || user.bytes().any(|b| b == 0) {
                return Err(invalid(
                    format!("{field}.user"),
                    "must be 1-80 bytes, no NUL",
                ));
            }
        }
        if self.probe == HealthProbe::Mysql && kind != ServiceKind::Tcp {
            return Err(invalid(
                format!("{field}.probe"),
                "mysql probes are for kind = \"tcp\" services",
            ));
        }
        Ok(())
    }
}

const HTTPS: &str = "https://";

fn default_kind() -> ServiceKind {
    ServiceKind::Http
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_parse_ranges_and_single_codes() {
        let set = StatusSet::try_from("200-299, 301".to_owned()).unwrap();
        assert!(set.contains(204) && set.contains(301));
        assert!(!set.contains(302) && !set.contains(500));
        assert_eq!(String::from(set), "200-299,301");
        for bad in ["", "20", "600", "300-200", "2xx"] {
            assert!(StatusSet::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
    }
}
