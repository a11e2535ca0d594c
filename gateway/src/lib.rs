//! Ground2Cloud gateway: the public end of every tunnel.
//!
//! [`run`] takes already-bound listeners (so tests bind `127.0.0.1:0`), a validated config and a
//! shutdown token, and serves until the token fires: SSH for agents, the HTTP front door for
//! callers, the backchannel for registration, and the admin API.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod backchannel;
pub mod cidr;
pub mod config;
pub mod error;
pub mod hostkey;
pub mod http;
pub mod metrics;
pub mod ratelimit;
pub mod registry;
pub mod ssh;
pub mod store;
pub mod tcp;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::AuthCache;
use crate::config::GatewayConfig;
use crate::http::serve::{serve, ServeOptions};
use crate::http::upstream::UpstreamClient;
use crate::registry::Registry;
use crate::store::{SqliteStore, Store, StoreError};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host key could not be loaded or created.
    #[error(transparent)]
    HostKey(#[from] g2c_proto::sshkeys::KeyFileError),
    /// A TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The audit log file could not be opened.
    #[error("cannot open the audit log: {0}")]
    Audit(std::io::Error),
    /// The configuration does not match the listeners given.
    #[error("{0}")]
    Listeners(&'static str),
}

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
        })
    }
}

/// State shared by every listener.
pub struct Shared {
    /// Validated configuration.
    pub config: GatewayConfig,
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Cached credentials.
    pub auth: AuthCache,
    /// Live agent sessions.
    pub registry: Arc<Registry>,
    /// SSH host key.
    pub host_key: russh::keys::PrivateKey,
    /// Its public half, OpenSSH format, handed to agents for pinning.
    pub host_key_public: String,
    /// SSH port agents are told to dial.
    pub ssh_public_port: u16,
    /// Pooled upstream client.
    pub client: UpstreamClient,
    /// Readiness (false once draining).
    pub ready: AtomicBool,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// Open public TCP ports.
    pub tcp: tcp::TcpPorts,
    /// Request audit log.
    pub audit: audit::AuditLog,
    /// Request rate per registration.
    pub registration_rate: ratelimit::RateLimiter,
    /// Request rate per API key.
    pub key_rate: ratelimit::RateLimiter,
}

impl Shared {
    /// Open the store, load credentials and the host key, and set up metrics, the audit log,
    /// the upstream client and the rate limiters: everything the listeners share. `run` calls
    /// it; the fuzz harness uses it to drive the front door over in-memory I/O.
    pub async fn build(
        config: GatewayConfig,
        ssh_public_port: u16,
    ) -> Result<Arc<Self>, GatewayError> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.store.path).await?);
        let auth = AuthCache::load(store.clone()).await?;
        let host_key = hostkey::load_or_generate(&config.ssh.host_key)?;
        let host_key_public = g2c_proto::sshkeys::public_openssh(host_key.public_key());
        let registry = Arc::new(Registry::default());
        let metrics = metrics::Metrics::new();
        let audit = audit::AuditLog::start(&config.audit, metrics.audit_dropped.clone())
            .map_err(GatewayError::Audit)?;
        let client = http::upstream::client(
            registry.clone(),
            config.limits.upstream_pool_idle_per_agent,
            metrics.clone(),
        );
        let limits = &config.limits;
        let registration_rate = ratelimit::RateLimiter::new(
            f64::from(limits.registration_rate_per_sec),
            limits.registration_burst,
        );
        let key_rate =
            ratelimit::RateLimiter::new(f64::from(limits.key_rate_per_sec), limits.key_burst);
        Ok(Arc::new(Shared {
            config,
            store,
            auth,
            registry,
            host_key,
            host_key_public,
            ssh_public_port,
            client,
            ready: AtomicBool::new(true),
            metrics,
            tcp: tcp::TcpPorts::default(),
            audit,
            registration_rate,
            key_rate,
        }))
    }
}

