//! Typed messages carried in frames: the per-stream header and its acknowledgement, and the
//! control-stream conversation (Hello / Welcome / heartbeats / notices).

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;

/// What kind of traffic a local service speaks; decides how the gateway exposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Reached through the gateway's HTTP front door.
    Http,
    /// Reached through a public TCP port of its own.
    Tcp,
}

/// A service the agent offers, by name only: the gateway never learns (or sends) an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDecl {
    /// Name of the service in the agent's config.
    pub name: String,
    /// Protocol family.
    pub kind: ServiceKind,
}

/// Messages on the control stream (the first stream, opened by the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// Agent → gateway, first message: who I am and what I serve.
    Hello {
        /// Protocol version of the agent.
        version: u16,
        /// Agent software version, for operators.
        agent_version: String,
        /// Services this agent forwards to.
        services: Vec<ServiceDecl>,
    },
    /// Gateway → agent, answer to Hello.
    Welcome {
        /// Protocol version of the gateway.
        version: u16,
        /// Registration ID the session is bound to.
        registration_id: String,
        /// Seconds between heartbeats the gateway expects.
        heartbeat_secs: u32,
        /// Most data streams the gateway will open at once on this tunnel.
        max_streams: u32,
    },
    /// Either side: liveness probe; the other answers `HeartbeatAck` with the same `seq`.
    Heartbeat {
        /// Sequence number echoed back.
        seq: u64,
    },
    /// Answer to `Heartbeat`.
    HeartbeatAck {
        /// The sequence number being answered.
        seq: u64,
    },
    /// Agent → gateway: I am shutting down. Route no new requests here; close the tunnel once
    /// the requests in flight have finished.
    Draining,
    /// Gateway → agent: please reconnect (drain, shutdown, replacement).
    GoAway {
        /// Human-readable reason, for logs.
        reason: String,
    },
    /// Gateway → agent: refusal of the Hello (version mismatch, bad service list).
    Refused {
        /// Human-readable reason, for logs.
        reason: String,
    },
    /// Gateway → agent, in a cluster: the node this tunnel is on, and the active nodes an
    /// agent may keep its other tunnels on. Sent after Welcome and whenever the set changes;
    /// a single-node gateway never sends it.
    Nodes {
        /// The node this tunnel is on.
        this: String,
        /// Every active node agents may dial.
        nodes: Vec<NodeAddr>,
    },
    /// Agent → gateway, once per heartbeat interval: the agent's own figures, so an operator's
    /// one scrape of the gateway covers agents that sit behind NAT.
    Report {
        /// The figures.
        report: AgentReport,
    },
}

/// A gateway node an agent may dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddr {
    /// The node's id (new at each start of the node).
    pub id: String,
    /// `host:port` of its SSH listener.
    pub ssh: String,
}

/// The agent's own figures, relayed by the gateway as per-registration metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    /// Tunnel sessions that ended (or attempts that failed) since the agent started.
    pub reconnects: u64,
    /// Data streams open on the agent now.
    pub active_streams: u32,
    /// Health of each local service, probed by the agent.
    pub services: Vec<ServiceHealth>,
}

/// One local service's health as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceHealth {
    /// Service name from the agent's config.
    pub name: String,
    /// Whether the probe (a TCP connect to the local address) succeeded.
    pub healthy: bool,
    /// How long the probe took, microseconds.
    pub latency_us: u64,
}

/// Written by the gateway as the first frame of every data stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamHeader {
    /// Protocol version of the gateway.
    pub version: u16,
    /// Name of the agent's service to connect to.
    pub service: String,
    /// Request (or connection) id, for correlating logs on both sides.
    pub request_id: String,
    /// Address of the cloud caller, for the agent's logs.
    pub caller_addr: String,
}

impl StreamHeader {
    /// A header for this build's protocol version.
    pub fn new(service: impl Into<String>, request_id: impl Into<String>, caller: String) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            service: service.into(),
            request_id: request_id.into(),
            caller_addr: caller,
        }
    }
}

/// Why the agent refused a data stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckCode {
    /// The header names a service not in the agent's config.
    UnknownService,
    /// The local service refused or could not be reached.
    ConnectFailed,
    /// Connecting to the local service took too long.
    ConnectTimeout,
    /// The header's protocol version is not supported.
    UnsupportedVersion,
    /// The agent is at its stream limit.
    Overloaded,
    /// The local HTTPS origin's certificate was not trusted (CA or name), or its TLS
    /// handshake failed.
    LocalTls,
}

impl AckCode {
    /// The error code and HTTP status a caller gets from the gateway for this refusal: the
    /// gateway's `RequestError::from_open` answers so (a test there holds it to this), and the
    /// agent's request inspector shows the same.
    pub fn caller_error(self) -> (&'static str, u16) {
        match self {
            Self::UnknownService => (crate::error_code::UNKNOWN_SERVICE, 404),
            Self::LocalTls => (crate::error_code::LOCAL_TLS_ERROR, 502),
            Self::ConnectFailed
            | Self::ConnectTimeout
            | Self::UnsupportedVersion
            | Self::Overloaded => (crate::error_code::LOCAL_SERVICE_UNAVAILABLE, 502),
        }
    }
}

/// The agent's answer to a [`StreamHeader`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Ack {
    /// Connected to the local service; raw bytes follow in both directions.
    Ok,
    /// Refused; the stream is closed after this frame.
    Error {
        /// Machine-readable reason.
        code: AckCode,
        /// Human-readable detail (never a secret).
        message: String,
    },
}
