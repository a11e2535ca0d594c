//! The cluster wing: when the store is PostgreSQL, this node is one of several. It keeps its
//! row in `nodes` alive with a lease on the database's clock, sweeps nodes whose lease ran out,
//! records which registrations' tunnels it holds, and marks itself draining at shutdown. A
//! node that finds its lease gone (it hung past the lease, and was swept) closes every tunnel
//! it holds, so nothing stale is served, and joins again under a new id.
//!
//! With a `[cluster]` section the node also has a peer link: [`peer_server`] takes other
//! nodes' streams to the tunnels it holds, [`forward::Forwarder`] reaches tunnels other nodes
//! hold (known from [`presence`]), for the front door and the public TCP ports alike.

pub mod forward;
pub mod nodes;
pub mod peer_server;
pub mod peer_tls;
pub mod presence;

use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use crate::core::metrics::Metrics;
use crate::core::registry::SessionEvent;
use crate::core::Core;
use crate::shutdown::Phase;
use crate::store::StoreResult;
use nodes::NodeAddrs;
use peer_tls::PeerTls;
use presence::Presence;

/// This node's membership.
pub struct Cluster {
    pool: PgPool,
    node: RwLock<String>,
    addrs: NodeAddrs,
    /// Other nodes' tunnels as last read.
    pub presence: Arc<Presence>,
    /// The dialling half of the peer link, when this node has one.
    pub forwarder: Option<Arc<forward::Forwarder>>,
    /// The peer link's TLS, when this node has one.
    pub tls: Option<PeerTls>,
}

impl Cluster {
    /// Join the cluster on `pool`, reachable at `addrs`, with the peer link's `tls` if any.
    pub async fn join(
        pool: PgPool,
        addrs: NodeAddrs,
        tls: Option<PeerTls>,
        metrics: &Metrics,
    ) -> StoreResult<Arc<Self>> {
        let id = nodes::join(&pool, &addrs).await?;
        tracing::info!(peer = ?addrs.peer, ssh = ?addrs.ssh, node = %id, "joined the cluster");
        let presence = Arc::new(Presence::default());
        let forwarder = tls.clone().map(|t| {
            Arc::new(forward::Forwarder::new(
                presence.clone(),
                t,
                metrics.clone(),
            ))
        });
        Ok(Arc::new(Self {
            pool,
            node: RwLock::new(id),
            addrs,
            presence,
            forwarder,
            tls,
        }))
    }

    /// This node's current id.
    pub fn node_id(&self) -> String {
        self.node.read().expect("node lock poisoned").clone()
    }
}

/// Renew the lease and sweep until the gateway aborts; mark the node draining when shutdown
/// begins, and leave at the end.
pub async fn membership_loop(core: Arc<Core>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(nodes::RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let draining = core.shutdown.reached(Phase::Announcing);
    let stop = core.shutdown.reached(Phase::Aborting);
    tokio::pin!(draining, stop);
    let mut marked = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut draining, if !marked => {
                marked = true;
                if let Err(e) = nodes::set_draining(&cluster.pool, &cluster.node_id()).await {
                    tracing::warn!(error = %e, "could not mark the node draining");
                }
                continue;
            }
            _ = &mut stop => break,
        }
        renew_or_rejoin(&core, &cluster).await;
        match nodes::sweep(&cluster.pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(swept = n, "expired nodes removed"),
            Err(e) => tracing::debug!(error = %e, "sweep failed"),
        }
        if let Ok(alive) = nodes::alive(&cluster.pool).await {
            core.metrics.cluster_nodes_alive.set(alive.len() as i64);
        }
    }
    let _ = nodes::leave(&cluster.pool, &cluster.node_id()).await;
}

async fn renew_or_rejoin(core: &Core, cluster: &Cluster) {
    let id = cluster.node_id();
    match nodes::renew(&cluster.pool, &id).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::error!(node = %id, "this node's lease was lost: closing its tunnels and joining again");
            core.metrics
                .cluster_lease_lost
                .with_label_values(&["expired"])
                .inc();
            core.registry.close_all("the node's cluster lease was lost");
            match nodes::join(&cluster.pool, &cluster.addrs).await {
                Ok(new) => {
                    tracing::info!(node = %new, "joined the cluster again");
                    *cluster.node.write().expect("node lock poisoned") = new;
                }
                Err(e) => tracing::warn!(error = %e, "could not join the cluster again"),
            }
        }
        // The database is away: keep serving; the lease is checked again next tick.
        Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
    }
}

/// Record the tunnels this node holds as they come and go.
pub async fn presence_loop(core: Arc<Core>, cluster: Arc<Cluster>) {
    let mut events = core.registry.subscribe();
    let stop = core.shutdown.reached(Phase::Aborting);
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = &mut stop => return,
        };
        let Some(event) = event else { return };
        let node = cluster.node_id();
        let done = match &event {
            SessionEvent::Up(s) => {
                nodes::tunnel_up(&cluster.pool, &node, &s.registration_id, s.id).await
            }
            SessionEvent::Down {
                registration,
                session,
            } => nodes::tunnel_down(&cluster.pool, &node, registration, *session).await,
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "tunnel presence not recorded");
        }
    }
}