/// Run the gateway until `shutdown` fires.
pub async fn run(
    listeners: Listeners,
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    if listeners.http.is_none() && listeners.https.is_none() {
        return Err(GatewayError::Listeners("no front-door listener"));
    }
    let https_tls = match (&config.https, &listeners.https) {
        (Some(t), Some(_)) => Some(tls::acceptor(&t.cert, &t.key)?),
        (None, Some(_)) => {
            return Err(GatewayError::Listeners(
                "https listener without [https] config",
            ))
        }
        _ => None,
    };
    let backchannel_tls = match (&config.backchannel.cert, &config.backchannel.key) {
        (Some(c), Some(k)) => Some(tls::acceptor(c, k)?),
        _ => None,
    };
    let ssh_public_port = match config.ssh.public_port {
        Some(p) => p,
        None => listeners
            .ssh
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(config.ssh.listen.port()),
    };
    let shared = Shared::build(config, ssh_public_port).await?;

    let grace = Duration::from_secs(shared.config.limits.shutdown_grace_secs);
    let opts = |name, tls| ServeOptions {
        name,
        tls,
        header_read_timeout: Duration::from_secs(shared.config.limits.header_read_timeout_secs),
        grace,
        max_header_bytes: shared.config.limits.max_header_bytes,
        max_headers: shared.config.limits.max_headers,
    };
    // Listeners that drain on shutdown; SSH and the refresher stop with a token of their own so
    // tunnels outlive the front door's drain.
    let tunnels_stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, tls, name) in [
        (listeners.http, None, "http"),
        (listeners.https, https_tls, "https"),
    ] {
        if let Some(listener) = listener {
            let s = shared.clone();
            tasks.spawn(serve(
                listener,
                opts(name, tls),
                move |req, peer, tls| http::front::handle(s.clone(), req, peer, tls),
                shutdown.clone(),
            ));
        }
    }
    let s = shared.clone();
    tasks.spawn(serve(
        listeners.backchannel,
        opts("backchannel", backchannel_tls),
        move |req, _, _| backchannel::handle(s.clone(), req),
        shutdown.clone(),
    ));
    let s = shared.clone();
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(serve(
        listeners.admin,
        opts("admin", None),
        move |req, _, _| admin::handle(s.clone(), req),
        admin_stop.clone(),
    ));
    let ssh_task = tokio::spawn(ssh::serve(
        listeners.ssh,
        shared.clone(),
        tunnels_stop.clone(),
    ));
    let refresher = tokio::spawn(
        refresh_loop(shared.clone(), tunnels_stop.clone())
            .instrument(tracing::info_span!("auth_refresh")),
    );

    shutdown.cancelled().await;
    shared.ready.store(false, Ordering::SeqCst);
    tracing::info!("shutting down: draining in-flight requests");
    while tasks.join_next().await.is_some() {}
    tunnels_stop.cancel();
    shared.tcp.close_all();
    // Requests are done: tell agents to go away (so they reconnect rather than wait for a
    // keepalive to fail), give the messages a moment to leave, then close what is left.
    shared.registry.go_away_all();
    let gone = async {
        while !shared.registry.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), gone).await;
    shared.registry.close_all("gateway shutting down");
    let _ = ssh_task.await;
    let _ = refresher.await;
    admin_stop.cancel();
    let _ = admin.await;
    shared.audit.flush(Duration::from_secs(5));
    tracing::info!("gateway stopped");
    Ok(())
}

/// Poll the store for changes; close tunnels of revoked registrations; count registration and
/// key events (made here, by the CLI or by another node); keep gauges current.
async fn refresh_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut seen = shared.auth.snapshot();
    let mut tick = tokio::time::interval(auth::REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match shared.auth.refresh_if_changed().await {
            // An allowlist may have been set for a connected agent's TCP service: open it.
            Ok(Some(_)) => {
                for session in shared.registry.all() {
                    tcp::open_for_session(&shared, &session).await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                // A stale snapshot may lack a registration made a moment ago: close nothing
                // on its word.
                tracing::warn!(error = %e, "store poll failed");
                shared
                    .metrics
                    .agents_connected
                    .set(shared.registry.len() as i64);
                continue;
            }
        }
        let snap = shared.auth.snapshot();
        if snap.version != seen.version {
            count_events(&shared.metrics, &seen, &snap);
            seen = snap.clone();
        }
        shared
            .registry
            .close_unless(|id| snap.registrations.contains_key(id));
        shared
            .metrics
            .agents_connected
            .set(shared.registry.len() as i64);
    }
}

/// Count registrations and keys that appeared or disappeared between two snapshots.
fn count_events(m: &metrics::Metrics, old: &auth::AuthSnapshot, new: &auth::AuthSnapshot) {
    use std::collections::HashSet;
    fn diff<'a>(counter: &prometheus::IntCounterVec, old: HashSet<&'a str>, new: HashSet<&'a str>) {
        let created = new.difference(&old).count() as u64;
        let revoked = old.difference(&new).count() as u64;
        if created > 0 {
            counter.with_label_values(&["created"]).inc_by(created);
        }
        if revoked > 0 {
            counter.with_label_values(&["revoked"]).inc_by(revoked);
        }
    }
    diff(
        &m.registration_events,
        old.registrations.keys().map(String::as_str).collect(),
        new.registrations.keys().map(String::as_str).collect(),
    );
    diff(
        &m.key_events,
        old.key_ids().collect(),
        new.key_ids().collect(),
    );
}
