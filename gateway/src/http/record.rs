//! Accounting of one front-door request: the metrics and the audit line, written exactly once,
//! when the response body has been sent (or dropped because the caller went away).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::audit::{rfc3339, AuditRecord};
use crate::registry::InflightGuard;
use crate::Shared;

/// Longest path kept in an audit line.
const MAX_AUDIT_PATH: usize = 1024;

/// What is known about a request so far; filled in as it is routed and answered.
pub struct RequestRecord {
    shared: Arc<Shared>,
    started: Instant,
    caller: SocketAddr,
    method: http::Method,
    /// Only kept when the audit log is on (no per-request copy otherwise).
    path: Option<String>,
    request_id: http::HeaderValue,
    /// Registration it was for; set only once known to exist (bounded metric labels).
    pub registration: Option<String>,
    /// ID of the API key that authenticated it.
    pub key_id: Option<String>,
    /// Request body bytes seen so far (shared with the counting request body).
    pub bytes_in: Arc<AtomicU64>,
    /// Status sent to the caller.
    pub status: u16,
    /// Gateway error code, if the gateway answered instead of the app.
    pub error: Option<&'static str>,
    /// Keeps the request counted as in flight on its tunnel until the response is done.
    pub inflight: Option<InflightGuard>,
}

impl RequestRecord {
    /// Start the record of a request that just arrived.
    pub fn new(
        shared: Arc<Shared>,
        caller: SocketAddr,
        method: http::Method,
        path: &str,
        request_id: http::HeaderValue,
    ) -> Self {
        let path = shared.audit.enabled().then(|| {
            let mut cut = path.len().min(MAX_AUDIT_PATH);
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path[..cut].to_owned()
        });
        Self {
            shared,
            started: Instant::now(),
            caller,
            method,
            path,
            request_id,
            registration: None,
            key_id: None,
            bytes_in: Arc::default(),
            status: 0,
            error: None,
            inflight: None,
        }
    }

    /// The request is over: count it and write its audit line.
    pub fn finish(self, bytes_out: u64) {
        let duration = self.started.elapsed();
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let reg = self.registration.as_deref().unwrap_or("");
        self.shared.metrics.observe_request(
            reg,
            self.status,
            self.error,
            duration,
            bytes_in,
            bytes_out,
        );
        if self.shared.audit.enabled() {
            self.shared.audit.record(&AuditRecord {
                time: rfc3339(SystemTime::now()),
                kind: "http",
                registration: self.registration.as_deref(),
                key_id: self.key_id.as_deref(),
                caller: self.caller.to_string(),
                method: Some(self.method.as_str()),
                path: self.path.as_deref(),
                service: None,
                status: Some(self.status),
                bytes_in,
                bytes_out,
                duration_ms: duration.as_secs_f64() * 1000.0,
                error: self.error,
                request_id: &String::from_utf8_lossy(self.request_id.as_bytes()),
            });
        }
    }
}
