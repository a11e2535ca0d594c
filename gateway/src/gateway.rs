//! The composition root: builds the core and the wings, wires them to their listeners, and
//! runs the one shutdown through its phases. Nothing imports this module back; the wings meet
//! only through the core (the registry's session events, the credential cache's changes) and
//! what is handed to them here.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::api::admin::{self, Admin};
use crate::api::admin_gate::AdminGate;
use crate::api::backchannel::{self, Backchannel};
use crate::body::ProxyBody;
use crate::cluster::{self, Cluster};
use crate::config::GatewayConfig;
use crate::core::remote::Remote;
use crate::core::Core;
use crate::error::GatewayError;
use crate::front::Front;
use crate::http_serve::{serve, ConnService, ServeOptions};
use crate::listeners::{BoundAddrs, Listeners};
use crate::public_tcp::PublicTcp;
use crate::shutdown::Phase;
use crate::{hostkey, tls};

/// How long agents told to go away get to leave before their tunnels are closed.
const GO_AWAY_GRACE: Duration = Duration::from_millis(500);
/// The same in a cluster, where an agent first opens its replacement tunnel on another node.
const CLUSTER_GO_AWAY_GRACE: Duration = Duration::from_secs(5);

/// A gateway with its listeners bound and its state loaded, ready to serve.
pub struct Gateway {
    listeners: Listeners,
    core: Arc<Core>,
    host_key: russh::keys::PrivateKey,
    https_tls: Option<TlsAcceptor>,
    backchannel_tls: Option<TlsAcceptor>,
    admin_gate: AdminGate,
    cluster: Option<Arc<Cluster>>,
}

impl Gateway {
    /// Bind every listener `config` names and load the state.
    pub async fn bind(config: GatewayConfig) -> Result<Self, GatewayError> {
        let listeners = Listeners::bind(&config).await?;
        Self::new(listeners, config).await
    }

    /// A gateway on already-bound `listeners` (tests bind `127.0.0.1:0`).
    pub async fn new(listeners: Listeners, config: GatewayConfig) -> Result<Self, GatewayError> {
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
        if let Ok(addr) = listeners.backchannel.local_addr() {
            if backchannel::exposed_without_tls(addr, backchannel_tls.is_some()) {
                tracing::warn!(%addr, "the backchannel listens beyond loopback without TLS: a registration's answer pins the SSH host key, and anyone on the path could substitute theirs; set backchannel.cert and backchannel.key");
            }
        }
        let host_key = hostkey::load_or_generate(&config.ssh.host_key)?;
        let admin_gate = AdminGate::load(&config)?;
        let (core, cluster) = open_core(config, &listeners).await?;
        Ok(Self {
            listeners,
            core,
            host_key,
            https_tls,
            backchannel_tls,
            admin_gate,
            cluster,
        })
    }

    /// The addresses actually bound.
    pub fn addrs(&self) -> std::io::Result<BoundAddrs> {
        self.listeners.addrs()
    }

