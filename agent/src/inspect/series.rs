//! The last hour of traffic in 10-second buckets, for the GUI's charts and
//! `/v1/metrics/series`: per service the requests, errors and a latency histogram (for p50 and
//! p99); for the tunnel the bytes carried; and when the tunnel went down. Buckets exist only
//! where there was traffic, so an idle service costs nothing, and anything older than an hour
//! is dropped as new buckets come.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

/// Width of one bucket, seconds.
pub const BUCKET_SECS: u64 = 10;
/// How far back the series go, seconds.
pub const SPAN_SECS: u64 = 3600;
/// Latency histogram: bin `i` holds latencies up to `FIRST_BIN_US * RATIO^i`.
const BINS: usize = 40;
const FIRST_BIN_US: f64 = 100.0;
const RATIO: f64 = 1.5;

#[derive(Debug, Clone)]
struct Bucket {
    start: u64,
    requests: u32,
    errors: u32,
    latency: [u32; BINS],
}

impl Bucket {
    fn new(start: u64) -> Self {
        Self {
            start,
            requests: 0,
            errors: 0,
            latency: [0; BINS],
        }
    }

    /// The latency at quantile `q` (0..1), as the geometric middle of its bin, microseconds.
    fn quantile_us(&self, q: f64) -> u64 {
        let total: u64 = self.latency.iter().map(|c| u64::from(*c)).sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.latency.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                let upper = FIRST_BIN_US * RATIO.powi(i as i32);
                let lower = if i == 0 { 0.0 } else { upper / RATIO };
                return if i == 0 {
                    upper as u64
                } else {
                    (upper * lower).sqrt() as u64
                };
            }
        }
        (FIRST_BIN_US * RATIO.powi(BINS as i32 - 1)) as u64
    }
}

fn bin_of(latency_us: u64) -> usize {
    if latency_us as f64 <= FIRST_BIN_US {
        return 0;
    }
    let i = ((latency_us as f64 / FIRST_BIN_US).ln() / RATIO.ln()).ceil() as usize;
    i.min(BINS - 1)
}

/// One point of a service's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicePoint {
    /// Unix seconds at the bucket's start.
    pub t: u64,
    pub requests_per_s: f64,
    pub errors_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// One point of the tunnel's byte rates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BytesPoint {
    pub t: u64,
    /// Bytes per second from the gateway to the apps.
    pub in_per_s: f64,
    /// Bytes per second from the apps to the gateway.
    pub out_per_s: f64,
}

/// Everything the charts draw.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    pub bucket_secs: u64,
    /// Unix seconds now, the right end of the time axis.
    pub now: u64,
    pub services: BTreeMap<String, Vec<ServicePoint>>,
    pub bytes: Vec<BytesPoint>,
    /// Unix milliseconds at which a tunnel went down.
    pub reconnects: Vec<u64>,
}

/// The rolling series.
#[derive(Debug, Default)]
pub struct Series {
    services: BTreeMap<Arc<str>, VecDeque<Bucket>>,
    /// (unix second, total bytes in, total bytes out), sampled once per bucket.
    bytes: VecDeque<(u64, u64, u64)>,
    reconnects: VecDeque<u64>,
}

impl Series {
    /// Count one request of `service` that ended at unix second `now`.
    pub fn add(&mut self, service: &Arc<str>, now: u64, latency_us: u64, error: bool) {
        let start = now - now % BUCKET_SECS;
        let buckets = match self.services.get_mut(service) {
            Some(b) => b,
            None => self.services.entry(service.clone()).or_default(),
        };
        if buckets.back().is_none_or(|b| b.start < start) {
            buckets.push_back(Bucket::new(start));
            while buckets
                .front()
                .is_some_and(|b| b.start + SPAN_SECS <= start)
            {
                buckets.pop_front();
            }
        }
        if let Some(b) = buckets.back_mut().filter(|b| b.start == start) {
            b.requests += 1;
            b.errors += u32::from(error);
            b.latency[bin_of(latency_us)] += 1;
        }
    }

    /// Record the tunnel's byte totals at unix second `now` (once per bucket is kept).
    pub fn sample_bytes(&mut self, now: u64, total_in: u64, total_out: u64) {
        let start = now - now % BUCKET_SECS;
        if self.bytes.back().is_some_and(|b| b.0 >= start) {
            return;
        }
        self.bytes.push_back((now, total_in, total_out));
        while self.bytes.front().is_some_and(|b| b.0 + SPAN_SECS < start) {
            self.bytes.pop_front();
        }
    }

