//! Persistent state: enrollment tokens, registrations and API keys, behind the [`Store`] trait,
//! on an embedded SQLite file (one node) or on PostgreSQL (several nodes sharing it).
//!
//! Secrets (tokens, API keys) are stored only as SHA-256 hashes; the plaintext is returned once,
//! at creation. Every mutation bumps a version number so running gateways can cheaply notice
//! changes made by another process (the CLI, another node) and refresh their caches.

mod postgres;
mod schema;
mod sqlite;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

pub use postgres::{PgStore, CHANGES_CHANNEL};
pub use sqlite::SqliteStore;

/// Open the store `config` names: PostgreSQL when it has a `url`, else the SQLite file.
pub async fn open(config: &crate::config::StoreConfig) -> StoreResult<std::sync::Arc<dyn Store>> {
    Ok(match &config.url {
        Some(_) => std::sync::Arc::new(PgStore::open(config).await?),
        None => std::sync::Arc::new(SqliteStore::open(&config.path).await?),
    })
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store: {0}")]
    Db(sqlx::Error),
    /// The database cannot be reached now (down, restarting, the pool exhausted): worth a
    /// retry, unlike [`StoreError::Db`].
    #[error("store unreachable: {0}")]
    Unavailable(sqlx::Error),
    /// The enrollment token is unknown, revoked, expired or used up.
    #[error("enrollment token rejected: {0}")]
    TokenRejected(&'static str),
    /// The named object does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// No free port is left in the configured range.
    #[error("no free port left in the configured range")]
    PortsExhausted,
    /// The registration already holds as many TCP service ports as it may.
    #[error("the registration already holds its {0} TCP service ports")]
    PortQuota(u16),
    /// The input is unacceptable (e.g. a malformed public key).
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl From<sqlx::Error> for StoreError {
    /// Tell a database that is away (connection refused or lost, pool timed out, the server
    /// shutting down or starting) from one that failed the statement.
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let away = match &e {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
            // 08: connection exception; 57P01-03: admin/crash shutdown, cannot connect now.
            E::Database(d) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        };
        if away {
            Self::Unavailable(e)
        } else {
            Self::Db(e)
        }
    }
}

/// Lowest port of `ports` not in `used` (sorted).
pub(crate) fn lowest_free(used: &[i64], ports: PortRange) -> StoreResult<u16> {
    (ports.start..=ports.end)
        .find(|p| used.binary_search(&i64::from(*p)).is_err())
        .ok_or(StoreError::PortsExhausted)
}

/// The canonical form of an allowlist (each entry parsed, so what is stored always parses).
pub(crate) fn canonical_allow(allow: &[String]) -> StoreResult<Vec<String>> {
    allow
        .iter()
        .map(|c| {
            c.parse::<crate::core::cidr::Cidr>()
                .map(|cidr| cidr.to_string())
                .map_err(|e| StoreError::Invalid(e.to_string()))
        })
        .collect()
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    /// Registration ID (SSH user name, routing key).
    pub id: String,
    /// Operator-friendly name.
    pub name: Option<String>,
    /// Agent public key, OpenSSH format.
    pub public_key: String,
    /// Port the agent forwards; first public TCP port.
    pub tunnel_port: u16,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
}

/// An enrollment token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Short id for listing and revoking.
    pub id: String,
    /// Registrations it may still create; `None` = unlimited.
    pub uses_left: Option<i64>,
    /// Unix seconds after which it is refused.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
}

/// An API key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    /// Short id, safe to log.
    pub id: String,
    /// The one registration this key may call.
    pub registration_id: String,
    /// The one HTTP service of it this key may call; `None`: any of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
}

/// A freshly created secret, shown once.
#[derive(Clone, Serialize)]
pub struct Created<T> {
    /// What was created.
    #[serde(flatten)]
    pub info: T,
    /// The plaintext secret.
    pub secret: String,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Created<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("info", &self.info)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A TCP service's stable public port and its source allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpService {
    /// Registration the service belongs to.
    pub registration_id: String,
    /// Service name in the agent's config.
    pub service: String,
    /// Public port on the gateway.
    pub port: u16,
    /// Source networks allowed to connect (CIDR); empty = closed.
    pub allow: Vec<String>,
}

/// Everything the request path needs to authenticate, loaded at once.
#[derive(Debug, Clone, Default)]
pub struct AuthData {
    /// TCP services of live registrations.
    pub tcp: Vec<TcpService>,
    /// Live (non-revoked) registrations.
    pub registrations: Vec<Registration>,
    /// Live keys with their hashes: `(sha256 hex, info)`.
    pub keys: Vec<(String, ApiKeyInfo)>,
}

/// The shared public port range and how much of it one registration may hold: every tenant
/// allocates from the same range, so one must never be able to take it all.
#[derive(Debug, Clone, Copy)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
    /// Most TCP service ports one registration may hold.
    pub per_registration: u16,
}

/// Result alias.
pub type StoreResult<T> = Result<T, StoreError>;