    /// Serve until `shutdown` fires, then shut down in phases: stop accepting callers and
    /// drain them, tell agents to go away, close what is left.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let Self {
            listeners: l,
            core,
            host_key,
            https_tls,
            backchannel_tls,
            admin_gate,
            cluster,
        } = self;
        let ssh_public_port = match core.config.ssh.public_port {
            Some(p) => p,
            None => l
                .ssh
                .local_addr()
                .map(|a| a.port())
                .unwrap_or(core.config.ssh.listen.port()),
        };
        let remote = cluster
            .as_ref()
            .and_then(|c| c.forwarder.clone())
            .map(|f| f as Arc<dyn Remote>);
        let front = Front::new(core.clone(), remote.clone());
        let tcp = PublicTcp::start(core.clone(), remote);
        let admin = Arc::new(Admin {
            core: core.clone(),
            tcp,
            gate: admin_gate,
        });
        let backchannel = Arc::new(Backchannel {
            core: core.clone(),
            host_key_public: g2c_proto::sshkeys::public_openssh(host_key.public_key()),
            ssh_public_port,
        });
        let workers = crate::workers::Workers::start(crate::workers::Workers::configured_count())
            .map_err(GatewayError::Workers)?;
        let opts = |name, tls| serve_options(&core, name, tls);
        let until = |phase| {
            let core = core.clone();
            async move { core.shutdown.reached(phase).await }
        };
        let mut draining = JoinSet::new();
        for (listener, tls, name) in [(l.http, None, "http"), (l.https, https_tls, "https")] {
            if let Some(listener) = listener {
                let front = front.clone();
                // Plain HTTP shows its first request to pick the tunnel's worker; TLS does not.
                let steer = tls.is_none().then(|| {
                    let front = front.clone();
                    Arc::new(move |head: &[u8]| crate::front::steer::worker_for(&front, head))
                        as crate::http_serve::Steer
                });
                let make = move |conn| crate::front::stack(&front, conn);
                let opts = ServeOptions {
                    workers: Some(workers.clone()),
                    steer,
                    ..opts(name, tls)
                };
                draining.spawn(serve(listener, opts, make, until(Phase::Draining)));
            }
        }
        let make = move |_| handler(backchannel.clone(), backchannel::handle);
        let bc_opts = opts("backchannel", backchannel_tls);
        draining.spawn(serve(l.backchannel, bc_opts, make, until(Phase::Draining)));
        let make = move |_| handler(admin.clone(), admin::handle);
        if let (Some(peer), Some(tls)) = (l.peer, cluster.as_ref().and_then(|c| c.tls.clone())) {
            draining.spawn(cluster::peer_server::serve(peer, core.clone(), tls));
        }
        let mut last = JoinSet::new();
        last.spawn(serve(
            l.admin,
            opts("admin", None),
            make,
            until(Phase::Aborting),
        ));
        last.spawn(crate::tunnel::serve(
            l.ssh,
            core.clone(),
            host_key,
            workers.clone(),
        ));
        last.spawn(crate::core::refresh_loop(core.clone()));
        if let Some(c) = cluster {
            last.spawn(cluster::membership_loop(core.clone(), c.clone()));
            last.spawn(cluster::presence_loop(core.clone(), c.clone()));
            last.spawn(cluster::presence::poll_loop(core.clone(), c));
        }

        shutdown.cancelled().await;
        if let Some(c) = &core.config.cluster {
            // Still serving, not ready: the load balancer's health check and the peers
            // (the node is marked draining) take this node out before it stops accepting.
            core.shutdown.enter(Phase::Announcing);
            tokio::time::sleep(Duration::from_millis(c.drain_announce_ms)).await;
        }
        core.shutdown.enter(Phase::Draining);
        draining.join_all().await;
        core.shutdown.enter(Phase::GoingAway);
        core.registry.go_away_all();
        let grace = match core.config.cluster {
            Some(_) => CLUSTER_GO_AWAY_GRACE,
            None => GO_AWAY_GRACE,
        };
        let _ = tokio::time::timeout(grace, core.registry.emptied()).await;
        core.shutdown.enter(Phase::Aborting);
        core.registry.close_all("gateway shutting down");
        last.join_all().await;
        core.tasks().close();
        let grace = Duration::from_secs(core.config.limits.shutdown_grace_secs);
        if tokio::time::timeout(grace, core.tasks().wait())
            .await
            .is_err()
        {
            tracing::warn!(left = core.tasks().len(), "tasks still running at exit");
        }
        // What is left on the workers is dropped with them.
        tokio::task::spawn_blocking(move || workers.stop())
            .await
            .ok();
        core.audit.flush(Duration::from_secs(5));
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// The core on the configured store, and this node's cluster membership when that store is
/// PostgreSQL (shared with other nodes), with its peer link when `[cluster]` is configured.
async fn open_core(
    config: GatewayConfig,
    listeners: &Listeners,
) -> Result<(Arc<Core>, Option<Arc<Cluster>>), GatewayError> {
    use crate::store::{PgStore, SqliteStore, Store};
    if config.store.url.is_none() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.store.path).await?);
        return Ok((Core::with_store(config, store).await?, None));
    }
    let tls = config
        .cluster
        .as_ref()
        .map(cluster::peer_tls::PeerTls::load)
        .transpose()?;
    if tls.is_none() {
        tracing::warn!("store.url without [cluster]: this node shares the store but forwards nothing to other nodes and takes no forwards");
    }
    let addrs = node_addrs(&config, listeners);
    let pg = PgStore::open(&config.store).await?;
    let pool = pg.pool().clone();
    let core = Core::with_store(config, Arc::new(pg)).await?;
    let cluster = Cluster::join(pool, addrs, tls, &core.metrics).await?;
    Ok((core, Some(cluster)))
}

/// Where peers and agents reach this node: the advertised addresses, or the bound ones.
fn node_addrs(config: &GatewayConfig, listeners: &Listeners) -> cluster::nodes::NodeAddrs {
    let Some(c) = &config.cluster else {
        return Default::default();
    };
    let bound = listeners.addrs().ok();
    let peer = c
        .peer_advertise
        .clone()
        .or_else(|| bound.as_ref().and_then(|b| b.peer).map(|a| a.to_string()));
    let ssh = c.ssh_advertise.clone().or_else(|| {
        let addr = bound.as_ref()?.ssh;
        if addr.ip().is_unspecified() {
            tracing::warn!(%addr, "the SSH listener binds every address: set cluster.ssh_advertise so agents can reach this node directly");
            return None;
        }
        Some(addr.to_string())
    });
    cluster::nodes::NodeAddrs { peer, ssh }
}

fn serve_options(core: &Core, name: &'static str, tls: Option<TlsAcceptor>) -> ServeOptions {
    let limits = &core.config.limits;
    ServeOptions {
        name,
        tls,
        header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
        grace: Duration::from_secs(limits.shutdown_grace_secs),
        max_header_bytes: limits.max_header_bytes,
        max_headers: limits.max_headers,
        tasks: core.tasks().clone(),
        workers: None,
        steer: None,
        caps: crate::conn_guard::ConnCaps {
            total: limits.max_connections,
            per_source: limits.max_connections_per_source,
            exempt: core.config.trusted_proxy_networks().into(),
        },
        idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
        h2_keepalive: Duration::from_secs(limits.h2_keepalive_secs),
        open: core.metrics.http_connections_open.clone(),
        refused: core.metrics.http_connections_refused.clone(),
        timed_out: core.metrics.http_connections_timed_out.clone(),
    }
}

/// An API handler (`fn(state, request) -> response`) as the service of one connection.
pub(crate) fn handler<T, F, Fut>(state: Arc<T>, f: F) -> impl ConnService
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    tower::service_fn(move |req| {
        let answer = f(state.clone(), req);
        async move { Ok::<_, Infallible>(answer.await) }
    })
}

/// Run the gateway on `listeners` until `shutdown` fires.
pub async fn run(
    listeners: Listeners,
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    Gateway::new(listeners, config).await?.serve(shutdown).await
}
