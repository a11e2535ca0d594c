//! Prometheus metrics of the gateway (names prefixed `g2c_`), on a registry of its own so tests
//! can run several gateways in one process.

use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};

/// The gateway's metric families.
pub struct Metrics {
    registry: Registry,
    /// Agents with a live tunnel.
    pub agents_connected: IntGauge,
    /// Public TCP connections accepted (source allowed).
    pub tcp_accepted: IntCounter,
    /// Public TCP connections refused (source outside the allowlist).
    pub tcp_refused: IntCounter,
}

impl Metrics {
    /// Register all families.
    pub fn new() -> Self {
        let registry = Registry::new();
        let agents_connected = IntGauge::new("g2c_agents_connected", "Agents with a live tunnel")
            .expect("valid metric");
        let tcp_accepted = IntCounter::new(
            "g2c_tcp_connections_accepted_total",
            "Public TCP connections accepted",
        )
        .expect("valid metric");
        let tcp_refused = IntCounter::new(
            "g2c_tcp_connections_refused_total",
            "Public TCP connections refused by the source allowlist",
        )
        .expect("valid metric");
        for m in [
            Box::new(agents_connected.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tcp_accepted.clone()),
            Box::new(tcp_refused.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        Self {
            registry,
            agents_connected,
            tcp_accepted,
            tcp_refused,
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