    /// Mark a tunnel going down at unix milliseconds `at_ms`.
    pub fn mark_reconnect(&mut self, at_ms: u64) {
        self.reconnects.push_back(at_ms);
        while self
            .reconnects
            .front()
            .is_some_and(|t| t + SPAN_SECS * 1000 < at_ms)
        {
            self.reconnects.pop_front();
        }
        // A flapping tunnel is bounded too: one mark per second is plenty to draw.
        while self.reconnects.len() > SPAN_SECS as usize {
            self.reconnects.pop_front();
        }
    }

    /// The charts' data as of unix second `now`, for one service or all; `current` (the byte
    /// totals now) adds a last byte-rate point since the latest sample.
    pub fn view(&self, now: u64, only: Option<&str>, current: Option<(u64, u64)>) -> SeriesView {
        let from = now.saturating_sub(SPAN_SECS);
        let per_s = |n: u32| f64::from(n) / BUCKET_SECS as f64;
        let services = self
            .services
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == &***name))
            .map(|(name, buckets)| {
                let points = buckets
                    .iter()
                    .filter(|b| b.start >= from)
                    .map(|b| ServicePoint {
                        t: b.start,
                        requests_per_s: per_s(b.requests),
                        errors_per_s: per_s(b.errors),
                        p50_us: b.quantile_us(0.5),
                        p99_us: b.quantile_us(0.99),
                    })
                    .collect();
                (name.to_string(), points)
            })
            .collect();
        let latest = current
            .zip(self.bytes.back())
            .filter(|(_, last)| last.0 < now)
            .map(|((i, o), _)| (now, i, o));
        let bytes = self
            .bytes
            .iter()
            .zip(self.bytes.iter().skip(1).chain(latest.as_ref()))
            .filter(|(_, b)| b.0 >= from)
            .map(|(a, b)| {
                let secs = (b.0 - a.0).max(1) as f64;
                BytesPoint {
                    t: b.0,
                    in_per_s: b.1.saturating_sub(a.1) as f64 / secs,
                    out_per_s: b.2.saturating_sub(a.2) as f64 / secs,
                }
            })
            .collect();
        SeriesView {
            bucket_secs: BUCKET_SECS,
            now,
            services,
            bytes,
            reconnects: self
                .reconnects
                .iter()
                .copied()
                .filter(|t| *t >= from * 1000)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_rates_and_quantiles_and_forget_after_an_hour() {
        let web: Arc<str> = "web".into();
        let mut s = Series::default();
        let t0 = 1_000_000u64;
        for i in 0..100 {
            // 99 fast requests (about 1 ms) and one slow (about 1 s).
            let latency = if i == 0 { 1_000_000 } else { 1_000 };
            s.add(&web, t0, latency, i < 5);
        }
        let v = s.view(t0, None, None);
        let p = &v.services["web"][0];
        assert_eq!(p.requests_per_s, 10.0);
        assert_eq!(p.errors_per_s, 0.5);
        assert!((700..=1500).contains(&p.p50_us), "{p:?}");
        assert!(
            (700..=1500).contains(&p.p99_us),
            "p99 of 100 is the 99th: {p:?}"
        );
        s.add(&web, t0, 1_000_000, false);
        let p = &s.view(t0, None, None).services["web"][0];
        assert!(p.p99_us > 500_000, "{p:?}");
        // An hour later the old bucket is gone.
        s.add(&web, t0 + SPAN_SECS, 1_000, false);
        assert_eq!(s.services[&web].len(), 1);
        assert!(s.view(t0, Some("other"), None).services.is_empty());
    }

    #[test]
    fn byte_rates_come_from_samples_and_reconnects_are_kept_an_hour() {
        let mut s = Series::default();
        s.sample_bytes(100, 0, 0);
        s.sample_bytes(105, 500, 500);
        s.sample_bytes(110, 1000, 2000);
        let v = s.view(110, None, None);
        assert_eq!(
            v.bytes,
            vec![BytesPoint {
                t: 110,
                in_per_s: 100.0,
                out_per_s: 200.0
            }]
        );
        // The totals now give a last point since the latest sample.
        let v = s.view(114, None, Some((1400, 2000)));
        assert_eq!(v.bytes.len(), 2);
        assert_eq!(
            (v.bytes[1].t, v.bytes[1].in_per_s, v.bytes[1].out_per_s),
            (114, 100.0, 0.0)
        );
        s.mark_reconnect(1_000);
        s.mark_reconnect(5_000_000);
        assert_eq!(s.view(5_000, None, None).reconnects, vec![5_000_000]);
    }
}
