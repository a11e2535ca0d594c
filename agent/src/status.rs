//! What the running agent knows about its own tunnel, shared between the tunnel loop and
//! whatever reports it (logs now; the local status API and GUI later).

use std::sync::Mutex;
use std::time::SystemTime;

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
}

/// Shared, updatable status.
#[derive(Debug, Default)]
pub struct Status(Mutex<StatusSnapshot>);

impl Status {
    /// New status for a gateway and registration.
    pub fn new(gateway: String, registration_id: String) -> Self {
        Self(Mutex::new(StatusSnapshot {
            gateway,
            registration_id,
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            ..Default::default()
        }))
    }

    /// Copy out the current state.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.0.lock().expect("status lock").clone()
    }

    /// The tunnel is up.
    pub fn set_connected(&self) {
        let mut s = self.0.lock().expect("status lock");
        s.connected = true;
        s.connected_since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
    }

    /// Tunnel sessions that ended (or attempts that failed) since start.
    pub fn reconnects(&self) -> u64 {
        self.0.lock().expect("status lock").reconnects
    }

    /// Record a round of local service probes.
    pub fn set_services(&self, services: Vec<g2c_proto::ServiceHealth>) {
        self.0.lock().expect("status lock").services = services;
    }

    /// The tunnel is down (or never came up) because of `error`.
    pub fn set_disconnected(&self, error: Option<String>) {
        let mut s = self.0.lock().expect("status lock");
        s.connected = false;
        s.connected_since = None;
        s.reconnects += 1;
        if error.is_some() {
            s.last_error = error;
        }
    }
}
