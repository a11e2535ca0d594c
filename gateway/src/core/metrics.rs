//! Prometheus metrics of the gateway (names prefixed `g2c_`), on a registry of its own so tests
//! can run several gateways in one process.
//!
//! Label cardinality is bounded: a `registration` label only ever carries the ID of a
//! registration that exists in the store (callers naming unknown ones are counted under `""`),
//! codes and reasons come from fixed sets, and no URL path is ever a label. The figures an agent
//! reports over its control stream (`g2c_agent_*`) are relayed here, so one scrape of the
//! gateway covers every agent, including those behind NAT.

use std::time::Duration;

use g2c_proto::{AgentReport, ServiceDecl};
use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Declares the metric families once: the struct field, its doc, and how it is made and
/// registered, so the list reads as the table it is.
macro_rules! families {
    ($($(#[$doc:meta])* $field:ident: $ty:ty = $make:expr;)*) => {
        /// The gateway's metric families. Cheap to clone (every handle is shared).
        #[derive(Clone)]
        pub struct Metrics {
            registry: Registry,
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl Metrics {
            /// Register all families (and, on Linux, the process collector).
            pub fn new() -> Self {
                let r = Registry::new();
                #[cfg(target_os = "linux")]
                {
                    let _ = r.register(Box::new(
                        prometheus::process_collector::ProcessCollector::for_self(),
                    ));
                }
                Self {
                    $($field: register(&r, $make),)*
                    registry: r,
                }
            }
        }
    };
}

fn counters(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauges(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

const REG: &[&str] = &["registration"];
const REG_SERVICE: &[&str] = &["registration", "service"];
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

families! {
    /// Tokio tasks alive in the gateway (a leak shows as a climb that never comes down).
    runtime_tasks: IntGauge = gauge("g2c_runtime_tasks", "Tokio tasks alive in the gateway");
    /// Cluster nodes with a live lease, as this node last saw them (0 on one SQLite node).
    cluster_nodes_alive: IntGauge = gauge("g2c_cluster_nodes_alive",
        "Cluster nodes with a live lease, as this node last saw them");
    /// Times this node found its cluster lease gone and joined again (`reason` is `expired`).
    cluster_lease_lost: IntCounterVec = counters("g2c_cluster_lease_lost_total",
        "Times this node found its cluster lease gone, closed its tunnels and joined again",
        &["reason"]);
    /// Tunnels this node holds (the registry's sessions), as recorded for the other nodes.
    cluster_tunnels_held: IntGauge = gauge("g2c_cluster_tunnels_held",
        "Agent tunnels this node holds and records in the cluster's presence table");
    /// Registrations whose tunnel another active node holds, as this node last heard.
    cluster_remote_tunnels: IntGauge = gauge("g2c_cluster_remote_tunnels",
        "Registrations whose tunnel another active node holds, as this node last heard");
    /// Peer-link streams open now, by `direction` (`out`: this node forwards; `in`: a peer
    /// forwards through this node's tunnel).
    peer_streams_open: IntGaugeVec = gauges("g2c_peer_streams_open",
        "Peer-link streams open now, by direction", &["direction"]);
    /// Streams forwarded to another node, by `outcome` (`ok`, `refused` the agent said no,
    /// `unreachable` no holder took it).
    peer_forwarded: IntCounterVec = counters("g2c_peer_forwarded_total",
        "Streams this node forwarded over the peer link, by outcome", &["outcome"]);
    /// Peer-link connections that failed, by `reason` (`connect`, `tls`, `closed`).
    peer_link_failures: IntCounterVec = counters("g2c_peer_link_failures_total",
        "Peer-link connections to other nodes that failed, by reason", &["reason"]);
    /// Credential snapshots applied from the shared store (another node's change, or ours).
    credentials_applied: IntCounter = IntCounter::new("g2c_cluster_credentials_applied_total",
        "Credential snapshots applied from the shared store after a change")
        .expect("valid metric");
    /// How long after a credential change (a revocation, a new key) was committed this node
    /// had applied it, on the database's clock.
    credentials_delay: prometheus::Histogram = prometheus::Histogram::with_opts(
        HistogramOpts::new("g2c_cluster_credentials_delay_seconds",
            "Time from a credential change's commit (revocations included) to this node applying it")
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]))
        .expect("valid metric");
    /// Store operations that failed because the database was unreachable, by `op`.
    db_errors: IntCounterVec = counters("g2c_store_unavailable_total",
        "Store operations that failed because the database was unreachable", &["op"]);
    /// Agents with a live tunnel.
    agents_connected: IntGauge = gauge("g2c_agents_connected", "Agents with a live tunnel");
    /// 1 while a registration's agent is connected, 0 after it left (kept so alerts can fire).
    agent_connected: IntGaugeVec = gauges("g2c_agent_connected",
        "1 while the registration's agent is connected, 0 once it left", REG);
    /// Tunnel sessions that completed the control handshake, by registration.
    sessions_opened: IntCounterVec = counters("g2c_tunnel_sessions_opened_total",
        "Agent tunnel sessions that completed the control handshake", REG);
    /// Sessions closed because a newer session of the same registration came up.
    sessions_replaced: IntCounterVec = counters("g2c_tunnel_sessions_replaced_total",
        "Tunnel sessions closed because a newer one of the same registration came up", REG);
    /// Refused SSH authentications, by reason.
    ssh_auth_failures: IntCounterVec = counters("g2c_ssh_auth_failures_total",
        "Refused SSH authentications by reason", &["reason"]);
    /// SSH connections the gateway closed or refused on a limit, by reason
    /// (`preauth_deadline`, `preauth_evicted`, `max_tunnels`, `protocol_violation`).
    ssh_closed: IntCounterVec = counters("g2c_ssh_connections_closed_total",
        "SSH connections closed or refused on a limit, by reason", &["reason"]);
    /// HTTP connections open now, by listener.
    http_connections_open: IntGaugeVec = gauges("g2c_http_connections_open",
        "HTTP connections open now, by listener", &["listener"]);
    /// HTTP connections refused at a cap (`total`, `per_source`), by listener.
    http_connections_refused: IntCounterVec = counters("g2c_http_connections_refused_total",
        "HTTP connections refused at a cap, by listener and reason", &["listener", "reason"]);
    /// HTTP connections closed by a deadline (`first_request`, `idle`), by listener.
    http_connections_timed_out: IntCounterVec = counters("g2c_http_connections_timed_out_total",
        "HTTP connections closed by a deadline, by listener and reason", &["listener", "reason"]);
    /// Front-door requests by registration and status class (`2xx` .. `5xx`).
    http_requests: IntCounterVec = counters("g2c_http_requests_total",
        "Front-door requests by registration and status class", &["registration", "status_class"]);
    /// Front-door requests by registration, the agent's HTTP service they went to, and
    /// status class (only requests that reached a service the agent announced).
    http_service_requests: IntCounterVec = counters("g2c_http_service_requests_total",
        "Front-door requests by registration, service and status class",
        &["registration", "service", "status_class"]);
    /// Front-door requests answered with a gateway error code, by registration and code.
    http_errors: IntCounterVec = counters("g2c_http_errors_total",
        "Front-door requests answered with a gateway error, by code", &["registration", "code"]);
    /// Front-door request duration (until the last response byte), by registration.
    http_duration: HistogramVec = HistogramVec::new(
        HistogramOpts::new("g2c_http_request_duration_seconds",
            "Front-door request duration until the last response byte")
        .buckets(DURATION_BUCKETS.to_vec()), REG).expect("valid metric");
    /// Payload bytes by registration, protocol (`http`/`tcp`) and direction (`in` = caller to
    /// app, `out` = app to caller).
    bytes: IntCounterVec = counters("g2c_bytes_total",
        "Payload bytes through the gateway (in: caller to app, out: app to caller)",
        &["registration", "protocol", "direction"]);
    /// Tunnel data streams open now (pooled HTTP connections and TCP connections).
    active_streams: IntGaugeVec = gauges("g2c_active_streams",
        "Tunnel data streams open now (pooled HTTP connections and TCP connections)", REG);
    /// Public TCP connections accepted (source allowed), by registration and service.
    tcp_accepted: IntCounterVec = counters("g2c_tcp_connections_accepted_total",
        "Public TCP connections accepted", REG_SERVICE);
    /// Public TCP connections refused by the source allowlist.
    tcp_refused: IntCounterVec = counters("g2c_tcp_connections_refused_total",
        "Public TCP connections refused by the source allowlist", REG_SERVICE);
    /// Public TCP connections open now.
    tcp_active: IntGaugeVec = gauges("g2c_tcp_connections_active",
        "Public TCP connections open now", REG_SERVICE);
    /// Registrations created / revoked, as seen in the store.
    registration_events: IntCounterVec = counters("g2c_registration_events_total",
        "Registrations created or revoked", &["event"]);
    /// API keys created / revoked, as seen in the store.
    key_events: IntCounterVec = counters("g2c_api_key_events_total",
        "API keys created or revoked", &["event"]);
    /// Audit lines lost because the writer fell behind.
    audit_dropped: IntCounter = IntCounter::new("g2c_audit_lines_dropped_total",
        "Audit lines lost because the writer fell behind").expect("valid metric");
    /// Agent-reported: 1, labelled with the agent's software version.
    agent_info: IntGaugeVec = gauges("g2c_agent_info",
        "Agent-reported: 1, labelled with the agent's version", &["registration", "version"]);
    /// Agent-reported: tunnel reconnects since the agent started.
    agent_reconnects: IntGaugeVec = gauges("g2c_agent_reconnects",
        "Agent-reported: tunnel reconnects since the agent started", REG);
    /// Agent-reported: streams open on the agent.
    agent_streams: IntGaugeVec = gauges("g2c_agent_active_streams",
        "Agent-reported: data streams open on the agent", REG);
    /// Agent-reported: 1 if the local service answered the agent's probe.
    agent_service_up: IntGaugeVec = gauges("g2c_agent_service_up",
        "Agent-reported: 1 if the local service answered the agent's probe", REG_SERVICE);
    /// Agent-reported: how long the probe took.
    agent_service_probe: GaugeVec = GaugeVec::new(Opts::new("g2c_agent_service_probe_seconds",
        "Agent-reported: duration of the agent's last probe of a local service"), REG_SERVICE)
        .expect("valid metric");
    /// Unix time of the agent's last heartbeat.
    agent_last_heartbeat: IntGaugeVec = gauges("g2c_agent_last_heartbeat_timestamp_seconds",
        "Unix time of the agent's last heartbeat", REG);
}

impl Metrics {
    /// Text exposition.
    pub fn render(&self) -> Vec<u8> {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.runtime_tasks
                .set(rt.metrics().num_alive_tasks() as i64);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Count one finished front-door request.
    pub fn observe_request(
        &self,
        registration: &str,
        status: u16,
        code: Option<&str>,
        duration: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.http_requests
            .with_label_values(&[registration, status_class(status)])
            .inc();
        if let Some(code) = code {
            self.http_errors
                .with_label_values(&[registration, code])
                .inc();
        }
        self.http_duration
            .with_label_values(&[registration])
            .observe(duration.as_secs_f64());
        self.add_bytes(registration, "http", bytes_in, bytes_out);
    }

    /// Count a request that went to `service` of `registration`.
    pub fn observe_service_request(&self, registration: &str, service: &str, status: u16) {
        self.http_service_requests
            .with_label_values(&[registration, service, status_class(status)])
            .inc();
    }

    /// Add payload bytes for a registration.
    pub fn add_bytes(&self, registration: &str, protocol: &str, bytes_in: u64, bytes_out: u64) {
        if bytes_in > 0 {
            self.bytes
                .with_label_values(&[registration, protocol, "in"])
                .inc_by(bytes_in);
        }
        if bytes_out > 0 {
            self.bytes
                .with_label_values(&[registration, protocol, "out"])
                .inc_by(bytes_out);
        }
    }

    /// Record an agent's report; services it no longer reports lose their series.
    pub fn agent_report(&self, registration: &str, report: &AgentReport) {
        self.agent_reconnects
            .with_label_values(&[registration])
            .set(report.reconnects as i64);
        self.agent_streams
            .with_label_values(&[registration])
            .set(i64::from(report.active_streams));
        for s in &report.services {
            self.agent_service_up
                .with_label_values(&[registration, &s.name])
                .set(i64::from(s.healthy));
            self.agent_service_probe
                .with_label_values(&[registration, &s.name])
                .set(s.latency_us as f64 / 1e6);
        }
    }

    /// An agent connected: publish its presence and version.
    pub fn agent_up(&self, registration: &str, version: &str) {
        self.agent_connected
            .with_label_values(&[registration])
            .set(1);
        self.agent_info
            .with_label_values(&[registration, version])
            .set(1);
    }

    /// An agent left: `g2c_agent_connected` drops to 0; the figures it reported are removed
    /// (they would be stale), keeping the series count bounded by live agents.
    pub fn agent_down(&self, registration: &str, version: &str, services: &[ServiceDecl]) {
        self.agent_connected
            .with_label_values(&[registration])
            .set(0);
        let _ = self.agent_reconnects.remove_label_values(&[registration]);
        let _ = self.agent_streams.remove_label_values(&[registration]);
        self.agent_replaced(registration, (version, services), ("", &[]));
    }

    /// A session was replaced by a newer one of the same registration (or by none): remove the
    /// series only the old one had (its version, services the new one does not announce).
    pub fn agent_replaced(
        &self,
        registration: &str,
        (old_version, old_services): (&str, &[ServiceDecl]),
        (new_version, new_services): (&str, &[ServiceDecl]),
    ) {
        if old_version != new_version {
            let _ = self
                .agent_info
                .remove_label_values(&[registration, old_version]);
        }
        for s in old_services {
            if new_services.iter().any(|n| n.name == s.name) {
                continue;
            }
            let _ = self
                .agent_service_up
                .remove_label_values(&[registration, &s.name]);
            let _ = self
                .agent_service_probe
                .remove_label_values(&[registration, &s.name]);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `2xx`, `4xx`, ... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Decrements a gauge when dropped: ties "open now" gauges to the lifetime of what they count.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    /// Increment `gauge` now, decrement it on drop.
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
