//! What this node knows of the other nodes' tunnels: a cache of the presence table (which
//! active node holds which registration, and where its peer link listens), and the node list
//! agents are told of. Polled from PostgreSQL twice a second; a stale entry costs one "not
//! here" answer and a try of the next holder, never a wrong answer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use g2c_proto::NodeAddr;
use sqlx::PgPool;

use super::nodes;
use crate::core::remote::NodesView;
use crate::core::Core;
use crate::shutdown::Phase;

/// How often the presence cache and the node list are read again.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// A node holding a registration's tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its node id.
    pub node: String,
    /// Its peer-link address.
    pub addr: String,
}

/// Other nodes' tunnels, by registration.
#[derive(Default)]
pub struct Presence {
    holders: RwLock<HashMap<String, Vec<Holder>>>,
}

impl Presence {
    /// The nodes holding `registration`'s tunnel, as last read.
    pub fn holders(&self, registration: &str) -> Vec<Holder> {
        self.read().get(registration).cloned().unwrap_or_default()
    }

    /// Whether any other node holds `registration`.
    pub fn holds(&self, registration: &str) -> bool {
        self.read().contains_key(registration)
    }

    /// Registrations some other node holds.
    pub fn held(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<Holder>>> {
        self.holders.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Read the table again; how many registrations other nodes hold.
    pub async fn reload(&self, pool: &PgPool, me: &str) -> crate::store::StoreResult<usize> {
        let mut map: HashMap<String, Vec<Holder>> = HashMap::new();
        for h in nodes::holdings(pool, me).await? {
            let holders = map.entry(h.registration).or_default();
            if !holders.iter().any(|x| x.node == h.node) {
                holders.push(Holder {
                    node: h.node,
                    addr: h.peer_addr,
                });
            }
        }
        let n = map.len();
        *self.holders.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(n)
    }
}

/// Keep the presence cache and the agents' node list current until the gateway aborts.
pub async fn poll_loop(core: Arc<Core>, cluster: Arc<super::Cluster>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = core.shutdown.reached(Phase::Aborting);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let me = cluster.node_id();
        match cluster.presence.reload(&cluster.pool, &me).await {
            Ok(n) => core.metrics.cluster_remote_tunnels.set(n as i64),
            Err(e) => {
                // Keep what we knew: a holder that left answers "not here".
                core.metrics
                    .db_errors
                    .with_label_values(&["presence"])
                    .inc();
                tracing::debug!(error = %e, "presence poll failed");
                continue;
            }
        }
        if let Ok(rows) = nodes::agent_nodes(&cluster.pool).await {
            let view = NodesView {
                this: me,
                nodes: rows
                    .into_iter()
                    .map(|(id, ssh)| NodeAddr { id, ssh })
                    .collect(),
            };
            core.nodes.send_if_modified(|now| {
                let changed = now.as_deref() != Some(&view);
                if changed {
                    *now = Some(Arc::new(view));
                }
                changed
            });
        }
        core.metrics
            .cluster_tunnels_held
            .set(core.registry.len() as i64);
    }
}
