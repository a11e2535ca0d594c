//! What the PostgreSQL store's operations share: the write lock, bumping the state version
//! (with a notification to every node), rows to the store's types, and port allocation
//! inside a transaction.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::store::*;

/// The advisory lock every writing transaction takes first: writes are rare, and one at a
/// time across all nodes makes port allocation and token use as simple as SQLite's
/// `BEGIN IMMEDIATE`.
pub(super) const WRITE_LOCK: i64 = 0x6732_6377_7269_7465; // "g2cwrite"

/// The channel nodes `LISTEN` on; the payload is the new state version.
pub const CHANGES_CHANNEL: &str = "g2c_state";

pub(super) async fn write_lock(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Bump the version and notify (delivered at commit, to every listening node).
pub(super) async fn bump(conn: &mut PgConnection) -> StoreResult<()> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE state_version SET version = version + 1, changed_at = clock_timestamp() \
         WHERE id = 1 RETURNING version",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(version.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Every port handed out: tunnel ports and TCP service ports, sorted.
pub(super) async fn used_ports(conn: &mut PgConnection) -> StoreResult<Vec<i64>> {
    let mut used: Vec<i64> = sqlx::query_scalar(
        "SELECT tunnel_port FROM registrations UNION SELECT port FROM tcp_services",
    )
    .fetch_all(conn)
    .await?;
    used.sort_unstable();
    Ok(used)
}

/// Get or allocate a TCP service row inside a (write-locked) transaction, within the
/// registration's quota.
pub(super) async fn ensure_tcp(
    conn: &mut PgConnection,
    registration_id: &str,
    service: &str,
    ports: PortRange,
) -> StoreResult<TcpService> {
    let row = sqlx::query(
        "SELECT registration_id, service, port, allow_cidrs FROM tcp_services
         WHERE registration_id = $1 AND service = $2",
    )
    .bind(registration_id)
    .bind(service)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(tcp_from(&row));
    }
    let tunnel_port: i64 = sqlx::query_scalar(
        "SELECT tunnel_port FROM registrations WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(registration_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound("registration"))?;
    let held: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tcp_services WHERE registration_id = $1")
            .bind(registration_id)
            .fetch_one(&mut *conn)
            .await?;
    if held >= i64::from(ports.per_registration) {
        return Err(StoreError::PortQuota(ports.per_registration));
    }
    let tunnel_taken: Option<String> =
        sqlx::query_scalar("SELECT service FROM tcp_services WHERE port = $1")
            .bind(tunnel_port)
            .fetch_optional(&mut *conn)
            .await?;
    let port = if tunnel_taken.is_none() {
        tunnel_port as u16
    } else {
        lowest_free(&used_ports(&mut *conn).await?, ports)?
    };
    sqlx::query("INSERT INTO tcp_services (registration_id, service, port) VALUES ($1, $2, $3)")
        .bind(registration_id)
        .bind(service)
        .bind(i64::from(port))
        .execute(&mut *conn)
        .await?;
    Ok(TcpService {
        registration_id: registration_id.to_owned(),
        service: service.to_owned(),
        port,
        allow: Vec::new(),
    })
}

pub(super) fn tcp_from(row: &PgRow) -> TcpService {
    let allow: String = row.get("allow_cidrs");
    TcpService {
        registration_id: row.get("registration_id"),
        service: row.get("service"),
        port: row.get::<i64, _>("port") as u16,
        allow: allow
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

pub(super) fn registration_from(row: &PgRow) -> Registration {
    Registration {
        id: row.get("id"),
        name: row.get("name"),
        public_key: row.get("public_key"),
        tunnel_port: row.get::<i64, _>("tunnel_port") as u16,
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
    }
}

pub(super) fn key_from(row: &PgRow) -> ApiKeyInfo {
    ApiKeyInfo {
        id: row.get("id"),
        registration_id: row.get("registration_id"),
        service: row.get("service"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
    }
}

pub(super) fn token_from(row: &PgRow) -> TokenInfo {
    TokenInfo {
        id: row.get("id"),
        uses_left: row.get("uses_left"),
        expires_at: row.get("expires_at"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
    }
}
