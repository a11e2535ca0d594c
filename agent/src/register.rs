//! Registration against the gateway's backchannel: one HTTP(S) POST with the enrollment token
//! and our public key; the answer pins the gateway's host key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use g2c_proto::registration::{
    ErrorEnvelope, RegisterRequest, RegisterResponse, REGISTRATIONS_PATH,
};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The URL is not `http(s)://host[:port]`.
    #[error("invalid backchannel URL {0:?}")]
    Url(String),
    /// Could not reach the backchannel.
    #[error("cannot reach the backchannel: {0}")]
    Connect(String),
    /// The CA file is unusable.
    #[error("CA certificate {0}")]
    Ca(String),
    /// The gateway refused.
    #[error("registration refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Gateway's message.
        message: String,
    },
    /// The gateway's answer was not understood.
    #[error("unexpected answer from the backchannel: {0}")]
    Protocol(String),
    /// Plain `http://` to a host that is not this machine: the answer pins the gateway's SSH
    /// host key, and anyone on the path could answer with theirs.
    #[error(
        "refusing plain http:// to {0}: anyone on the path could hand over their own SSH host \
         key to pin; use https://, or --insecure-plain-http on a network you trust"
    )]
    PlainHttpRefused(String),
}

/// Whether plain `http://` may carry a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainHttp {
    /// Only to this machine (`localhost`, a loopback address): the default.
    LoopbackOnly,
    /// Anywhere: the operator said so, knowing the host key could be substituted on the way.
    Anywhere,
}

/// Whether this scheme and host may carry a registration under `plain_http`.
fn check_plain_http(https: bool, host: &str, plain_http: PlainHttp) -> Result<(), RegisterError> {
    if https || plain_http == PlainHttp::Anywhere || is_loopback_host(host) {
        Ok(())
    } else {
        Err(RegisterError::PlainHttpRefused(host.to_owned()))
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn tls_connector(ca: Option<&Path>) -> Result<tokio_rustls::TlsConnector, RegisterError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| RegisterError::Ca(format!("{}: {e}", ca.display())))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| RegisterError::Ca(format!("{}: {e}", ca.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RegisterError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// POST the registration and return the gateway's answer.
pub async fn register(
    backchannel: &str,
    ca: Option<&Path>,
    request: &RegisterRequest,
    plain_http: PlainHttp,
) -> Result<RegisterResponse, RegisterError> {
    let uri: Uri = backchannel
        .parse()
        .map_err(|_| RegisterError::Url(backchannel.into()))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(RegisterError::Url(backchannel.into())),
    };
    let host = uri
        .host()
        .ok_or_else(|| RegisterError::Url(backchannel.into()))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    check_plain_http(https, &host, plain_http)?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let body = serde_json::to_vec(request).map_err(|e| RegisterError::Protocol(e.to_string()))?;
    let req = Request::post(REGISTRATIONS_PATH)
        .header(
            http::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(&host),
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| RegisterError::Protocol(e.to_string()))?;

    let work = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| RegisterError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|_| RegisterError::Url(backchannel.into()))?;
            let tls = tls_connector(ca)?
                .connect(name, tcp)
                .await
                .map_err(|e| RegisterError::Connect(format!("TLS: {e}")))?;
            exchange_json(TokioIo::new(tls), req).await
        } else {
            exchange_json(TokioIo::new(tcp), req).await
        }
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| RegisterError::Connect("timed out".into()))?
}

/// One HTTP/1.1 exchange over `io` expecting a JSON answer of at most 64 KiB; a non-2xx
/// status becomes [`RegisterError::Refused`] with the gateway's (or agent's) error message.
pub(crate) async fn exchange_json<I, T>(
    io: I,
    req: Request<Full<Bytes>>,
) -> Result<T, RegisterError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    T: serde::de::DeserializeOwned,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| RegisterError::Connect(e.to_string()))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| RegisterError::Connect(e.to_string()))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|e| RegisterError::Protocol(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorEnvelope>(&bytes)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(RegisterError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| RegisterError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RegisterRequest {
        RegisterRequest {
            name: None,
            public_key: "ssh-ed25519 AAAA".into(),
            token: "t".into(),
        }
    }

    /// Refused before any connection is made: nothing on the path ever sees the token.
    #[tokio::test]
    async fn plain_http_beyond_this_machine_is_refused_unless_asked_for() {
        for url in [
            "http://gw.example.com:3014",
            "http://203.0.113.7:3014",
            "http://[2001:db8::1]:80",
        ] {
            let r = register(url, None, &request(), PlainHttp::LoopbackOnly).await;
            assert!(
                matches!(r, Err(RegisterError::PlainHttpRefused(_))),
                "{url}: {r:?}"
            );
        }
        // Loopback is this machine: allowed (it fails only to connect here, port 9 is closed).
        for url in ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"] {
            let r = register(url, None, &request(), PlainHttp::LoopbackOnly).await;
            assert!(matches!(r, Err(RegisterError::Connect(_))), "{url}: {r:?}");
        }
        // The explicit opt-in lets it through (not connected here: no traffic leaves loopback).
        assert!(check_plain_http(false, "gw.example.com", PlainHttp::Anywhere).is_ok());
        assert!(check_plain_http(true, "gw.example.com", PlainHttp::LoopbackOnly).is_ok());
    }
}
