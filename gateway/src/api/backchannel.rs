//! The backchannel registration API: an agent trades an enrollment token and its public key for
//! a registration ID, its tunnel port, and the gateway's host key to pin.

use std::sync::Arc;

use g2c_proto::registration::{RegisterRequest, RegisterResponse, REGISTRATIONS_PATH};
use g2c_proto::sshkeys;
use http::{Method, Request, Response, StatusCode};

use crate::body::{json, text, ProxyBody};
use crate::core::Core;
use crate::error::RequestError;
use crate::store::StoreError;

/// What the backchannel hands out besides the store's answer.
pub struct Backchannel {
    /// The core.
    pub core: Arc<Core>,
    /// The gateway's SSH host key, OpenSSH format, for agents to pin.
    pub host_key_public: String,
    /// The SSH port agents are told to dial.
    pub ssh_public_port: u16,
}

/// Largest registration request body accepted.
const MAX_BODY: usize = 16 * 1024;

/// Handle one backchannel request.
pub async fn handle<B>(bc: Arc<Backchannel>, req: Request<B>) -> Response<ProxyBody>
where
    B: http_body::Body + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let answer = match (req.method(), req.uri().path()) {
        (&Method::POST, REGISTRATIONS_PATH) => register(&bc, req).await,
        (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/openapi.json") => Ok(super::openapi(super::BACKCHANNEL_OPENAPI)),
        (_, REGISTRATIONS_PATH) => Err(RequestError::MethodNotAllowed("POST")),
        (_, "/healthz" | "/openapi.json") => Err(RequestError::MethodNotAllowed("GET")),
        _ => Err(RequestError::NoSuchEndpoint),
    };
    answer.unwrap_or_else(|e| e.to_response())
}

fn bad_request(message: impl Into<String>) -> RequestError {
    RequestError::BadRequest(message.into())
}

async fn register<B>(bc: &Backchannel, req: Request<B>) -> Result<Response<ProxyBody>, RequestError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let request: RegisterRequest = super::read_json(req, MAX_BODY).await?;
    let key = sshkeys::parse_public(&request.public_key)
        .map_err(|_| bad_request("public_key is not an OpenSSH public key"))?;
    if let Some(name) = &request.name {
        if name.len() > 64 || name.chars().any(char::is_control) {
            return Err(bad_request("name must be at most 64 printable characters"));
        }
    }
    let core = &bc.core;
    let ports = core.config.limits.ports();
    let public_key = sshkeys::public_openssh(&key);
    let reg = core
        .store
        .register(&request.token, request.name.as_deref(), &public_key, ports)
        .await
        .map_err(|e| {
            if let StoreError::TokenRejected(why) = e {
                tracing::info!(reason = why, "registration refused");
            }
            RequestError::from(e)
        })?;
    tracing::info!(registration = %reg.id, name = ?reg.name, port = reg.tunnel_port, "agent registered");
    if let Err(e) = core.auth.refresh().await {
        tracing::warn!(error = %e, "auth cache refresh failed");
    }
    let answer = RegisterResponse {
        registration_id: reg.id,
        tunnel_port: reg.tunnel_port,
        ssh_host: core.config.ssh.public_host.clone(),
        ssh_port: bc.ssh_public_port,
        gateway_host_key: bc.host_key_public.clone(),
    };
    Ok(json(StatusCode::CREATED, &answer))
}

/// Whether a backchannel on `addr` would carry registrations in the clear beyond this machine.
pub fn exposed_without_tls(addr: std::net::SocketAddr, tls: bool) -> bool {
    !tls && !addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_backchannel_beyond_loopback_is_flagged() {
        let at = |s: &str| s.parse().unwrap();
        assert!(super::exposed_without_tls(at("0.0.0.0:3014"), false));
        assert!(super::exposed_without_tls(at("[::]:3014"), false));
        assert!(!super::exposed_without_tls(at("0.0.0.0:3014"), true));
        assert!(!super::exposed_without_tls(at("127.0.0.1:3014"), false));
        assert!(!super::exposed_without_tls(at("[::1]:3014"), false));
    }
}