/// The gateway's persistent state. Object-safe so a PostgreSQL implementation can sit beside
/// SQLite without touching callers.
pub trait Store: Send + Sync + 'static {
    /// Create an enrollment token.
    fn create_token(
        &self,
        uses: Option<u32>,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, StoreResult<Created<TokenInfo>>>;
    /// All tokens.
    fn list_tokens(&self) -> BoxFuture<'_, StoreResult<Vec<TokenInfo>>>;
    /// Revoke a token by id.
    fn revoke_token<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<()>>;
    /// Consume one use of `token` and create a registration for `public_key`.
    fn register<'a>(
        &'a self,
        token: &'a str,
        name: Option<&'a str>,
        public_key: &'a str,
        ports: PortRange,
    ) -> BoxFuture<'a, StoreResult<Registration>>;
    /// One registration (revoked ones included).
    fn registration<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Registration>>;
    /// All registrations.
    fn list_registrations(&self) -> BoxFuture<'_, StoreResult<Vec<Registration>>>;
    /// Revoke a registration and all its keys.
    fn revoke_registration<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<()>>;
    /// Create an API key for a live registration, any of its services.
    fn create_key<'a>(
        &'a self,
        registration_id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Created<ApiKeyInfo>>> {
        self.create_scoped_key(registration_id, None)
    }
    /// Create an API key for a live registration, limited to one of its HTTP services when
    /// `service` is given (an operator handing one team the reporting server only).
    fn create_scoped_key<'a>(
        &'a self,
        registration_id: &'a str,
        service: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Created<ApiKeyInfo>>>;
    /// Keys, optionally of one registration.
    fn list_keys<'a>(
        &'a self,
        registration_id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<ApiKeyInfo>>>;
    /// Revoke an API key by id.
    fn revoke_key<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<()>>;
    /// Replace a TCP service's allowlist; empty closes it. This, an operator's act, is the
    /// only thing that allocates a public port (a registration's first TCP service gets its
    /// tunnel port), within the registration's quota: what an agent announces never does.
    fn set_tcp_allow<'a>(
        &'a self,
        registration_id: &'a str,
        service: &'a str,
        allow: &'a [String],
        ports: PortRange,
    ) -> BoxFuture<'a, StoreResult<TcpService>>;
    /// TCP services, optionally of one registration.
    fn tcp_services<'a>(
        &'a self,
        registration_id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Vec<TcpService>>>;
    /// Counter bumped by every mutation.
    fn version(&self) -> BoxFuture<'_, StoreResult<i64>>;
    /// How long ago the last mutation was, on the store's own clock (so no node's clock skew
    /// enters it): how late a node applies another node's revocation. `None` where the store
    /// does not track it (the embedded store has no other writers to wait for).
    fn change_age(&self) -> BoxFuture<'_, StoreResult<Option<std::time::Duration>>> {
        Box::pin(async { Ok(None) })
    }
    /// Wake `wake` whenever another process may have changed the state (PostgreSQL's LISTEN
    /// on [`CHANGES_CHANNEL`]) until `stop`; the caller keeps polling too, since a
    /// notification can be lost. Stores with no such channel do nothing.
    fn watch_changes(
        &self,
        _wake: std::sync::Arc<tokio::sync::Notify>,
        _stop: tokio_util::sync::CancellationToken,
    ) {
    }
    /// Live registrations and keys.
    fn auth_data(&self) -> BoxFuture<'_, StoreResult<AuthData>>;
}

/// Register `public_key` by an operator's hand, for a site that cannot run the agent (stock
/// `ssh -R`): the same registration an agent gets, made with a one-use token that is revoked
/// at once, so the store keeps one way in. The key is checked and stored in canonical form.
pub async fn register_by_hand(
    store: &dyn Store,
    name: Option<&str>,
    public_key: &str,
    ports: PortRange,
) -> StoreResult<Registration> {
    let key = g2c_proto::sshkeys::parse_public(public_key.trim())
        .map_err(|_| StoreError::Invalid("public_key is not an OpenSSH public key".into()))?;
    if let Some(name) = name {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "name must be 1 to 64 printable characters".into(),
            ));
        }
    }
    let token = store
        .create_token(Some(1), Some(Duration::from_secs(60)))
        .await?;
    let registered = store
        .register(
            &token.secret,
            name,
            &g2c_proto::sshkeys::public_openssh(&key),
            ports,
        )
        .await;
    store.revoke_token(&token.info.id).await?;
    registered
}

/// A key's service scope as stored: lowercased (callers' choices are matched that way), and
/// shaped like a service name.
pub fn service_scope(service: Option<&str>) -> StoreResult<Option<String>> {
    let Some(name) = service else { return Ok(None) };
    let name = name.trim().to_ascii_lowercase();
    if !crate::front::route::valid_service(&name) {
        return Err(StoreError::Invalid(format!(
            "{name:?} is not a service name (letters, digits, - and _)"
        )));
    }
    Ok(Some(name))
}

/// SHA-256 of a secret: what the request path looks keys up by (no allocation).
pub fn digest_secret(secret: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// SHA-256 hex digest of a secret, as stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(digest_secret(secret))
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Random lowercase alphanumeric string starting with a letter (DNS-label safe).
pub fn random_id(len: usize) -> String {
    use rand::Rng;
    const LETTERS: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(len);
    s.push(LETTERS[rng.gen_range(0..LETTERS.len())] as char);
    for _ in 1..len {
        s.push(ALNUM[rng.gen_range(0..ALNUM.len())] as char);
    }
    s
}

/// A high-entropy secret with a recognisable prefix (`g2ct_` tokens, `g2ck_` keys), so leaked
/// secrets are easy to spot and grep for.
pub fn random_secret(prefix: &str) -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}
