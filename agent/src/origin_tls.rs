//! TLS to a local HTTPS origin (`local = "https://host:port"`): the agent verifies the
//! origin's certificate against the service's own CA file (only that CA) or the public roots,
//! for the service's `server_name` (else the host of `local`), and never falls back to plain
//! HTTP. `tls_skip_verify = true` turns verification off for that one service, and says so
//! loudly in the log whenever the service is set up.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use crate::config::ServiceConfig;

/// What a service needs to open TLS to its origin: built once per configuration.
#[derive(Clone)]
pub struct OriginTls {
    /// Offers what the service allows (`h2` too when `http2 = true`).
    connector: tokio_rustls::TlsConnector,
    /// Offers HTTP/1.1 only (health probes speak it by hand).
    h1_connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl OriginTls {
    /// The TLS set-up of `service`, `None` for a plain one; an error names what is unusable
    /// (CA file, server name).
    pub fn for_service(service: &ServiceConfig) -> Result<Option<Self>, String> {
        if !service.is_https() {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut config = if service.tls_skip_verify {
            tracing::warn!(
                service = %service.name,
                local = %service.local,
                "TLS VERIFICATION IS OFF for this service (tls_skip_verify = true): anyone on \
                 the path to the origin can read and change its traffic"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(roots(service.ca_file.as_deref())?)
                .with_no_client_auth()
        };
        // The gateway speaks HTTP/1.1 on the stream, and the bytes pass through as they are,
        // unless the origin picks h2 (offered only when asked for): then the agent translates.
        config.alpn_protocols = vec![HTTP1.to_vec()];
        let h1_connector = tokio_rustls::TlsConnector::from(Arc::new(config.clone()));
        if service.http2 {
            config.alpn_protocols = vec![H2.to_vec(), HTTP1.to_vec()];
        }
        let name = match &service.server_name {
            Some(n) => n.clone(),
            None => host_of(service.address()).to_owned(),
        };
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| format!("{name:?} is not a valid TLS server name"))?;
        Ok(Some(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            h1_connector,
            server_name,
        }))
    }

    /// Shake hands on `io` (the connection to the origin); an error is the verifier's (or
    /// the handshake's) reason.
    pub async fn connect<IO>(&self, io: IO) -> Result<TlsStream<IO>, String>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.connector
            .connect(self.server_name.clone(), io)
            .await
            .map_err(|e| e.to_string())
    }

    /// As [`Self::connect`], offering HTTP/1.1 alone.
    pub async fn connect_h1<IO>(&self, io: IO) -> Result<TlsStream<IO>, String>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.h1_connector
            .connect(self.server_name.clone(), io)
            .await
            .map_err(|e| e.to_string())
    }
}

/// ALPN name of HTTP/1.1.
const HTTP1: &[u8] = b"http/1.1";
/// ALPN name of HTTP/2.
pub const H2: &[u8] = b"h2";

/// Whether the origin chose HTTP/2 in the handshake of `tls`.
pub fn chose_h2<IO>(tls: &TlsStream<IO>) -> bool {
    tls.get_ref().1.alpn_protocol() == Some(H2)
}

/// The roots a service trusts: its own CA file only, else the public roots.
fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("ca_file {}: no certificate in it", ca.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// `host` of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The opt-out: any certificate is accepted, but the handshake's signatures are still
/// checked, so it is still TLS (encrypted), only not authenticated.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("app.internal:8443"), "app.internal");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("127.0.0.1:443"), "127.0.0.1");
    }
}
