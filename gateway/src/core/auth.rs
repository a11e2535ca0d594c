//! In-memory view of who may call what, refreshed from the store whenever its version changes.
//!
//! The request path authenticates against this snapshot (one hash and two map look-ups, no
//! database round trip); a background task polls the store's version counter so revocations made
//! by the CLI or another gateway node take effect within [`REFRESH_INTERVAL`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::cidr::Cidr;
use crate::store::{digest_secret, ApiKeyInfo, Registration, Store, StoreResult};

/// How often the store's version is polled.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(250);

/// Live registrations and keys at one store version.
#[derive(Debug, Default)]
pub struct AuthSnapshot {
    /// Store version this was loaded at.
    pub version: i64,
    /// Live registrations by id.
    pub registrations: HashMap<String, Registration>,
    keys_by_digest: HashMap<[u8; 32], LiveKey>,
    /// Allowlists by registration, then service.
    tcp_allow: HashMap<String, HashMap<String, Vec<Cidr>>>,
}

/// A live API key and its lease: one cancellation token per key, carried from snapshot to
/// snapshot while the key lives and cancelled by the reload that drops it, so the work a key
/// opened ends with it. Found with the key in one look-up.
#[derive(Debug, Clone)]
pub struct LiveKey {
    /// The key.
    pub info: ApiKeyInfo,
    /// Its lease.
    pub lease: CancellationToken,
}

impl AuthSnapshot {
    /// Whether `ip` may connect to a registration's TCP service (fail closed).
    pub fn tcp_allowed(&self, registration: &str, service: &str, ip: IpAddr) -> bool {
        self.tcp_allow
            .get(registration)
            .and_then(|services| services.get(service))
            .is_some_and(|list| super::cidr::allowed(list, ip))
    }

    /// IDs of the live API keys.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys_by_digest.values().map(|k| k.info.id.as_str())
    }

    /// The live key matching this plaintext secret, with its lease, if any.
    pub fn key(&self, secret: &str) -> Option<&LiveKey> {
        self.key_by_digest(&digest_secret(secret))
    }

    /// The live key whose secret has this digest ([`digest_secret`]), if any.
    pub fn key_by_digest(&self, digest: &[u8; 32]) -> Option<&LiveKey> {
        self.keys_by_digest.get(digest)
    }
}

/// Shared, refreshable snapshot.
pub struct AuthCache {
    store: Arc<dyn Store>,
    current: RwLock<Arc<AuthSnapshot>>,
    /// Serialises reloads: two overlapping reloads could otherwise finish out of order and
    /// install the older data last (a key created a moment ago would then be refused).
    reload: tokio::sync::Mutex<()>,
    /// The version of the snapshot in force, for wings that follow changes.
    version: tokio::sync::watch::Sender<i64>,
}

impl AuthCache {
    /// Load the first snapshot.
    pub async fn load(store: Arc<dyn Store>) -> StoreResult<Self> {
        let cache = Self {
            store,
            current: RwLock::new(Arc::default()),
            reload: tokio::sync::Mutex::new(()),
            version: tokio::sync::watch::Sender::new(0),
        };
        cache.refresh().await?;
        Ok(cache)
    }

    /// The current snapshot (cheap: an `Arc` clone under a briefly held read lock).
    pub fn snapshot(&self) -> Arc<AuthSnapshot> {
        self.current.read().expect("auth lock poisoned").clone()
    }

