//! [`Store`] on an embedded SQLite file (WAL mode, so the CLI and a running gateway can share it).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

mod rows;

use super::schema::MIGRATIONS;
use super::*;
use rows::*;

/// SQLite-backed store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) the database file and apply pending migrations.
    ///
    /// Boxed so callers' futures stay `Send` (sqlx's executor bounds defeat inference otherwise).
    pub fn open(path: &Path) -> BoxFuture<'_, StoreResult<Self>> {
        async move {
            // Switching to WAL and migrating need a moment of exclusive access: when another
            // process (the CLI, a second gateway) holds it, retry briefly instead of failing.
            let mut attempt = 0;
            loop {
                match Self::open_impl(path).await {
                    Err(StoreError::Db(sqlx::Error::Database(e)))
                        if attempt < 50 && e.code().as_deref() == Some("5") =>
                    {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(20 * attempt.min(10))).await;
                    }
                    other => return other,
                }
            }
        }
        .boxed()
    }

    async fn open_impl(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Invalid(format!("store directory: {e}")))?;
            }
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_none() {
                // One statement at a time (the schema has no `;` inside statements).
                for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    sqlx::query(stmt).execute(&mut *tx).await?;
                }
                sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
                    .bind(*version)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

const REG_COLS: &str = "id, name, public_key, tunnel_port, created_at, revoked_at";

