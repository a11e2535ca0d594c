//! The diagnostics bundle an IT admin sends to support: a `.tar.gz` with the status, the
//! configuration with secrets masked, recent logs and a few facts about the machine. Never the
//! private key or the GUI secret: the key file's contents are never read here, and any line
//! holding the secret is masked.

use http::{header, HeaderValue, StatusCode};

use super::{error, Resp};
use crate::config::AgentConfig;
use crate::logging::LOG_FILE;
use crate::supervisor::Supervisor;

/// Bytes of each log file included.
const LOG_TAIL: u64 = 1024 * 1024;
/// Shown instead of anything secret.
pub const MASK: &str = "[masked]";

/// The config as written to the bundle: URLs lose credentials and query strings.
pub fn masked_config(mut config: AgentConfig) -> AgentConfig {
    if let Some(url) = config.gateway.backchannel.as_mut() {
        *url = mask_url(url);
    }
    config
}

fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{MASK}@{host}"),
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((p, _)) => format!("{p}?{MASK}"),
        None => path.to_owned(),
    };
    if scheme.is_empty() {
        format!("{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}")
    }
}

/// `GET /v1/diagnostics`.
pub fn bundle(control: &Supervisor, auth: &super::auth::GuiAuth) -> Resp {
    match build(control, auth) {
        Ok(bytes) => {
            let id = control.config().registration_id.clone();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut r = http::Response::new(super::full(bytes));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"g2c-diagnostics-{id}-{now}.tar.gz\""
            )) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            tracing::info!("diagnostics bundle downloaded");
            r
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()),
    }
}

fn build(control: &Supervisor, auth: &super::auth::GuiAuth) -> std::io::Result<Vec<u8>> {
    let secret = auth.secret().to_owned();
    let scrub = |text: String| text.replace(&secret, MASK);
    let config = control
        .file_config()
        .unwrap_or_else(|_| (*control.config()).clone());
    let config_text = toml::to_string_pretty(&masked_config(config))
        .unwrap_or_else(|e| format!("# cannot render the config: {e}\n"));
    let status = serde_json::to_string_pretty(&control.status().snapshot()).unwrap_or_default();
    let log_dir = control.config().log.dir();
    let system = serde_json::json!({
        "agent_version": env!("CARGO_PKG_VERSION"),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "pid": std::process::id(),
        "config_path": control.config_path(),
        "log_dir": log_dir,
    });
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, text: String| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        h.set_cksum();
        tar.append_data(&mut h, name, text.as_bytes())
    };
    add("g2c-diagnostics/status.json", scrub(status))?;
    add("g2c-diagnostics/config.toml", scrub(config_text))?;
    add(
        "g2c-diagnostics/system.json",
        serde_json::to_string_pretty(&system).unwrap_or_default(),
    )?;
    for name in [LOG_FILE.to_owned(), format!("{LOG_FILE}.1")] {
        if let Ok(text) = super::logs::tail(&log_dir.join(&name), LOG_TAIL) {
            add(&format!("g2c-diagnostics/logs/{name}"), scrub(text))?;
        }
    }
    tar.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(
            mask_url("https://user:pw@gw.example.com:3014/x?token=abc"),
            "https://[masked]@gw.example.com:3014/x?[masked]"
        );
        assert_eq!(mask_url("http://127.0.0.1:3014"), "http://127.0.0.1:3014");
    }
}
