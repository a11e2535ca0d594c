//! The request inspector behind the GUI's Requests and Traffic pages, `/v1/requests`,
//! `/v1/metrics/series` and `g2c-agent requests`: the agent watches the HTTP/1.1 it already
//! relays on each tunnel stream ([`watch`]), and keeps the last requests in a bounded ring and
//! the last hour in coarse buckets ([`series`]). Nothing is parsed twice on the hot path: one
//! masked copy per head, counters per body.

pub mod cli;
pub mod entry;
pub mod mask;
pub mod replay;
pub mod series;
pub mod watch;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use g2c_proto::{error_code, AckCode};

pub use entry::{Entry, Failure};
pub use mask::Settings;
use series::{Series, SeriesView};

/// The agent's recent requests and traffic series, shared by every stream and the local API.
#[derive(Debug)]
pub struct Inspector {
    /// The ring and the series, updated together under one lock per request.
    store: Mutex<Store>,
    settings: RwLock<Arc<Settings>>,
    /// The latest sequence number recorded, for followers to wait on.
    latest: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Store {
    entries: VecDeque<Arc<Entry>>,
    next_seq: u64,
    /// How many entries are kept (`[inspector] keep`).
    keep: usize,
    series: Series,
}

impl Default for Inspector {
    fn default() -> Self {
        Self {
            store: Mutex::new(Store {
                keep: Settings::default().keep,
                ..Store::default()
            }),
            settings: RwLock::default(),
            latest: tokio::sync::watch::Sender::new(0),
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inspector {
    /// Apply `[inspector]` (masks, how many to keep); the ring shrinks at once if asked to.
    pub fn configure(&self, config: &crate::config::InspectorConfig) {
        let settings = Arc::new(Settings::from_config(config));
        let keep = settings.keep;
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
        let mut store = lock(&self.store);
        store.keep = keep;
        while store.entries.len() > keep {
            store.entries.pop_front();
        }
    }

    /// The settings streams start with.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keep `entry` (numbering it) and count it into the series.
    pub fn record(&self, mut entry: Entry) {
        let error = entry.failure.is_some() || entry.status.is_some_and(|s| s >= 500);
        let ended = entry.at_ms / 1000 + entry.duration_us / 1_000_000;
        let seq = {
            let mut store = lock(&self.store);
            store
                .series
                .add(&entry.service, ended, entry.duration_us, error);
            store.next_seq += 1;
            entry.seq = store.next_seq;
            store.entries.push_back(Arc::new(entry));
            while store.entries.len() > store.keep {
                store.entries.pop_front();
            }
            store.next_seq
        };
        self.latest.send_replace(seq);
    }

    /// Record a stream the agent refused before the request was sent (the app is down, its
    /// TLS is not trusted, or the service is unknown): the caller got an error from the
    /// gateway, and this is the agent's side of it.
    pub fn refused(&self, service: &str, request_id: &str, code: AckCode, message: String) {
        if !self.settings().enabled {
            return;
        }
        let (code, status) = code.caller_error();
        let who = match code {
            error_code::UNKNOWN_SERVICE => "agent",
            _ => "local_app",
        };
        self.record(Entry {
            at_ms: now_ms(),
            service: service.into(),
            refused_id: (!request_id.is_empty()).then(|| request_id.into()),
            status: Some(status),
            failure: Some(Failure { code, who, message }),
            ..Entry::default()
        });
    }

    /// Up to `limit` entries after sequence number `after` that pass `filter`, oldest first.
    pub fn list(
        &self,
        after: u64,
        limit: usize,
        filter: impl Fn(&Entry) -> bool,
    ) -> Vec<Arc<Entry>> {
        let ring = lock(&self.store);
        let newest_first: Vec<_> = ring
            .entries
            .iter()
            .rev()
            .take_while(|e| e.seq > after)
            .filter(|e| filter(e))
            .take(limit)
            .cloned()
            .collect();
        newest_first.into_iter().rev().collect()
    }

    /// One entry by its sequence number, while it is kept.
    pub fn get(&self, seq: u64) -> Option<Arc<Entry>> {
        let ring = lock(&self.store);
        let first = ring.entries.front()?.seq;
        let e = ring.entries.get(seq.checked_sub(first)? as usize)?;
        (e.seq == seq).then(|| e.clone())
    }

    /// The newest sequence number, to wait for the next with [`tokio::sync::watch`].
    pub fn follow(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Mark a tunnel going down on the charts' time axis.
    pub fn mark_reconnect(&self) {
        lock(&self.store).series.mark_reconnect(now_ms());
    }

    /// Sample the tunnel's byte totals (called every few seconds).
    pub fn sample_bytes(&self, total_in: u64, total_out: u64) {
        lock(&self.store)
            .series
            .sample_bytes(now_ms() / 1000, total_in, total_out);
    }

    /// The charts' data, for one service or all; `totals` are the tunnel's byte counters now.
    pub fn series(&self, service: Option<&str>, totals: (u64, u64)) -> SeriesView {
        lock(&self.store)
            .series
            .view(now_ms() / 1000, service, Some(totals))
    }

    /// How many entries are kept now.
    pub fn len(&self) -> usize {
        lock(&self.store).entries.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(service: &str, status: u16) -> Entry {
        Entry {
            at_ms: now_ms(),
            service: service.into(),
            status: Some(status),
            ..Entry::default()
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_numbers_them_in_order_and_lists_after_a_point() {
        let i = Inspector::default();
        i.configure(&crate::config::InspectorConfig {
            keep: 3,
            ..Default::default()
        });
        for n in 0..5 {
            i.record(entry("web", 200 + n));
        }
        assert_eq!(i.len(), 3);
        let all: Vec<u64> = i.list(0, 100, |_| true).iter().map(|e| e.seq).collect();
        assert_eq!(all, vec![3, 4, 5]);
        assert_eq!(i.list(4, 100, |_| true).len(), 1);
        assert_eq!(
            i.list(0, 2, |_| true)
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(i.get(4).unwrap().status, Some(203));
        assert!(i.get(1).is_none() && i.get(9).is_none());
        assert_eq!(*i.follow().borrow(), 5);
        let odd: Vec<u64> = i
            .list(0, 9, |e| e.seq % 2 == 1)
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(odd, vec![3, 5]);
    }

    #[test]
    fn a_refused_stream_is_kept_with_its_code_and_who_failed() {
        let i = Inspector::default();
        i.refused("web", "rid-1", AckCode::ConnectFailed, "refused".into());
        let e = i.get(1).unwrap();
        assert_eq!(e.status, Some(502));
        let f = e.failure.as_ref().unwrap();
        assert_eq!((f.code, f.who), ("local_service_unavailable", "local_app"));
        assert_eq!(e.request_id(), Some("rid-1"));
    }
}
