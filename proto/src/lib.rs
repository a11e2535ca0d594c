//! Ground2Cloud wire format, shared by the gateway and the agent.
//!
//! Everything that crosses the tunnel is defined here: the length-prefixed frame codec
//! ([`frame`]), the typed messages carried in it ([`messages`]), the data-stream and
//! Hello/Welcome handshakes ([`handshake`]), the backchannel registration API bodies
//! ([`registration`]), the caller-facing error codes ([`error_code`]), the yamux driver
//! ([`mux`]) with its write buffer ([`coalesce`]), the copy both ways between a stream and a
//! connection ([`copy`]), the byte-observing I/O adapter ([`tap`])
//! and the tuning constants both sides must agree on ([`tuning`]). The shutdown signal
//! ([`signal`]), log rotation ([`rotate`]) and the config error type ([`config_error`]) are
//! here because both binaries need them. No
//! sockets and no config files live here: every function works on any
//! `AsyncRead`/`AsyncWrite` or on bytes.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod coalesce;
pub mod config_error;
pub mod copy;
pub mod error_code;
pub mod frame;
pub mod handshake;
pub mod http1;
pub mod messages;
pub mod mux;
mod mux_stream;
pub mod peer;
pub mod registration;
pub mod rotate;
pub mod signal;
pub mod sshkeys;
pub mod tap;
pub mod tuning;

pub use frame::{FrameError, MAX_FRAME_LEN};
pub use messages::{
    Ack, AckCode, AgentReport, ControlMessage, NodeAddr, ServiceDecl, ServiceHealth, ServiceKind,
    StreamHeader,
};

/// Protocol version spoken by this build. Bumped on any incompatible change to a message; a peer
/// that sends a different major version is refused with a clear error instead of misparsed.
pub const PROTOCOL_VERSION: u16 = 1;
