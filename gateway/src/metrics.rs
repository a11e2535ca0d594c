//! Prometheus metrics of the gateway (names prefixed `g2c_`), on a registry of its own so tests
//! can run several gateways in one process.

use prometheus::{Encoder, IntGauge, Registry, TextEncoder};

/// The gateway's metric families.
pub struct Metrics {
    registry: Registry,
    /// Agents with a live tunnel.
    pub agents_connected: IntGauge,
}

impl Metrics {
    /// Register all families.
    pub fn new() -> Self {
        let registry = Registry::new();
        let agents_connected = IntGauge::new("g2c_agents_connected", "Agents with a live tunnel")
            .expect("valid metric");
        registry
            .register(Box::new(agents_connected.clone()))
            .expect("unique metric");
        Self {
            registry,
            agents_connected,
        }
    }

    /// Text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
