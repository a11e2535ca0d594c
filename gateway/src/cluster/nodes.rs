//! The cluster's membership tables on PostgreSQL: each node's row with a lease kept on the
//! database's clock (so nodes' clocks need not agree), the sweep of expired nodes, and the
//! presence of tunnels (which node holds which registration's session).

use std::time::Duration;

use sqlx::PgPool;

use crate::store::{random_id, StoreResult};

/// How long a lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(6);
/// How often a node renews its lease (three chances before it expires).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// The advisory lock whose holder sweeps expired nodes (one sweeper at a time).
const SWEEP_LOCK: i64 = 0x6732_6373_7765_6570; // "g2csweep"

/// A node as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRow {
    /// Fresh at every start (and after a lost lease).
    pub id: String,
    /// Where peers reach it, once it has a peer link.
    pub peer_addr: Option<String>,
    /// `active` or `draining`.
    pub state: String,
    /// Registrations whose tunnel it holds now.
    pub tunnels: i64,
}

fn lease_secs() -> f64 {
    LEASE.as_secs_f64()
}

/// Where a node is reached: by its peers, and by agents for a tunnel of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAddrs {
    /// The peer link's address (none: this node forwards nothing and takes no forwards).
    pub peer: Option<String>,
    /// The SSH address agents dial for this node.
    pub ssh: Option<String>,
}

/// Add a node with a fresh id and a lease; its id.
pub async fn join(pool: &PgPool, addrs: &NodeAddrs) -> StoreResult<String> {
    let id = random_id(12);
    sqlx::query(
        "INSERT INTO nodes (id, peer_addr, ssh_addr, state, lease_until)
         VALUES ($1, $2, $3, 'active', now() + make_interval(secs => $4))",
    )
    .bind(&id)
    .bind(&addrs.peer)
    .bind(&addrs.ssh)
    .bind(lease_secs())
    .execute(pool)
    .await?;
    Ok(id)
}

/// Extend `id`'s lease; false when it has none left (expired and swept, or taken): the node
/// must then drop what it holds and join again under a new id.
pub async fn renew(pool: &PgPool, id: &str) -> StoreResult<bool> {
    let n = sqlx::query(
        "UPDATE nodes SET lease_until = now() + make_interval(secs => $2)
         WHERE id = $1 AND lease_until > now()",
    )
    .bind(id)
    .bind(lease_secs())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Mark `id` draining (peers stop sending it work).
pub async fn set_draining(pool: &PgPool, id: &str) -> StoreResult<()> {
    sqlx::query("UPDATE nodes SET state = 'draining' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Remove `id` (its presence rows go with it).
pub async fn leave(pool: &PgPool, id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM nodes WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Delete nodes whose lease expired, if no other node is sweeping; how many went.
pub async fn sweep(pool: &PgPool) -> StoreResult<u64> {
    let mut tx = pool.begin().await?;
    let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SWEEP_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !ours {
        return Ok(0);
    }
    let n = sqlx::query("DELETE FROM nodes WHERE lease_until <= now()")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

/// Nodes with a live lease, with how many tunnels each holds.
pub async fn alive(pool: &PgPool) -> StoreResult<Vec<NodeRow>> {
    let rows: Vec<(String, Option<String>, String, i64)> = sqlx::query_as(
        "SELECT n.id, n.peer_addr, n.state, COUNT(p.registration_id)
         FROM nodes n LEFT JOIN tunnel_presence p ON p.node_id = n.id
         WHERE n.lease_until > now() GROUP BY n.id ORDER BY n.started_at, n.id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, peer_addr, state, tunnels)| NodeRow {
            id,
            peer_addr,
            state,
            tunnels,
        })
        .collect())
}

/// Record that `node` holds a session of `registration`.
pub async fn tunnel_up(
    pool: &PgPool,
    node: &str,
    registration: &str,
    session: u64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tunnel_presence (registration_id, node_id, session_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(registration)
    .bind(node)
    .bind(session.to_string())
    .execute(pool)
    .await?;
    Ok(())
}

/// Record that the session has ended.
pub async fn tunnel_down(
    pool: &PgPool,
    node: &str,
    registration: &str,
    session: u64,
) -> StoreResult<()> {
    sqlx::query(
        "DELETE FROM tunnel_presence WHERE registration_id = $1 AND node_id = $2 AND session_id = $3",
    )
    .bind(registration)
    .bind(node)
    .bind(session.to_string())
    .execute(pool)
    .await?;
    Ok(())
}

/// A tunnel another node holds, as the presence table says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The registration.
    pub registration: String,
    /// The holding node.
    pub node: String,
    /// Its peer-link address.
    pub peer_addr: String,
}

/// Tunnels held by active nodes other than `me` that have a peer link, oldest tunnel first.
pub async fn holdings(pool: &PgPool, me: &str) -> StoreResult<Vec<Holding>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT p.registration_id, n.id, n.peer_addr
         FROM tunnel_presence p JOIN nodes n ON n.id = p.node_id
         WHERE n.lease_until > now() AND n.state = 'active' AND n.id <> $1
           AND n.peer_addr IS NOT NULL
         ORDER BY p.since",
    )
    .bind(me)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(registration, node, peer_addr)| Holding {
            registration,
            node,
            peer_addr,
        })
        .collect())
}

/// Active nodes agents may dial: `(id, ssh address)`, in start order.
pub async fn agent_nodes(pool: &PgPool) -> StoreResult<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, ssh_addr FROM nodes
         WHERE lease_until > now() AND state = 'active' AND ssh_addr IS NOT NULL
         ORDER BY started_at, id",
    )
    .fetch_all(pool)
    .await?)
}
