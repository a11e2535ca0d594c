//! What every HTTP listener enforces on a connection before and between requests: caps on open
//! connections in total and per source address (trusted proxies exempt from the latter), a
//! deadline for the first request (TLS, the HTTP/1-or-2 sniff and the head all inside it), and
//! an idle timeout after which a connection with nothing in flight is closed gracefully (HTTP/2
//! gets a GOAWAY; HTTP/1's idle time is also bounded by hyper's header-read timeout).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use prometheus::{IntCounterVec, IntGaugeVec};
use tokio::time::Instant;

use crate::core::cidr::Cidr;

/// Caps of one listener.
#[derive(Clone)]
pub struct ConnCaps {
    /// Most connections open at once.
    pub total: usize,
    /// Most connections open at once from one source address.
    pub per_source: usize,
    /// The trusted proxies (`trusted_proxies`): the per-source cap does not apply to them,
    /// and the serve loop tells the front door which connections come from them.
    pub exempt: Arc<[Cidr]>,
}

/// The connections open on one listener, by source.
pub struct ConnCounts {
    name: &'static str,
    caps: ConnCaps,
    total: AtomicU64,
    by_source: DashMap<IpAddr, usize>,
    open: IntGaugeVec,
    refused: IntCounterVec,
}

/// One admitted connection's place; dropping it gives it back.
pub struct ConnSlot {
    counts: Arc<ConnCounts>,
    source: Option<IpAddr>,
}

impl ConnCounts {
    /// Counts for the listener `name`, reported on `open` (listener) and `refused` (listener,
    /// reason).
    pub fn new(
        name: &'static str,
        caps: ConnCaps,
        open: IntGaugeVec,
        refused: IntCounterVec,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            caps,
            total: AtomicU64::new(0),
            by_source: DashMap::new(),
            open,
            refused,
        })
    }

    /// A place for a connection from `source` (`exempt`: a trusted proxy, not capped per
    /// source), or `None` (counted) past a cap.
    pub fn admit(self: &Arc<Self>, source: IpAddr, exempt: bool) -> Option<ConnSlot> {
        let total = self.total.fetch_add(1, Ordering::AcqRel);
        if total >= self.caps.total as u64 {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.refuse("total");
            return None;
        }
        let counted = !exempt;
        if counted {
            let mut n = self.by_source.entry(source).or_insert(0);
            if *n >= self.caps.per_source {
                drop(n);
                self.total.fetch_sub(1, Ordering::AcqRel);
                self.refuse("per_source");
                return None;
            }
            *n += 1;
        }
        self.open.with_label_values(&[self.name]).inc();
        Some(ConnSlot {
            counts: self.clone(),
            source: counted.then_some(source),
        })
    }

    fn refuse(&self, reason: &str) {
        tracing::debug!(listener = self.name, reason, "connection refused at a cap");
        self.refused.with_label_values(&[self.name, reason]).inc();
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let c = &self.counts;
        c.total.fetch_sub(1, Ordering::AcqRel);
        c.open.with_label_values(&[c.name]).dec();
        if let Some(source) = self.source {
            c.by_source.remove_if_mut(&source, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
    }
}

/// What the serve loop's service tells the connection's deadlines: requests started, and
/// responses given. Two relaxed counters: no lock, no allocation per request.
#[derive(Default)]
pub struct Activity {
    started: AtomicU64,
    answered: AtomicU64,
}

impl Activity {
    /// A request head arrived.
    pub fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// Its response head went out.
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.answered.load(Ordering::Relaxed),
        )
    }
}

/// Which deadline closed a connection (a metric label).
pub const FIRST_REQUEST: &str = "first_request";
/// See [`FIRST_REQUEST`].
pub const IDLE: &str = "idle";

/// What to do when a connection's timer fires.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No request at all by the first deadline: drop it (nothing to be graceful about).
    Drop,
    /// Idle for a whole period with nothing in flight: shut down gracefully.
    Close,
    /// Still in use: look again at this instant.
    Again(Instant),
}

/// One connection's deadlines: the first request by a deadline, then no idle period longer
/// than `idle`.
pub struct Deadlines {
    activity: Arc<Activity>,
    idle: Duration,
    seen: Option<u64>,
}

impl Deadlines {
    /// Deadlines over `activity`.
    pub fn new(activity: Arc<Activity>, idle: Duration) -> Self {
        Self {
            activity,
            idle,
            seen: None,
        }
    }

    /// The timer fired at `now`.
    pub fn fired(&mut self, now: Instant) -> Verdict {
        let (started, answered) = self.activity.snapshot();
        match self.seen {
            None if started == 0 => Verdict::Drop,
            Some(before) if before == started && started == answered => Verdict::Close,
            _ => {
                self.seen = Some(started);
                Verdict::Again(now + self.idle)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: usize, per_source: usize, exempt: &[&str]) -> Arc<ConnCounts> {
        let open = IntGaugeVec::new(prometheus::Opts::new("o", "o"), &["listener"]).unwrap();
        let refused =
            IntCounterVec::new(prometheus::Opts::new("r", "r"), &["listener", "reason"]).unwrap();
        let exempt: Vec<Cidr> = exempt.iter().map(|c| c.parse().unwrap()).collect();
        let caps = ConnCaps {
            total,
            per_source,
            exempt: exempt.into(),
        };
        ConnCounts::new("http", caps, open, refused)
    }

    #[test]
    fn caps_per_source_and_in_total_with_exempt_proxies() {
        let c = counts(5, 2, &["10.0.0.0/8"]);
        let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let b: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        let lb: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let a1 = c.admit(a, false).unwrap();
        let _a2 = c.admit(a, false).unwrap();
        assert!(c.admit(a, false).is_none(), "a third from one source");
        let _b1 = c.admit(b, false).unwrap();
        let _lb1 = c.admit(lb, true).unwrap();
        let _lb2 = c.admit(lb, true).unwrap();
        assert!(
            c.admit(lb, true).is_none(),
            "the total applies to proxies too"
        );
        drop(a1);
        assert!(
            c.admit(a, false).is_some(),
            "a place freed is a place again"
        );
        assert_eq!(
            c.refused.with_label_values(&["http", "per_source"]).get(),
            1
        );
        assert_eq!(c.refused.with_label_values(&["http", "total"]).get(), 1);
    }

    #[test]
    fn a_silent_connection_is_dropped_and_an_idle_one_closed_but_not_one_in_use() {
        let now = Instant::now();
        let idle = Duration::from_secs(5);
        let activity = Arc::new(Activity::default());
        let mut d = Deadlines::new(activity.clone(), idle);
        assert_eq!(d.fired(now), Verdict::Drop, "nothing by the first deadline");

        let mut d = Deadlines::new(activity.clone(), idle);
        activity.started();
        assert_eq!(
            d.fired(now),
            Verdict::Again(now + idle),
            "one request in flight"
        );
        assert_eq!(d.fired(now), Verdict::Again(now + idle), "still in flight");
        activity.answered();
        activity.started();
        activity.answered();
        assert_eq!(
            d.fired(now),
            Verdict::Again(now + idle),
            "a new request in the period"
        );
        assert_eq!(d.fired(now), Verdict::Close, "a whole period with nothing");
    }
}
