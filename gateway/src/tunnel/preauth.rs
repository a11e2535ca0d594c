//! Connections that have not authenticated yet: each gets a ticket; at most
//! `limits.ssh_max_unauthenticated` tickets exist, and a new connection past that closes the
//! oldest unauthenticated one (like OpenSSH's MaxStartups, but oldest-first: a real agent
//! authenticates within milliseconds, so a flood of idle sockets evicts itself, not the agent).
//! The deadline itself is enforced by the connection task (`limits.ssh_preauth_timeout_secs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The set of unauthenticated connections.
pub struct PreAuth {
    cap: usize,
    next: AtomicU64,
    pending: Mutex<BTreeMap<u64, CancellationToken>>,
}

/// One unauthenticated connection's place; cancelled when it is evicted. Dropping it (auth
/// done, or the connection gone) frees the place.
pub struct Ticket {
    id: u64,
    /// Cancelled when a newer connection evicts this one.
    pub evicted: CancellationToken,
    set: Arc<PreAuth>,
}

impl PreAuth {
    /// A set holding at most `cap` connections.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            next: AtomicU64::new(0),
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    /// Admit a new connection; returns its ticket and whether an older one was evicted.
    pub fn admit(self: &Arc<Self>) -> (Ticket, bool) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut dropped = false;
        while pending.len() >= self.cap {
            if let Some((_, oldest)) = pending.pop_first() {
                oldest.cancel();
                dropped = true;
            }
        }
        pending.insert(id, evicted.clone());
        (
            Ticket {
                id,
                evicted,
                set: self.clone(),
            },
            dropped,
        )
    }

    /// Unauthenticated connections now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.set
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_the_oldest_is_evicted_and_dropped_tickets_free_places() {
        let set = PreAuth::new(2);
        let (a, ea) = set.admit();
        let (b, _) = set.admit();
        assert!(!ea && set.len() == 2);
        let (c, evicted) = set.admit();
        assert!(evicted && a.evicted.is_cancelled() && !b.evicted.is_cancelled());
        drop(b);
        let (_d, evicted) = set.admit();
        assert!(!evicted && !c.evicted.is_cancelled());
    }
}
