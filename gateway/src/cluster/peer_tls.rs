//! The peer link's mutual TLS: each node presents its certificate (issued by the cluster CA
//! for the cluster's one server name) and accepts only peers whose certificate the same CA
//! issued. Nothing else is trusted: not the system roots, not the front door's certificate.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::ClusterConfig;
use crate::tls::{load_certs, load_key, provider, TlsError};

/// Both halves of the peer link's TLS.
#[derive(Clone)]
pub struct PeerTls {
    /// For peers that dial us.
    pub acceptor: TlsAcceptor,
    /// For dialling peers.
    pub connector: TlsConnector,
    /// The name every peer certificate carries.
    pub server_name: ServerName<'static>,
}

impl PeerTls {
    /// Load the CA, this node's certificate and key.
    pub fn load(c: &ClusterConfig) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in load_certs(&c.ca)? {
            roots
                .add(ca)
                .map_err(|e| TlsError::new("CA certificate", &c.ca, e))?;
        }
        let roots = Arc::new(roots);
        let certs = load_certs(&c.cert)?;
        let key = load_key(&c.key)?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::new("CA certificate", &c.ca, e))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .and_then(|b| {
                b.with_client_cert_verifier(verifier)
                    .with_single_cert(certs.clone(), key.clone_key())
            })
            .map_err(|e| TlsError::new("certificate", &c.cert, e))?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .and_then(|b| {
                b.with_root_certificates(roots)
                    .with_client_auth_cert(certs, key)
            })
            .map_err(|e| TlsError::new("certificate", &c.cert, e))?;
        let server_name = ServerName::try_from(c.server_name.clone())
            .map_err(|e| TlsError::new("server name", std::path::Path::new(&c.server_name), e))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }
}
