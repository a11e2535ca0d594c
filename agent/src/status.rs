//! What the running agent knows about its own tunnel, shared between the tunnel loop and
//! whatever reports it: the logs, the local API (`g2c-agent status`) and the GUI.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// One local service's latest check, as the GUI shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// Service name.
    pub name: String,
    /// Whether the service answered.
    pub healthy: bool,
    /// How long the check took, microseconds.
    pub latency_us: u64,
    /// What was seen: `HTTP 200`, `TCP connect ok`, or the error.
    pub detail: String,
    /// Unix seconds of the check.
    pub at: u64,
}

/// A point-in-time copy of the agent's state.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StatusSnapshot {
    /// Whether a tunnel is up.
    pub connected: bool,
    /// Unix seconds when the current tunnel came up.
    pub connected_since: Option<u64>,
    /// `host:port` of the gateway.
    pub gateway: String,
    /// Registration ID.
    pub registration_id: String,
    /// Connection attempts that failed or ended since start.
    pub reconnects: u64,
    /// Why the last attempt or session failed.
    pub last_error: Option<String>,
    /// Agent software version.
    pub version: String,
    /// Process id of the running agent.
    pub pid: u32,
    /// Local services' health from the latest probe round.
    pub services: Vec<g2c_proto::ServiceHealth>,
    /// Latest on-demand test per service (the GUI's "test" button).
    #[serde(default)]
    pub tests: Vec<ProbeResult>,
    /// Round-trip time of the latest control-stream heartbeat, microseconds.
    #[serde(default)]
    pub rtt_us: Option<u64>,
    /// Streams being served now.
    #[serde(default)]
    pub active_streams: u64,
    /// Bytes carried from the gateway to local services.
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes carried from local services to the gateway.
    #[serde(default)]
    pub bytes_out: u64,
    /// Tunnels up now (more than one to a clustered gateway, each on its own node).
    #[serde(default)]
    pub tunnels: u32,
}

/// Shared, updatable status.
#[derive(Debug, Default)]
pub struct Status {
    state: Mutex<StatusSnapshot>,
    active: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    inspector: std::sync::Arc<crate::inspect::Inspector>,
}

/// Counts one tunnel as up while it lives.
pub struct TunnelGuard(std::sync::Arc<Status>);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.tunnels = s.tunnels.saturating_sub(1);
        if s.tunnels == 0 {
            s.connected = false;
            s.connected_since = None;
        }
    }
}

/// Counts one stream as active while it lives.
pub struct StreamGuard<'a>(&'a Status);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn now_secs() -> Option<u64> {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

impl Status {
    /// New status for a gateway and registration.
    pub fn new(gateway: String, registration_id: String) -> Self {
        Self {
            state: Mutex::new(StatusSnapshot {
                gateway,
                registration_id,
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusSnapshot> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copy out the current state.
    pub fn snapshot(&self) -> StatusSnapshot {
        let mut s = self.lock().clone();
        s.active_streams = self.active.load(Ordering::Relaxed);
        s.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        s.bytes_out = self.bytes_out.load(Ordering::Relaxed);
        s
    }

    /// Which gateway and registration the agent is (re)connecting as; changes with the config.
    pub fn set_identity(&self, gateway: String, registration_id: String) {
        let mut s = self.lock();
        s.gateway = gateway;
        s.registration_id = registration_id;
    }

    /// A tunnel is up until the guard drops; the agent counts as connected while any is.
    pub fn tunnel_up(self: &std::sync::Arc<Self>) -> TunnelGuard {
        let mut s = self.lock();
        if s.tunnels == 0 {
            s.connected = true;
            s.connected_since = now_secs();
        }
        s.tunnels += 1;
        TunnelGuard(self.clone())
    }

    /// Tunnel sessions that ended (or attempts that failed) since start.
    pub fn reconnects(&self) -> u64 {
        self.lock().reconnects
    }

    /// Record a round of local service probes.
    pub fn set_services(&self, services: Vec<g2c_proto::ServiceHealth>) {
        self.lock().services = services;
    }

    /// Record an on-demand service test (replacing the previous one for that service).
    pub fn set_test(&self, mut result: ProbeResult) {
        result.at = now_secs().unwrap_or(0);
        let mut s = self.lock();
        s.tests.retain(|t| t.name != result.name);
        s.tests.push(result);
        s.tests.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Record a heartbeat round trip.
    pub fn set_rtt(&self, rtt: std::time::Duration) {
        self.lock().rtt_us = Some(rtt.as_micros() as u64);
    }

    /// Count a stream as active until the guard drops.
    pub fn stream_started(&self) -> StreamGuard<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self)
    }

    /// The recent requests and traffic series (the GUI's Requests and Traffic pages).
    pub fn inspector(&self) -> &std::sync::Arc<crate::inspect::Inspector> {
        &self.inspector
    }

    /// Count bytes carried (to the app, from the app).
    pub fn add_bytes(&self, to_app: u64, from_app: u64) {
        self.bytes_in.fetch_add(to_app, Ordering::Relaxed);
        self.bytes_out.fetch_add(from_app, Ordering::Relaxed);
    }

    /// A tunnel is down (or never came up) because of `error`; the agent is disconnected
    /// once no tunnel is up.
    pub fn set_disconnected(&self, error: Option<String>) {
        let mut s = self.lock();
        if s.tunnels == 0 {
            s.connected = false;
            s.connected_since = None;
            s.rtt_us = None;
        }
        s.reconnects += 1;
        self.inspector.mark_reconnect();
        if error.is_some() {
            s.last_error = error;
        }
    }
}