    /// Follow the snapshot's version: changes whenever a reload installed newer data.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.version.subscribe()
    }

    /// Reload unconditionally.
    pub async fn refresh(&self) -> StoreResult<Arc<AuthSnapshot>> {
        let _one_at_a_time = self.reload.lock().await;
        self.reload_locked().await
    }

    async fn reload_locked(&self) -> StoreResult<Arc<AuthSnapshot>> {
        let version = self.store.version().await?;
        let data = self.store.auth_data().await?;
        let old = self.snapshot();
        let mut leases: HashMap<&str, &CancellationToken> = old
            .keys_by_digest
            .values()
            .map(|k| (k.info.id.as_str(), &k.lease))
            .collect();
        let snap = Arc::new(AuthSnapshot {
            version,
            registrations: data
                .registrations
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect(),
            keys_by_digest: data
                .keys
                .into_iter()
                .filter_map(|(hash, info)| {
                    let digest: [u8; 32] = hex::decode(&hash).ok()?.try_into().ok()?;
                    let lease = leases.remove(info.id.as_str()).cloned().unwrap_or_default();
                    Some((digest, LiveKey { info, lease }))
                })
                .collect(),
            tcp_allow: data.tcp.into_iter().fold(HashMap::new(), |mut acc, t| {
                let cidrs = t.allow.iter().filter_map(|c| c.parse().ok()).collect();
                acc.entry(t.registration_id)
                    .or_insert_with(HashMap::new)
                    .insert(t.service, cidrs);
                acc
            }),
        });
        *self.current.write().expect("auth lock poisoned") = snap.clone();
        self.version.send_replace(version);
        // After the install: a request that took a lease from the old snapshot meanwhile
        // holds one of these tokens, and sees it cancelled. What is left in `leases` are the
        // keys the new snapshot dropped.
        for (id, lease) in leases {
            tracing::info!(key = %id, "key revoked: ending its live connections");
            lease.cancel();
        }
        Ok(snap)
    }

    /// Look up a key; on a miss, pick up store changes first (a key created a moment ago by the
    /// CLI works at once). Unknown keys cost one version query, not a table load.
    pub async fn key(&self, secret: &str) -> Option<(Arc<AuthSnapshot>, LiveKey)> {
        let snap = self.snapshot();
        if let Some(k) = snap.key(secret) {
            return Some((snap.clone(), k.clone()));
        }
        // Another request may have refreshed meanwhile: whatever happened, look again in the
        // newest snapshot.
        if let Err(e) = self.refresh_if_changed().await {
            tracing::warn!(error = %e, "store poll failed");
        }
        let snap = self.snapshot();
        let k = snap.key(secret)?.clone();
        Some((snap, k))
    }

    /// Reload if the store changed; returns the new snapshot when it did.
    pub async fn refresh_if_changed(&self) -> StoreResult<Option<Arc<AuthSnapshot>>> {
        let _one_at_a_time = self.reload.lock().await;
        let version = self.store.version().await?;
        if version == self.snapshot().version {
            return Ok(None);
        }
        self.reload_locked().await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PortRange, SqliteStore};

    const AGENT_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoO77y3o9L9fItc8Lm9cP9mP6pRSA0kwuMdoO6DNAFg t";

    #[tokio::test]
    async fn a_lease_lives_across_reloads_with_its_key_and_ends_with_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("g.db")).await.unwrap());
        let token = store.create_token(Some(1), None).await.unwrap().secret;
        let ports = PortRange {
            start: 40000,
            end: 40010,
            per_registration: 4,
        };
        let reg = store
            .register(&token, None, AGENT_KEY, ports)
            .await
            .unwrap()
            .id;
        let a = store.create_key(&reg).await.unwrap();
        let b = store.create_key(&reg).await.unwrap();
        let cache = AuthCache::load(store.clone()).await.unwrap();
        // Taken from this snapshot, as a request would.
        let lease_a = cache.snapshot().key(&a.secret).unwrap().lease.clone();
        let lease_b = cache.snapshot().key(&b.secret).unwrap().lease.clone();

        // A reload that keeps both keys carries the leases (a fresh token here would leave
        // the ones already handed out uncancellable).
        store.create_key(&reg).await.unwrap();
        cache.refresh().await.unwrap();
        assert!(!lease_a.is_cancelled() && !lease_b.is_cancelled());

        store.revoke_key(&a.info.id).await.unwrap();
        let snap = cache.refresh().await.unwrap();
        assert!(lease_a.is_cancelled(), "the revoked key's work ends");
        assert!(!lease_b.is_cancelled(), "another key's does not");
        assert!(snap.key(&a.secret).is_none());
        assert!(!snap.key(&b.secret).unwrap().lease.is_cancelled());
        assert_eq!(snap.key_ids().count(), 2);
    }
}
