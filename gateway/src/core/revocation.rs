//! Revocation of live work: every response and upgraded connection that a key opened holds a
//! lease (a cancellation token) on that key, and the credential cache cancels a key's lease
//! the moment a snapshot without the key is installed. That is how revoking a key ends its
//! open WebSocket and streaming responses, here or on any node that reloads from the store.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// The leases of keys with live work, by key id.
#[derive(Debug, Default)]
pub struct Revocations {
    leases: Mutex<HashMap<String, CancellationToken>>,
}

impl Revocations {
    /// A lease on `key_id`, cancelled when the key is revoked. `live_now` says whether the
    /// snapshot in force still has the key; it is asked under the lock [`Self::retain`] takes,
    /// after the snapshot was installed, so a lease taken during a reload is never missed.
    pub fn lease(&self, key_id: &str, live_now: impl FnOnce() -> bool) -> CancellationToken {
        let mut leases = self.leases.lock().expect("revocations lock poisoned");
        if let Some(token) = leases.get(key_id) {
            return token.clone();
        }
        let token = CancellationToken::new();
        if live_now() {
            leases.insert(key_id.to_owned(), token.clone());
        } else {
            token.cancel();
        }
        token
    }

    /// Cancel and forget the lease of every key `live` no longer accepts; returns how many.
    pub fn retain(&self, live: impl Fn(&str) -> bool) -> usize {
        let mut leases = self.leases.lock().expect("revocations lock poisoned");
        let before = leases.len();
        leases.retain(|id, token| {
            let keep = live(id);
            if !keep {
                tracing::info!(key = %id, "key revoked: ending its live connections");
                token.cancel();
            }
            keep
        });
        before - leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_key_cancels_its_leases_and_only_its_own() {
        let r = Revocations::default();
        let a = r.lease("a", || true);
        let a2 = r.lease("a", || unreachable!("the lease exists"));
        let b = r.lease("b", || true);
        assert_eq!(r.retain(|id| id != "a"), 1);
        assert!(a.is_cancelled() && a2.is_cancelled());
        assert!(!b.is_cancelled());
        // A lease asked for after the reload that dropped the key is born cancelled.
        assert!(r.lease("a", || false).is_cancelled());
        assert!(!r.lease("b", || true).is_cancelled());
    }
}
