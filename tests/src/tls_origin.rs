//! A real HTTPS origin for tests: an rcgen CA and a certificate it signed, and a rustls +
//! hyper server (HTTP/1.1, and HTTP/2 when asked) that says what it saw.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;

/// The origin's certificate is for this name.
pub const ORIGIN_NAME: &str = "origin.site.internal";

/// A CA and, signed by it, a certificate for [`ORIGIN_NAME`].
pub struct Pki {
    /// The CA's certificate (PEM), for a service's `ca_file`.
    pub ca_file: PathBuf,
    cert_pem: String,
    key_pem: String,
}

/// Make a fresh CA in `dir` (its file named after `tag`) and a certificate it signed.
pub fn pki(dir: &std::path::Path, tag: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![ORIGIN_NAME.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca_file = dir.join(format!("{tag}-ca.pem"));
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    Pki {
        ca_file,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// An HTTPS origin on `127.0.0.1:0` answering `secure <path> <version> <body bytes>` to every
/// request; it offers HTTP/2 by ALPN too when `h2`.
pub async fn origin(pki: &Pki, h2: bool) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if h2 {
        config.alpn_protocols.insert(0, b"h2".to_vec());
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt;
                        let (parts, body) = req.into_parts();
                        let n = body.collect().await.map_or(0, |b| b.to_bytes().len());
                        let body = format!("secure {} {:?} {n}", parts.uri.path(), parts.version);
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    addr
}
