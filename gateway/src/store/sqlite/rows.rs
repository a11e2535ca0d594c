//! What the SQLite store's operations share: mapping rows to the store's types, bumping the
//! state version, and allocating public ports inside a transaction.

use sqlx::{Row, SqliteConnection};

use crate::store::*;

pub(super) async fn bump(conn: &mut SqliteConnection) -> StoreResult<()> {
    sqlx::query("UPDATE state_version SET version = version + 1 WHERE id = 1")
        .execute(conn)
        .await?;
    Ok(())
}

/// Every port handed out: tunnel ports and TCP service ports.
pub(super) async fn used_ports(conn: &mut SqliteConnection) -> StoreResult<Vec<i64>> {
    let mut used: Vec<i64> = sqlx::query_scalar(
        "SELECT tunnel_port FROM registrations UNION SELECT port FROM tcp_services",
    )
    .fetch_all(conn)
    .await?;
    used.sort_unstable();
    Ok(used)
}

pub(super) fn tcp_from(row: &sqlx::sqlite::SqliteRow) -> TcpService {
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

/// Get or allocate a TCP service row inside a transaction, within the registration's quota.
pub(super) async fn ensure_tcp(
    conn: &mut SqliteConnection,
    registration_id: &str,
    service: &str,
    ports: PortRange,
) -> StoreResult<TcpService> {
    let row = sqlx::query(
        "SELECT registration_id, service, port, allow_cidrs FROM tcp_services WHERE registration_id = ? AND service = ?",
    )
    .bind(registration_id)
    .bind(service)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(tcp_from(&row));
    }
    let tunnel_port: i64 = sqlx::query_scalar(
        "SELECT tunnel_port FROM registrations WHERE id = ? AND revoked_at IS NULL",
    )
    .bind(registration_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound("registration"))?;
    let held: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tcp_services WHERE registration_id = ?")
            .bind(registration_id)
            .fetch_one(&mut *conn)
            .await?;
    if held >= i64::from(ports.per_registration) {
        return Err(StoreError::PortQuota(ports.per_registration));
    }
    let tunnel_taken: Option<String> =
        sqlx::query_scalar("SELECT service FROM tcp_services WHERE port = ?")
            .bind(tunnel_port)
            .fetch_optional(&mut *conn)
            .await?;
    let port = if tunnel_taken.is_none() {
        tunnel_port as u16
    } else {
        lowest_free(&used_ports(&mut *conn).await?, ports)?
    };
    sqlx::query("INSERT INTO tcp_services (registration_id, service, port) VALUES (?, ?, ?)")
        .bind(registration_id)
        .bind(service)
        .bind(i64::from(port))
        .execute(&mut *conn)
        .await?;
    let info = TcpService {
        registration_id: registration_id.to_owned(),
        service: service.to_owned(),
        port,
        allow: Vec::new(),
    };
    Ok(info)
}

pub(super) fn registration_from(row: &sqlx::sqlite::SqliteRow) -> Registration {
    Registration {
        id: row.get("id"),
        name: row.get("name"),
        public_key: row.get("public_key"),
        tunnel_port: row.get::<i64, _>("tunnel_port") as u16,
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
    }
}

pub(super) fn key_from(row: &sqlx::sqlite::SqliteRow) -> ApiKeyInfo {
    ApiKeyInfo {
        id: row.get("id"),
        registration_id: row.get("registration_id"),
        service: row.get("service"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
    }
}

pub(super) fn token_from(row: &sqlx::sqlite::SqliteRow) -> TokenInfo {
    TokenInfo {
        id: row.get("id"),
        uses_left: row.get("uses_left"),
        expires_at: row.get("expires_at"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
    }
}