impl SqliteStore {
    async fn revoke(&self, table: &'static str, what: &'static str, id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let sql = format!("UPDATE {table} SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL");
        let n = sqlx::query(&sql)
            .bind(now_unix())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            let exists: Option<String> =
                sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE id = ?"))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(what));
            }
        }
        if table == "registrations" {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = ? WHERE registration_id = ? AND revoked_at IS NULL",
            )
            .bind(now_unix())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn register_impl(
        &self,
        token: &str,
        name: Option<&str>,
        public_key: &str,
        ports: PortRange,
    ) -> StoreResult<Registration> {
        let now = now_unix();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row =
            sqlx::query("SELECT id, uses_left, expires_at, revoked_at FROM tokens WHERE hash = ?")
                .bind(hash_secret(token))
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::TokenRejected("unknown token"))?;
        let token_id: String = row.get("id");
        let uses_left: Option<i64> = row.get("uses_left");
        let expires_at: Option<i64> = row.get("expires_at");
        let revoked_at: Option<i64> = row.get("revoked_at");
        if revoked_at.is_some() {
            return Err(StoreError::TokenRejected("token revoked"));
        }
        if expires_at.is_some_and(|t| t <= now) {
            return Err(StoreError::TokenRejected("token expired"));
        }
        if uses_left.is_some_and(|n| n <= 0) {
            return Err(StoreError::TokenRejected("token used up"));
        }
        if uses_left.is_some() {
            sqlx::query("UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ?")
                .bind(&token_id)
                .execute(&mut *tx)
                .await?;
        }
        // Lowest port never handed out, as a tunnel port or a TCP service's (revoked
        // registrations keep theirs, so traffic for an old registration can never reach a new
        // one).
        let port = lowest_free(&used_ports(&mut tx).await?, ports)?;
        let id = loop {
            let candidate = random_id(10);
            let taken: Option<String> =
                sqlx::query_scalar("SELECT id FROM registrations WHERE id = ?")
                    .bind(&candidate)
                    .fetch_optional(&mut *tx)
                    .await?;
            if taken.is_none() {
                break candidate;
            }
        };
        sqlx::query("INSERT INTO registrations (id, name, public_key, tunnel_port, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&id)
            .bind(name)
            .bind(public_key)
            .bind(i64::from(port))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(Registration {
            id,
            name: name.map(str::to_owned),
            public_key: public_key.to_owned(),
            tunnel_port: port,
            created_at: now,
            revoked_at: None,
        })
    }

    async fn create_key_impl(
        &self,
        registration_id: &str,
        service: Option<&str>,
    ) -> StoreResult<Created<ApiKeyInfo>> {
        let service = service_scope(service)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let live: Option<String> =
            sqlx::query_scalar("SELECT id FROM registrations WHERE id = ? AND revoked_at IS NULL")
                .bind(registration_id)
                .fetch_optional(&mut *tx)
                .await?;
        if live.is_none() {
            return Err(StoreError::NotFound("registration"));
        }
        let secret = random_secret("g2ck_");
        let info = ApiKeyInfo {
            id: random_id(8),
            registration_id: registration_id.to_owned(),
            service,
            created_at: now_unix(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, hash, registration_id, service, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&info.id)
        .bind(hash_secret(&secret))
        .bind(registration_id)
        .bind(&info.service)
        .bind(info.created_at)
        .execute(&mut *tx)
        .await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(Created { info, secret })
    }

    async fn create_token_impl(
        &self,
        uses: Option<u32>,
        ttl: Option<Duration>,
    ) -> StoreResult<Created<TokenInfo>> {
        let now = now_unix();
        let secret = random_secret("g2ct_");
        let info = TokenInfo {
            id: random_id(8),
            uses_left: uses.map(i64::from),
            expires_at: ttl.map(|t| now + t.as_secs() as i64),
            created_at: now,
            revoked_at: None,
        };
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO tokens (id, hash, uses_left, expires_at, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&info.id)
            .bind(hash_secret(&secret))
            .bind(info.uses_left)
            .bind(info.expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(Created { info, secret })
    }

    async fn auth_data_impl(&self) -> StoreResult<AuthData> {
        let regs = sqlx::query(&format!(
            "SELECT {REG_COLS} FROM registrations WHERE revoked_at IS NULL"
        ))
        .fetch_all(&self.pool)
        .await?;
        let keys = sqlx::query(
            "SELECT id, hash, registration_id, service, created_at, revoked_at FROM api_keys WHERE revoked_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let tcp = sqlx::query(
            "SELECT t.registration_id, t.service, t.port, t.allow_cidrs FROM tcp_services t
             JOIN registrations r ON r.id = t.registration_id WHERE r.revoked_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(AuthData {
            tcp: tcp.iter().map(tcp_from).collect(),
            registrations: regs.iter().map(registration_from).collect(),
            keys: keys
                .iter()
                .map(|r| (r.get::<String, _>("hash"), key_from(r)))
                .collect(),
        })
    }
}

impl Store for SqliteStore {
    fn create_token(
        &self,
        uses: Option<u32>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, StoreResult<Created<TokenInfo>>> {
        self.create_token_impl(uses, ttl).boxed()
    }

    fn list_tokens(&self) -> BoxFuture<'_, StoreResult<Vec<TokenInfo>>> {
        async move {
            let rows = sqlx::query(
                "SELECT id, uses_left, expires_at, created_at, revoked_at FROM tokens ORDER BY created_at",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.iter().map(token_from).collect())
        }
        .boxed()
    }

    fn revoke_token<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.revoke("tokens", "token", id).boxed()
    }

    fn register<'a>(
        &'a self,
        token: &'a str,
        name: Option<&'a str>,
        public_key: &'a str,
        ports: PortRange,
    ) -> BoxFuture<'a, StoreResult<Registration>> {
        self.register_impl(token, name, public_key, ports).boxed()
    }

    fn registration<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Registration>> {
        async move {
            let row = sqlx::query(&format!(
                "SELECT {REG_COLS} FROM registrations WHERE id = ?"
            ))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("registration"))?;
            Ok(registration_from(&row))
        }
        .boxed()
    }

    fn list_registrations(&self) -> BoxFuture<'_, StoreResult<Vec<Registration>>> {
        async move {
            let rows = sqlx::query(&format!(
                "SELECT {REG_COLS} FROM registrations ORDER BY created_at, id"
            ))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.iter().map(registration_from).collect())
        }
        .boxed()
    }

    fn revoke_registration<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.revoke("registrations", "registration", id).boxed()
    }

    fn create_scoped_key<'a>(
        &'a self,
        registration_id: &'a str,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Created<ApiKeyInfo>>> {
        self.create_key_impl(registration_id, service).boxed()
    }

    fn list_keys<'a>(
        &'a self,
        registration_id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<ApiKeyInfo>>> {
        async move {
            let rows = sqlx::query(
                "SELECT id, registration_id, service, created_at, revoked_at FROM api_keys
                 WHERE (?1 IS NULL OR registration_id = ?1) ORDER BY created_at, id",
            )
            .bind(registration_id)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.iter().map(key_from).collect())
        }
        .boxed()
    }

    fn revoke_key<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.revoke("api_keys", "key", id).boxed()
    }

    fn set_tcp_allow<'a>(
        &'a self,
        registration_id: &'a str,
        service: &'a str,
        allow: &'a [String],
        ports: PortRange,
    ) -> BoxFuture<'a, StoreResult<TcpService>> {
        async move {
            let canonical = canonical_allow(allow)?;
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut info = ensure_tcp(&mut tx, registration_id, service, ports).await?;
            sqlx::query(
                "UPDATE tcp_services SET allow_cidrs = ? WHERE registration_id = ? AND service = ?",
            )
            .bind(canonical.join(","))
            .bind(registration_id)
            .bind(service)
            .execute(&mut *tx)
            .await?;
            bump(&mut tx).await?;
            tx.commit().await?;
            info.allow = canonical;
            Ok(info)
        }
        .boxed()
    }

    fn tcp_services<'a>(
        &'a self,
        registration_id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<TcpService>>> {
        async move {
            let rows = sqlx::query(
                "SELECT registration_id, service, port, allow_cidrs FROM tcp_services
                 WHERE (?1 IS NULL OR registration_id = ?1) ORDER BY port",
            )
            .bind(registration_id)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.iter().map(tcp_from).collect())
        }
        .boxed()
    }

    fn version(&self) -> BoxFuture<'_, StoreResult<i64>> {
        async move {
            Ok(
                sqlx::query_scalar("SELECT version FROM state_version WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?,
            )
        }
        .boxed()
    }

    fn auth_data(&self) -> BoxFuture<'_, StoreResult<AuthData>> {
        self.auth_data_impl().boxed()
    }
}
