//! The backchannel registration API: an agent trades an enrollment token and its public key for
//! a registration ID, its tunnel port, and the gateway's host key to pin.

use std::sync::Arc;

use bytes::Bytes;
use g2c_proto::error_code as code;
use g2c_proto::registration::{RegisterRequest, RegisterResponse, REGISTRATIONS_PATH};
use g2c_proto::sshkeys;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::error::error_response;
use crate::http::body::{full, ProxyBody};
use crate::store::{PortRange, StoreError};
use crate::Shared;

/// Largest registration request body accepted.
const MAX_BODY: usize = 16 * 1024;

/// Handle one backchannel request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, REGISTRATIONS_PATH) => register(&shared, req).await,
        (&Method::GET, "/healthz") => Response::new(full("ok\n")),
        _ => error_response(
            StatusCode::NOT_FOUND,
            code::BAD_REQUEST,
            "no such endpoint".into(),
            None,
        ),
    }
}

fn bad_request(message: impl Into<String>) -> Response<ProxyBody> {
    error_response(
        StatusCode::BAD_REQUEST,
        code::BAD_REQUEST,
        message.into(),
        None,
    )
}

async fn register(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad_request("request body too large or unreadable"),
    };
    let request: RegisterRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid registration request: {e}")),
    };
    let key = match sshkeys::parse_public(&request.public_key) {
        Ok(k) => k,
        Err(_) => return bad_request("public_key is not an OpenSSH public key"),
    };
    if let Some(name) = &request.name {
        if name.len() > 64 || name.chars().any(char::is_control) {
            return bad_request("name must be at most 64 printable characters");
        }
    }
    let limits = &shared.config.limits;
    let ports = PortRange {
        start: limits.port_range_start,
        end: limits.port_range_end,
    };
    let public_key = sshkeys::public_openssh(&key);
    let reg = match shared
        .store
        .register(&request.token, request.name.as_deref(), &public_key, ports)
        .await
    {
        Ok(r) => r,
        Err(StoreError::TokenRejected(why)) => {
            tracing::info!(reason = why, "registration refused");
            return error_response(
                StatusCode::UNAUTHORIZED,
                code::UNAUTHORIZED,
                format!("enrollment {why}"),
                None,
            );
        }
        Err(StoreError::PortsExhausted) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                code::OVERLOADED,
                "no free tunnel port".into(),
                None,
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "registration failed");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL,
                "registration failed".into(),
                None,
            );
        }
    };
    tracing::info!(registration = %reg.id, name = ?reg.name, port = reg.tunnel_port, "agent registered");
    if let Err(e) = shared.auth.refresh().await {
        tracing::warn!(error = %e, "auth cache refresh failed");
    }
    let answer = RegisterResponse {
        registration_id: reg.id,
        tunnel_port: reg.tunnel_port,
        ssh_host: shared.config.ssh.public_host.clone(),
        ssh_port: shared.ssh_public_port,
        gateway_host_key: shared.host_key_public.clone(),
    };
    let mut resp = Response::new(full(Bytes::from(
        serde_json::to_vec(&answer).unwrap_or_default(),
    )));
    *resp.status_mut() = StatusCode::CREATED;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
