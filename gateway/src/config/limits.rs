//! The gateway's timeouts and limits (`[limits]`): the fields, their defaults and their checks.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// Timeouts and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Seconds to wait for the local app's response headers before answering 504.
    pub upstream_timeout_secs: u64,
    /// Seconds a caller may take to send its request headers; also the deadline for a new
    /// connection's first complete request head (TLS and the HTTP/1-or-2 sniff included).
    pub header_read_timeout_secs: u64,
    /// Seconds an HTTP connection may sit idle (nothing started or in flight) before it is
    /// closed gracefully (HTTP/2: GOAWAY).
    pub idle_timeout_secs: u64,
    /// Seconds between HTTP/2 keep-alive pings; a peer that does not answer one in as long is
    /// dropped.
    pub h2_keepalive_secs: u64,
    /// Most HTTP connections open at once, per listener.
    pub max_connections: usize,
    /// Most HTTP connections open at once from one source address, per listener (the
    /// `trusted_proxies` are exempt).
    pub max_connections_per_source: usize,
    /// Seconds in-flight requests get to finish after shutdown starts.
    pub shutdown_grace_secs: u64,
    /// First port of the range handed out as tunnel / public TCP ports.
    pub port_range_start: u16,
    /// Last port of that range (inclusive).
    pub port_range_end: u16,
    /// Most TCP service ports one registration may hold (each opened by `registration allow`).
    pub max_tcp_ports_per_registration: u16,
    /// Idle keep-alive connections kept per agent.
    pub upstream_pool_idle_per_agent: usize,
    /// Seconds between agent heartbeats (and health reports); an agent silent for three
    /// intervals is disconnected.
    pub heartbeat_secs: u64,
    /// Requests per second admitted per registration (0: no limit); over it callers get 429
    /// `rate_limited` with `Retry-After`.
    pub registration_rate_per_sec: u32,
    /// Burst a registration may send above its rate.
    pub registration_burst: u32,
    /// Requests per second admitted per API key (0: no limit).
    pub key_rate_per_sec: u32,
    /// Burst an API key may send above its rate.
    pub key_burst: u32,
    /// Seconds an SSH connection may take to authenticate before it is closed.
    pub ssh_preauth_timeout_secs: u64,
    /// Most SSH connections not yet authenticated at once; a new one past it closes the oldest
    /// (a flood of idle connections cannot lock real agents out).
    pub ssh_max_unauthenticated: usize,
    /// Seconds an authenticated SSH session has to ask for its `tcpip-forward` (counted from
    /// its authentication); one that never does is closed.
    pub ssh_forward_timeout_secs: u64,
    /// Most SSH sessions one registration may hold at once (a reconnecting agent briefly has
    /// two); further authentications are refused.
    pub ssh_max_sessions_per_registration: usize,
    /// Most agent tunnels at once; past it a new agent is refused (a reconnecting one is not).
    pub max_tunnels: usize,
    /// Most requests in flight per registration (0: no limit); past it callers get 503
    /// `overloaded` with `Retry-After`.
    pub registration_max_inflight: usize,
    /// Largest request head (request line and headers), bytes; past it callers get 431.
    pub max_header_bytes: usize,
    /// Most request headers; past it callers get 431.
    pub max_headers: usize,
    /// Largest request body, bytes (0: no limit); past it callers get 413.
    pub max_body_bytes: u64,
    /// Most concurrent streams on one tunnel (requests and TCP connections); past it callers get
    /// 503 `overloaded`.
    pub max_streams_per_tunnel: usize,
    /// MiB of yamux receive window per tunnel on top of 256 KiB per stream: what one agent may
    /// have in flight towards the gateway (bulk speed on long links against memory per tunnel).
    pub yamux_window_headroom_mib: usize,
    /// Answer 503 `local_service_unhealthy` (with `Retry-After`) for an HTTP service the
    /// agent's health check last found down, instead of sending the request to it. Off by
    /// default: a health check can be wrong, and the app's own answer is usually better.
    pub refuse_unhealthy_services: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            upstream_timeout_secs: 60,
            header_read_timeout_secs: 30,
            idle_timeout_secs: 120,
            h2_keepalive_secs: 20,
            max_connections: 20_000,
            max_connections_per_source: 512,
            shutdown_grace_secs: 10,
            port_range_start: 11000,
            port_range_end: 11999,
            max_tcp_ports_per_registration: 16,
            upstream_pool_idle_per_agent: 32,
            heartbeat_secs: g2c_proto::tuning::HEARTBEAT_INTERVAL.as_secs(),
            registration_rate_per_sec: 0,
            registration_burst: 200,
            key_rate_per_sec: 0,
            key_burst: 100,
            ssh_preauth_timeout_secs: 10,
            ssh_max_unauthenticated: 256,
            ssh_forward_timeout_secs: 15,
            ssh_max_sessions_per_registration: 4,
            max_tunnels: 10_000,
            registration_max_inflight: 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024 * 1024,
            max_streams_per_tunnel: g2c_proto::tuning::YAMUX_MAX_STREAMS,
            yamux_window_headroom_mib: g2c_proto::tuning::YAMUX_WINDOW_HEADROOM >> 20,
            refuse_unhealthy_services: false,
        }
    }
}

