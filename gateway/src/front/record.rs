//! Accounting of one front-door request: what the layers learn about it as it goes
//! ([`Facts`], shared through the request's extensions), and the metrics and audit line,
//! written exactly once, when the response body has been sent (or dropped because the caller
//! went away).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use crate::core::audit::{rfc3339, AuditRecord};
use crate::core::registry::InflightGuard;
use crate::core::Core;

/// Longest path kept in an audit line.
const MAX_AUDIT_PATH: usize = 1024;

/// What the layers learn about a request, for its record: set once each, read at the end.
#[derive(Default)]
pub struct Facts {
    /// Request body bytes seen so far (counted by the caller's body on its way upstream).
    pub bytes_in: AtomicU64,
    registration: OnceLock<String>,
    key_id: OnceLock<String>,
    service: OnceLock<String>,
    inflight: OnceLock<InflightGuard>,
}

impl Facts {
    /// The registration the request is for, once known to exist (bounded metric labels).
    pub fn set_registration(&self, id: &str) {
        let _ = self.registration.set(id.to_owned());
    }

    /// The registration, if known to exist.
    pub fn registration(&self) -> Option<&str> {
        self.registration.get().map(String::as_str)
    }

    /// The ID of the API key that authenticated the request.
    pub fn set_key_id(&self, id: &str) {
        let _ = self.key_id.set(id.to_owned());
    }

    /// The API key's ID, once authenticated.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.get().map(String::as_str)
    }

    /// The agent's HTTP service the request goes to, as the agent announced it (bounded
    /// metric labels).
    pub fn set_service(&self, name: &str) {
        let _ = self.service.set(name.to_owned());
    }

    /// The service, once resolved on this node's tunnel.
    pub fn service(&self) -> Option<&str> {
        self.service.get().map(String::as_str)
    }

    /// Keep the request counted in flight on its tunnel until the record is finished.
    pub fn hold_inflight(&self, guard: InflightGuard) {
        let _ = self.inflight.set(guard);
    }
}

/// The record of one request; finished when its response body is done.
pub struct RequestRecord {
    core: Arc<Core>,
    started: Instant,
    caller: SocketAddr,
    method: http::Method,
    /// Only kept when the audit log is on (no per-request copy otherwise).
    path: Option<String>,
    request_id: http::HeaderValue,
    /// The id an untrusted caller sent, kept apart from ours.
    pub caller_request_id: Option<http::HeaderValue>,
    /// What the layers learnt.
    pub facts: Arc<Facts>,
    /// Status sent to the caller.
    pub status: u16,
    /// Gateway error code, if the gateway answered instead of the app.
    pub error: Option<&'static str>,
}

impl RequestRecord {
    /// Start the record of a request that just arrived.
    pub fn new(
        core: Arc<Core>,
        caller: SocketAddr,
        method: http::Method,
        path: &str,
        request_id: http::HeaderValue,
    ) -> Self {
        let path = core.audit.enabled().then(|| {
            let mut cut = path.len().min(MAX_AUDIT_PATH);
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path[..cut].to_owned()
        });
        Self {
            core,
            started: Instant::now(),
            caller,
            method,
            path,
            request_id,
            caller_request_id: None,
            facts: Arc::default(),
            status: 0,
            error: None,
        }
    }

    /// The request's id (the caller's, or one made for it).
    pub fn request_id(&self) -> &http::HeaderValue {
        &self.request_id
    }

    /// The request is over: count it and write its audit line.
    pub fn finish(self, bytes_out: u64) {
        let duration = self.started.elapsed();
        let bytes_in = self.facts.bytes_in.load(Ordering::Relaxed);
        let registration = self.facts.registration();
        self.core.metrics.observe_request(
            registration.unwrap_or(""),
            self.status,
            self.error,
            duration,
            bytes_in,
            bytes_out,
        );
        if let (Some(reg), Some(service)) = (registration, self.facts.service()) {
            self.core
                .metrics
                .observe_service_request(reg, service, self.status);
        }
        if self.core.audit.enabled() {
            self.core.audit.record(&AuditRecord {
                time: rfc3339(SystemTime::now()),
                kind: "http",
                registration,
                key_id: self.facts.key_id(),
                caller: self.caller.to_string(),
                method: Some(self.method.as_str()),
                path: self.path.as_deref(),
                service: self.facts.service(),
                status: Some(self.status),
                bytes_in,
                bytes_out,
                duration_ms: duration.as_secs_f64() * 1000.0,
                error: self.error,
                request_id: &String::from_utf8_lossy(self.request_id.as_bytes()),
                caller_request_id: self
                    .caller_request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok()),
            });
        }
    }
}
