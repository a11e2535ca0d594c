//! The gateway's bound sockets, and the addresses they got (port 0 resolved), for tests and
//! `--ready-file`.

use tokio::net::TcpListener;

use crate::config::GatewayConfig;
use crate::error::GatewayError;

/// The gateway's bound sockets.
pub struct Listeners {
    /// Plain-HTTP front door.
    pub http: Option<TcpListener>,
    /// HTTPS front door.
    pub https: Option<TcpListener>,
    /// SSH for agents.
    pub ssh: TcpListener,
    /// Registration API.
    pub backchannel: TcpListener,
    /// Admin API and metrics.
    pub admin: TcpListener,
    /// The cluster's peer link (with a `[cluster]` section).
    pub peer: Option<TcpListener>,
}

impl Listeners {
    /// Bind every listener the config names.
    pub async fn bind(config: &GatewayConfig) -> Result<Self, GatewayError> {
        async fn one(
            what: &'static str,
            addr: std::net::SocketAddr,
        ) -> Result<TcpListener, GatewayError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { what, addr, source })
        }
        Ok(Self {
            http: match &config.http {
                Some(l) => Some(one("http", l.listen).await?),
                None => None,
            },
            https: match &config.https {
                Some(l) => Some(one("https", l.listen).await?),
                None => None,
            },
            ssh: one("ssh", config.ssh.listen).await?,
            backchannel: one("backchannel", config.backchannel.listen).await?,
            admin: one("admin", config.admin.listen).await?,
            peer: match &config.cluster {
                Some(c) => Some(one("peer", c.peer_listen).await?),
                None => None,
            },
        })
    }
}

/// Actual addresses of bound listeners (port 0 resolved), for tests and `--ready-file`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BoundAddrs {
    /// Plain-HTTP front door.
    pub http: Option<std::net::SocketAddr>,
    /// HTTPS front door.
    pub https: Option<std::net::SocketAddr>,
    /// SSH.
    pub ssh: std::net::SocketAddr,
    /// Backchannel.
    pub backchannel: std::net::SocketAddr,
    /// Admin.
    pub admin: std::net::SocketAddr,
    /// The cluster's peer link.
    #[serde(default)]
    pub peer: Option<std::net::SocketAddr>,
}

impl Listeners {
    /// The addresses actually bound.
    pub fn addrs(&self) -> std::io::Result<BoundAddrs> {
        Ok(BoundAddrs {
            http: self.http.as_ref().map(|l| l.local_addr()).transpose()?,
            https: self.https.as_ref().map(|l| l.local_addr()).transpose()?,
            ssh: self.ssh.local_addr()?,
            backchannel: self.backchannel.local_addr()?,
            admin: self.admin.local_addr()?,
            peer: self.peer.as_ref().map(|l| l.local_addr()).transpose()?,
        })
    }
}