impl LimitsConfig {
    /// The public port range and the per-registration quota, as the store allocates them.
    pub fn ports(&self) -> crate::store::PortRange {
        crate::store::PortRange {
            start: self.port_range_start,
            end: self.port_range_end,
            per_registration: self.max_tcp_ports_per_registration,
        }
    }

    /// Upstream timeout as a duration.
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_secs(self.upstream_timeout_secs)
    }

    /// Heartbeat interval as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// SSH pre-auth deadline as a duration.
    pub fn ssh_preauth_timeout(&self) -> Duration {
        Duration::from_secs(self.ssh_preauth_timeout_secs)
    }

    /// Deadline for an SSH session's `tcpip-forward`, from its authentication.
    pub fn ssh_forward_timeout(&self) -> Duration {
        Duration::from_secs(self.ssh_forward_timeout_secs)
    }

    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: &str| Err(ConfigError::invalid(field, message));
        let l = self;
        if l.port_range_start == 0 || l.port_range_start > l.port_range_end {
            return invalid(
                "limits.port_range_start",
                "must be non-zero and not above limits.port_range_end",
            );
        }
        if l.max_tcp_ports_per_registration == 0 {
            return invalid(
                "limits.max_tcp_ports_per_registration",
                "must be at least 1",
            );
        }
        if l.upstream_timeout_secs == 0 {
            return invalid("limits.upstream_timeout_secs", "must be at least 1");
        }
        if l.idle_timeout_secs == 0 || l.h2_keepalive_secs == 0 {
            return invalid(
                "limits.idle_timeout_secs",
                "idle_timeout_secs and h2_keepalive_secs must be at least 1",
            );
        }
        if l.max_connections == 0 || l.max_connections_per_source == 0 {
            return invalid(
                "limits.max_connections",
                "max_connections and max_connections_per_source must be at least 1",
            );
        }
        if l.header_read_timeout_secs == 0 {
            return invalid("limits.header_read_timeout_secs", "must be at least 1");
        }
        if !(1..=300).contains(&l.heartbeat_secs) {
            return invalid("limits.heartbeat_secs", "must be between 1 and 300");
        }
        if !(1..=600).contains(&l.ssh_preauth_timeout_secs) {
            return invalid(
                "limits.ssh_preauth_timeout_secs",
                "must be between 1 and 600",
            );
        }
        if l.ssh_max_unauthenticated == 0 {
            return invalid("limits.ssh_max_unauthenticated", "must be at least 1");
        }
        if !(1..=600).contains(&l.ssh_forward_timeout_secs) {
            return invalid("limits.ssh_forward_timeout_secs", "must be 1 to 600");
        }
        if l.ssh_max_sessions_per_registration == 0 {
            return invalid(
                "limits.ssh_max_sessions_per_registration",
                "must be at least 1",
            );
        }
        if l.max_tunnels == 0 {
            return invalid("limits.max_tunnels", "must be at least 1");
        }
        if l.max_header_bytes < 8192 {
            return invalid("limits.max_header_bytes", "must be at least 8192");
        }
        if l.max_headers == 0 {
            return invalid("limits.max_headers", "must be at least 1");
        }
        // Agents accept as many streams as the default allows (plus slack), no more.
        if !(1..=g2c_proto::tuning::YAMUX_MAX_STREAMS).contains(&l.max_streams_per_tunnel) {
            return invalid("limits.max_streams_per_tunnel", "must be between 1 and 256");
        }
        if l.yamux_window_headroom_mib > 1024 {
            return invalid("limits.yamux_window_headroom_mib", "must be at most 1024");
        }
        Ok(())
    }
}
