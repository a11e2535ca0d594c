//! How far one SSH connection has come (connected, authenticated, forwarding), watched by its
//! connection task to enforce the deadlines, and how many sessions each registration holds.

use std::sync::Arc;

use dashmap::DashMap;

/// One connection's progress. Only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Connected, not authenticated.
    Connected,
    /// Authenticated as a registration; no forward yet.
    Authenticated,
    /// The tunnel's forward was granted.
    Forwarding,
}

/// Authenticated SSH sessions per registration, capped.
#[derive(Debug, Default)]
pub struct SessionCounts {
    held: DashMap<String, usize>,
}

/// One authenticated session's place in its registration's count; dropping it gives it back.
#[derive(Debug)]
pub struct SessionHold {
    counts: Arc<SessionCounts>,
    registration: String,
}

impl SessionCounts {
    /// A place for one more session of `registration`, unless it already holds `cap`.
    pub fn hold(self: &Arc<Self>, registration: &str, cap: usize) -> Option<SessionHold> {
        let mut n = self.held.entry(registration.to_owned()).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(SessionHold {
            counts: self.clone(),
            registration: registration.to_owned(),
        })
    }

    /// Sessions `registration` holds now.
    #[cfg(test)]
    pub fn held(&self, registration: &str) -> usize {
        self.held.get(registration).map_or(0, |n| *n)
    }
}

impl Drop for SessionHold {
    fn drop(&mut self) {
        // Remove the entry at zero so that the map only names registrations with sessions.
        self.counts.held.remove_if_mut(&self.registration, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_capped_per_registration_and_given_back() {
        let counts = Arc::new(SessionCounts::default());
        let a1 = counts.hold("a", 2).unwrap();
        let _a2 = counts.hold("a", 2).unwrap();
        assert!(counts.hold("a", 2).is_none(), "a third is refused");
        let _b = counts
            .hold("b", 2)
            .expect("other registrations are not affected");
        drop(a1);
        assert_eq!(counts.held("a"), 1);
        assert!(counts.hold("a", 2).is_some());
        assert!(
            Stage::Connected < Stage::Authenticated && Stage::Authenticated < Stage::Forwarding
        );
    }
}
