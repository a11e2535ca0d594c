//! The gateway's one shutdown, in named phases. Each part of the gateway waits for the phase
//! that concerns it, so the order lives here and nowhere else:
//!
//! 1. [`Phase::Announcing`] (cluster nodes only): readiness turns false and the node is marked
//!    draining for its peers, while it still serves everything, long enough for the load
//!    balancer's health check to take it out (`cluster.drain_announce_ms`).
//! 2. [`Phase::Draining`]: the HTTP listeners stop accepting; their requests in flight (and
//!    peers' streams through this node's tunnels) get the grace period.
//! 3. [`Phase::GoingAway`]: requests are done; public TCP ports close and agents are told to go
//!    away (so they reconnect elsewhere at once instead of waiting for a keepalive to fail).
//! 4. [`Phase::Aborting`]: what is left is closed: tunnels, the SSH listener, the admin API.

use tokio::sync::watch;

/// Where the gateway is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Running,
    /// Still serving, but not ready: the load balancer and the peers are being told.
    Announcing,
    /// Not accepting callers; in-flight requests finishing.
    Draining,
    /// Requests done; agents told to go away.
    GoingAway,
    /// Closing everything that is left.
    Aborting,
}

/// The shared shutdown state: cheap to clone, one writer (the composition root).
#[derive(Clone)]
pub struct Shutdown {
    phase: watch::Sender<Phase>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            phase: watch::Sender::new(Phase::Running),
        }
    }
}

impl Shutdown {
    /// Enter `phase` (phases only move forward).
    pub fn enter(&self, phase: Phase) {
        self.phase.send_if_modified(|now| {
            let later = phase > *now;
            if later {
                tracing::info!(?phase, "shutdown phase");
                *now = phase;
            }
            later
        });
    }

    /// Whether `phase` has been reached.
    pub fn reached_now(&self, phase: Phase) -> bool {
        *self.phase.borrow() >= phase
    }

    /// Resolves once `phase` has been reached.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|now| *now >= phase).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward_and_waiters_wake_at_theirs() {
        let s = Shutdown::default();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.reached(Phase::GoingAway).await }
        });
        s.enter(Phase::Draining);
        assert!(s.reached_now(Phase::Draining) && !s.reached_now(Phase::GoingAway));
        assert!(!waiter.is_finished());
        s.enter(Phase::Aborting);
        s.enter(Phase::Draining);
        assert!(s.reached_now(Phase::Aborting), "no way back");
        waiter.await.unwrap();
    }
}
