//! Bodies of the backchannel registration API (`POST /v1/registrations`) and the shared JSON
//! error envelope used by every HTTP API of the gateway.

use serde::{Deserialize, Serialize};

/// Path of the registration endpoint on the backchannel.
pub const REGISTRATIONS_PATH: &str = "/v1/registrations";

/// Agent → backchannel: register this public key with an enrollment token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Operator-friendly name for the agent (e.g. `acme-qb`); optional.
    #[serde(default)]
    pub name: Option<String>,
    /// The agent's public key in OpenSSH format (`ssh-ed25519 AAAA...`).
    pub public_key: String,
    /// Enrollment token created by the operator.
    pub token: String,
}

impl std::fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("name", &self.name)
            .field("public_key", &self.public_key)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Backchannel → agent: the new registration and how to reach the tunnel endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterResponse {
    /// Registration ID: the SSH user name and the routing key.
    pub registration_id: String,
    /// Port to request with `tcpip-forward`; also the first public TCP port.
    pub tunnel_port: u16,
    /// Host the agent should dial for SSH.
    pub ssh_host: String,
    /// Port the agent should dial for SSH.
    pub ssh_port: u16,
    /// Gateway host key in OpenSSH format, to pin.
    pub gateway_host_key: String,
}

/// JSON error envelope: `{"error": {"code", "message", "registration"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The inside of [`ErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, one of [`crate::error_code`].
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Registration the request was for, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<String>,
}
