//! [`Store`] on PostgreSQL, for several gateway nodes sharing one database. Same semantics as
//! the SQLite store, checked by the one contract suite (`tests/tests/store_contract.rs`):
//! every write takes one advisory lock first (writes are rare; one at a time across nodes),
//! bumps the state version and notifies [`CHANGES_CHANNEL`]. The pool reconnects by itself;
//! while the database is away, operations fail with [`StoreError::Unavailable`].

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row;

mod listen;
mod rows;
mod schema;

pub use rows::CHANGES_CHANNEL;

use super::*;
use rows::*;
use schema::MIGRATIONS;

/// PostgreSQL-backed store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

const REG_COLS: &str = "id, name, public_key, tunnel_port, created_at, revoked_at";

impl PgStore {
    /// Connect with `config`'s URL, pool size and timeouts, and apply pending migrations.
    pub fn open(config: &crate::config::StoreConfig) -> BoxFuture<'_, StoreResult<Self>> {
        async move {
            let url = config
                .url
                .as_deref()
                .ok_or_else(|| StoreError::Invalid("store.url is not set".into()))?;
            let timeout = config.statement_timeout_ms.to_string();
            let opts = PgConnectOptions::from_str(url)?
                .application_name("g2c-gateway")
                .options([("statement_timeout", timeout.as_str())]);
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(Duration::from_secs(config.connect_timeout_secs))
                .connect_with(opts)
                .await?;
            let store = Self { pool };
            store.migrate().await?;
            Ok(store)
        }
        .boxed()
    }

    /// The pool, for the cluster's own tables (nodes, presence) and `LISTEN`.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Boxed: sqlx's executor bounds defeat `Send` inference in the caller otherwise.
    fn migrate(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.migrate_impl().boxed()
    }

    async fn migrate_impl(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        write_lock(&mut tx).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&mut *tx)
            .await?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_none() {
                // One statement at a time (the schema has no `;` inside statements).
                for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    sqlx::query(stmt).execute(&mut *tx).await?;
                }
                sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                    .bind(*version)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn revoke(&self, table: &'static str, what: &'static str, id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        write_lock(&mut tx).await?;
        let sql =
            format!("UPDATE {table} SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL");
        let n = sqlx::query(&sql)
            .bind(now_unix())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            let exists: Option<String> =
                sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(what));
            }
        }
        if table == "registrations" {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE registration_id = $2 AND revoked_at IS NULL",
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
            expires_at: ttl.map(|t| now.saturating_add(t.as_secs() as i64)),
            created_at: now,
            revoked_at: None,
        };
        let mut tx = self.pool.begin().await?;
        write_lock(&mut tx).await?;
        sqlx::query(
            "INSERT INTO tokens (id, hash, uses_left, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
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

    async fn register_impl(
        &self,
        token: &str,
        name: Option<&str>,
        public_key: &str,
        ports: PortRange,
    ) -> StoreResult<Registration> {
        let now = now_unix();
        let mut tx = self.pool.begin().await?;
        write_lock(&mut tx).await?;
        let row =
            sqlx::query("SELECT id, uses_left, expires_at, revoked_at FROM tokens WHERE hash = $1")
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
            sqlx::query("UPDATE tokens SET uses_left = uses_left - 1 WHERE id = $1")
                .bind(&token_id)
                .execute(&mut *tx)
                .await?;
        }
        // Lowest port never handed out (revoked registrations keep theirs).
        let port = lowest_free(&used_ports(&mut tx).await?, ports)?;
        let id = loop {
            let candidate = random_id(10);
            let taken: Option<String> =
                sqlx::query_scalar("SELECT id FROM registrations WHERE id = $1")
                    .bind(&candidate)
                    .fetch_optional(&mut *tx)
                    .await?;
            if taken.is_none() {
                break candidate;
            }
        };
        sqlx::query(
            "INSERT INTO registrations (id, name, public_key, tunnel_port, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
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
        let mut tx = self.pool.begin().await?;
        write_lock(&mut tx).await?;
        let live: Option<String> =
            sqlx::query_scalar("SELECT id FROM registrations WHERE id = $1 AND revoked_at IS NULL")
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
            "INSERT INTO api_keys (id, hash, registration_id, service, created_at) VALUES ($1, $2, $3, $4, $5)",
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

    async fn set_tcp_allow_impl(
        &self,
        registration_id: &str,
        service: &str,
        allow: &[String],
        ports: PortRange,
    ) -> StoreResult<TcpService> {
        let canonical = canonical_allow(allow)?;
        let mut tx = self.pool.begin().await?;
        write_lock(&mut tx).await?;
        let mut info = ensure_tcp(&mut tx, registration_id, service, ports).await?;
        sqlx::query(
            "UPDATE tcp_services SET allow_cidrs = $1 WHERE registration_id = $2 AND service = $3",
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

    async fn auth_data_impl(&self) -> StoreResult<AuthData> {
        // One snapshot of all three tables.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let regs = sqlx::query(&format!(
            "SELECT {REG_COLS} FROM registrations WHERE revoked_at IS NULL"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let keys = sqlx::query(
            "SELECT id, hash, registration_id, service, created_at, revoked_at FROM api_keys WHERE revoked_at IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let tcp = sqlx::query(
            "SELECT t.registration_id, t.service, t.port, t.allow_cidrs FROM tcp_services t
             JOIN registrations r ON r.id = t.registration_id WHERE r.revoked_at IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
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

impl Store for PgStore {
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
                "SELECT id, uses_left, expires_at, created_at, revoked_at FROM tokens ORDER BY created_at, id",
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
                "SELECT {REG_COLS} FROM registrations WHERE id = $1"
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
                 WHERE ($1::text IS NULL OR registration_id = $1) ORDER BY created_at, id",
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
        self.set_tcp_allow_impl(registration_id, service, allow, ports)
            .boxed()
    }

    fn tcp_services<'a>(
        &'a self,
        registration_id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<TcpService>>> {
        async move {
            let rows = sqlx::query(
                "SELECT registration_id, service, port, allow_cidrs FROM tcp_services
                 WHERE ($1::text IS NULL OR registration_id = $1) ORDER BY port",
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

    fn change_age(&self) -> BoxFuture<'_, StoreResult<Option<std::time::Duration>>> {
        async move {
            let ms: f64 = sqlx::query_scalar(
                "SELECT (EXTRACT(EPOCH FROM clock_timestamp() - changed_at) * 1000)::float8 \
                 FROM state_version WHERE id = 1",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(Some(std::time::Duration::from_secs_f64(
                ms.max(0.0) / 1000.0,
            )))
        }
        .boxed()
    }

    fn watch_changes(
        &self,
        wake: std::sync::Arc<tokio::sync::Notify>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        listen::spawn(self.pool.clone(), wake, stop);
    }

    fn auth_data(&self) -> BoxFuture<'_, StoreResult<AuthData>> {
        self.auth_data_impl().boxed()
    }
}
