//! The admin listener: liveness and readiness probes, Prometheus `/metrics`, registrations with
//! their live tunnel state, and disconnecting an agent.
//!
//! It binds loopback by default and belongs on a private interface (DESIGN.md); every request
//! passes the [`AdminGate`] first (token, Host, no cross-site).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::api::admin_gate::AdminGate;
use crate::body::{json, text, ProxyBody};
use crate::core::Core;
use crate::error::RequestError;
use crate::public_tcp::PublicTcp;
use crate::store::{Registration, TcpService};

/// What the admin API reads: the core, and the public TCP wing's open ports.
pub struct Admin {
    /// The core.
    pub core: Arc<Core>,
    /// The TCP wing.
    pub tcp: Arc<PublicTcp>,
    /// Who may ask.
    pub gate: AdminGate,
}

#[derive(Serialize)]
struct RegistrationView {
    #[serde(flatten)]
    registration: Registration,
    connected: bool,
    connected_since: Option<u64>,
    agent_version: Option<String>,
    agent_addr: Option<String>,
    /// Tunnel data streams open now (pooled HTTP connections and TCP connections).
    active_streams: Option<i64>,
    /// Requests in flight on the tunnel now.
    inflight_requests: Option<usize>,
    /// Unix seconds of the agent's last heartbeat.
    last_heartbeat: Option<u64>,
    tcp_services: Vec<TcpView>,
}

#[derive(Serialize)]
struct TcpView {
    service: String,
    port: u16,
    allow: Vec<String>,
    listening: bool,
}

/// Handle one admin request.
pub async fn handle<B>(admin: Arc<Admin>, req: Request<B>) -> Response<ProxyBody> {
    if let Err(e) = admin.gate.check(&req) {
        return e.to_response();
    }
    let answer = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "ok\n")),
        (&Method::GET, "/readyz") => Ok(readiness(&admin.core).await),
        (&Method::GET, "/metrics") => Ok(metrics(&admin.core)),
        (&Method::GET, "/v1/registrations") => registrations(&admin).await,
        (&Method::POST, path) => match path
            .strip_prefix("/v1/registrations/")
            .and_then(|p| p.strip_suffix("/disconnect"))
        {
            Some(id) => disconnect(&admin.core, id),
            None => Err(RequestError::NoSuchEndpoint),
        },
        _ => Err(RequestError::NoSuchEndpoint),
    };
    answer.unwrap_or_else(|e| e.to_response())
}

fn metrics(core: &Core) -> Response<ProxyBody> {
    let mut r = text(StatusCode::OK, core.metrics.render());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn disconnect(core: &Core, id: &str) -> Result<Response<ProxyBody>, RequestError> {
    if !core.registry.disconnect(id) {
        return Err(RequestError::AgentOffline(id.to_owned()));
    }
    tracing::info!(registration = id, "agent disconnected by the admin API");
    let body = serde_json::json!({ "registration": id, "disconnected": true });
    Ok(json(StatusCode::OK, &body))
}

/// Ready while not draining and the store answers (within a second).
async fn readiness(core: &Core) -> Response<ProxyBody> {
    let problem = if !core.is_ready() {
        Some("draining")
    } else {
        match tokio::time::timeout(std::time::Duration::from_secs(1), core.store.version()).await {
            Ok(Ok(_)) => None,
            _ => Some("store unreachable"),
        }
    };
    match problem {
        None => text(StatusCode::OK, "ready\n"),
        Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn registrations(admin: &Admin) -> Result<Response<ProxyBody>, RequestError> {
    let store = &admin.core.store;
    let internal = |e: crate::store::StoreError| RequestError::Internal(e.to_string());
    let regs = store.list_registrations().await.map_err(internal)?;
    let tcp = store.tcp_services(None).await.map_err(internal)?;
    let views: Vec<RegistrationView> = regs.into_iter().map(|r| view(admin, r, &tcp)).collect();
    Ok(json(StatusCode::OK, &views))
}

/// A registration with its live state.
fn view(admin: &Admin, r: Registration, tcp: &[TcpService]) -> RegistrationView {
    let live = admin.core.registry.get(&r.id);
    let listening = admin.tcp.listening(&r.id);
    let tcp_services = tcp
        .iter()
        .filter(|t| t.registration_id == r.id)
        .map(|t| TcpView {
            service: t.service.clone(),
            port: t.port,
            allow: t.allow.clone(),
            listening: listening
                .iter()
                .any(|(s, p)| *s == t.service && *p == t.port),
        })
        .collect();
    let streams = admin
        .core
        .metrics
        .active_streams
        .with_label_values(&[&r.id]);
    RegistrationView {
        connected: live.is_some(),
        connected_since: live.as_ref().and_then(|s| {
            s.connected_at
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        }),
        agent_version: live.as_ref().map(|s| s.agent_version.clone()),
        agent_addr: live.as_ref().map(|s| s.peer.to_string()),
        active_streams: live.as_ref().map(|_| streams.get()),
        inflight_requests: live.as_ref().map(|s| s.inflight()),
        last_heartbeat: live
            .as_ref()
            .map(|s| s.last_heartbeat.load(Ordering::Relaxed))
            .filter(|t| *t > 0),
        tcp_services,
        registration: r,
    }
}
