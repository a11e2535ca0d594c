//! Who may use the admin listener: a bearer token for the data and state-changing endpoints,
//! only the Host names the operator expects (so a DNS-rebound page cannot read it), and never
//! a browser's cross-site request (so a page cannot drive it to disconnect agents). Probes
//! (`/healthz`, `/readyz`) and, unless configured otherwise, `/metrics` stay open to scrapers.

use std::path::Path;

use http::{header, Request};
use sha2::{Digest, Sha256};

use crate::config::GatewayConfig;
use crate::error::RequestError;
use crate::store::random_secret;

/// The admin listener's checks, loaded once at start.
pub struct AdminGate {
    token_digest: [u8; 32],
    allowed_hosts: Vec<String>,
    open_metrics: bool,
}

/// Why the admin token could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[error("admin token file {path}: {source}")]
pub struct AdminTokenError {
    path: String,
    source: std::io::Error,
}

impl AdminGate {
    /// Read the token file, creating it (mode 0600, a random token) if it does not exist.
    pub fn load(config: &GatewayConfig) -> Result<Self, AdminTokenError> {
        let path = config.admin.token_path(&config.store);
        let token = read_or_create(&path).map_err(|source| AdminTokenError {
            path: path.display().to_string(),
            source,
        })?;
        tracing::info!(token_file = %path.display(), "admin API token");
        Ok(Self::new(
            &token,
            config.admin.allowed_hosts.clone(),
            config.admin.open_metrics,
        ))
    }

    /// A gate for `token`.
    pub fn new(token: &str, allowed_hosts: Vec<String>, open_metrics: bool) -> Self {
        Self {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            allowed_hosts: allowed_hosts
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            open_metrics,
        }
    }

    /// Whether `req` may go on.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), RequestError> {
        let path = req.uri().path();
        // A load balancer's check (HAProxy's `option httpchk` speaks HTTP/1.0) names no host;
        // browsers always do, so a probe without one is no rebinding.
        let hostless_probe =
            matches!(path, "/healthz" | "/readyz") && !req.headers().contains_key(header::HOST);
        if !hostless_probe {
            self.check_host(req)?;
        }
        check_not_cross_site(req)?;
        let open = matches!(path, "/healthz" | "/readyz" | "/openapi.json")
            || (path == "/metrics" && self.open_metrics);
        if open || self.has_token(req) {
            Ok(())
        } else {
            Err(RequestError::AdminTokenRequired)
        }
    }

    fn has_token<B>(&self, req: &Request<B>) -> bool {
        let Some(given) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        // Compare digests: equal length always, and no early exit on the secret's bytes.
        let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        digest
            .iter()
            .zip(self.token_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// IP literals cannot be rebound, `localhost` is ours, anything else must be configured.
    fn check_host<B>(&self, req: &Request<B>) -> Result<(), RequestError> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .ok_or(RequestError::RefusedHost)?
            .to_ascii_lowercase();
        let name = strip_port(&host);
        let literal = name.parse::<std::net::IpAddr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok());
        let listed = self.allowed_hosts.iter().any(|a| *a == host || *a == name);
        if literal || name == "localhost" || listed {
            Ok(())
        } else {
            Err(RequestError::RefusedHost)
        }
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; a bare IPv6 literal stays whole.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map(|i| &host[..=i]).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// A browser marks a request another site made it send; an `Origin` naming a site at all
/// means a page's script, which the admin API never serves.
fn check_not_cross_site<B>(req: &Request<B>) -> Result<(), RequestError> {
    let site = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return Err(RequestError::CrossSite);
    }
    if req.headers().contains_key(header::ORIGIN) {
        return Err(RequestError::CrossSite);
    }
    Ok(())
}

fn read_or_create(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = random_secret("g2ca_");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(path)?, format!("{token}\n").as_bytes())?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, path: &str, extra: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(path).header("host", host);
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_token_opens_the_data_endpoints_and_probes_stay_open() {
        let gate = AdminGate::new("s3cret", vec!["admin.internal".into()], true);
        let bearer = [("authorization", "Bearer s3cret")];
        assert!(gate.check(&req("127.0.0.1:9091", "/healthz", &[])).is_ok());
        assert!(gate.check(&req("127.0.0.1:9091", "/metrics", &[])).is_ok());
        let r = gate.check(&req("127.0.0.1:9091", "/v1/registrations", &[]));
        assert!(matches!(r, Err(RequestError::AdminTokenRequired)));
        let wrong = [("authorization", "Bearer s3cre")];
        let r = gate.check(&req("127.0.0.1", "/v1/registrations", &wrong));
        assert!(matches!(r, Err(RequestError::AdminTokenRequired)));
        assert!(gate.check(&req("[::1]:9091", "/v1/x", &bearer)).is_ok());
        assert!(gate
            .check(&req("admin.internal:9091", "/v1/x", &bearer))
            .is_ok());
        assert!(gate.check(&req("localhost", "/v1/x", &bearer)).is_ok());
        let no_host = Request::get("/readyz").body(()).unwrap();
        assert!(
            gate.check(&no_host).is_ok(),
            "a load balancer's HTTP/1.0 check"
        );
        let no_host = Request::get("/v1/x").body(()).unwrap();
        assert!(matches!(
            gate.check(&no_host),
            Err(RequestError::RefusedHost)
        ));
        let closed = AdminGate::new("s3cret", vec![], false);
        let r = closed.check(&req("127.0.0.1", "/metrics", &[]));
        assert!(matches!(r, Err(RequestError::AdminTokenRequired)));
    }

    #[test]
    fn rebound_names_and_cross_site_requests_are_refused_even_with_the_token() {
        let gate = AdminGate::new("s3cret", vec![], true);
        let bearer = ("authorization", "Bearer s3cret");
        for host in [
            "evil.example",
            "evil.example:9091",
            "127.0.0.1.evil.example",
        ] {
            let r = gate.check(&req(host, "/healthz", &[bearer]));
            assert!(matches!(r, Err(RequestError::RefusedHost)), "{host}");
        }
        for extra in [
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let r = gate.check(&req("127.0.0.1", "/v1/x", &[bearer, extra]));
            assert!(matches!(r, Err(RequestError::CrossSite)), "{extra:?}");
        }
    }
}
