//! The admin listener: liveness and readiness probes, Prometheus `/metrics`, its OpenAPI
//! document, registrations with their live tunnel state, disconnecting an agent, and the
//! CLI's store operations (tokens, keys, revocation, TCP allowlists, in [`super::admin_ops`]).
//!
//! It binds loopback by default and belongs on a private interface (DESIGN.md); every request
//! passes the [`AdminGate`] first (token, Host, no cross-site).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::admin_gate::AdminGate;
use super::admin_ops as ops;
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
    /// The services the connected agent announced, with the health it last reported.
    services: Vec<ServiceView>,
}

#[derive(Serialize)]
struct ServiceView {
    name: String,
    kind: g2c_proto::ServiceKind,
    /// The HTTP service requests go to when they name none.
    default: bool,
    /// `None` until the agent reports, or when the service is not health-checked.
    healthy: Option<bool>,
    /// The last probe's duration, microseconds.
    probe_us: Option<u64>,
}

#[derive(Serialize)]
struct TcpView {
    service: String,
    port: u16,
    allow: Vec<String>,
    listening: bool,
}

/// The admin API's endpoints, by path; what [`handle`] dispatches on.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Registrations,
    Registration(&'a str),
    Disconnect(&'a str),
    RevokeRegistration(&'a str),
    RegistrationKeys(&'a str),
    TcpAllow(&'a str, &'a str),
    Tokens,
    Token(&'a str),
    RevokeToken(&'a str),
    Keys,
    Key(&'a str),
    RevokeKey(&'a str),
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Option<Self> {
        let fixed = match path {
            "/healthz" => Some(Self::Healthz),
            "/readyz" => Some(Self::Readyz),
            "/metrics" => Some(Self::Metrics),
            "/openapi.json" => Some(Self::OpenApi),
            "/v1/registrations" => Some(Self::Registrations),
            "/v1/tokens" => Some(Self::Tokens),
            "/v1/keys" => Some(Self::Keys),
            _ => None,
        };
        if fixed.is_some() {
            return fixed;
        }
        let rest = path.strip_prefix("/v1/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["registrations", id] => Some(Self::Registration(id)),
            ["registrations", id, "disconnect"] => Some(Self::Disconnect(id)),
            ["registrations", id, "revoke"] => Some(Self::RevokeRegistration(id)),
            ["registrations", id, "keys"] => Some(Self::RegistrationKeys(id)),
            ["registrations", id, "tcp", service, "allow"] => Some(Self::TcpAllow(id, service)),
            ["tokens", id] => Some(Self::Token(id)),
            ["tokens", id, "revoke"] => Some(Self::RevokeToken(id)),
            ["keys", id] => Some(Self::Key(id)),
            ["keys", id, "revoke"] => Some(Self::RevokeKey(id)),
            _ => None,
        }
        .filter(|r| r.ids().iter().all(|id| !id.is_empty()))
    }

    fn ids(&self) -> Vec<&str> {
        match self {
            Self::Registration(id)
            | Self::Disconnect(id)
            | Self::RevokeRegistration(id)
            | Self::RegistrationKeys(id)
            | Self::Token(id)
            | Self::RevokeToken(id)
            | Self::Key(id)
            | Self::RevokeKey(id) => vec![id],
            Self::TcpAllow(id, service) => vec![id, service],
            _ => vec![],
        }
    }

    /// The methods the endpoint takes, for `Allow`.
    fn allow(&self) -> &'static str {
        match self {
            Self::Disconnect(_)
            | Self::RevokeRegistration(_)
            | Self::RevokeToken(_)
            | Self::RevokeKey(_) => "POST",
            Self::Registrations | Self::RegistrationKeys(_) | Self::Tokens => "GET, POST",
            Self::TcpAllow(..) => "PUT",
            _ => "GET",
        }
    }
}

/// Handle one admin request.
pub async fn handle<B>(admin: Arc<Admin>, req: Request<B>) -> Response<ProxyBody>
where
    B: http_body::Body + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(e) = admin.gate.check(&req) {
        return e.to_response();
    }
    let path = req.uri().path().to_owned();
    let Some(route) = Route::of(&path) else {
        return RequestError::NoSuchEndpoint.to_response();
    };
    dispatch(&admin, route, req)
        .await
        .unwrap_or_else(|e| e.to_response())
}

async fn dispatch<B>(
    admin: &Admin,
    route: Route<'_>,
    req: Request<B>,
) -> Result<Response<ProxyBody>, RequestError>
where
    B: http_body::Body + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let core = &admin.core;
    match (req.method().clone(), &route) {
        (Method::GET, Route::Healthz) => Ok(text(StatusCode::OK, "ok\n")),
        (Method::GET, Route::Readyz) => Ok(readiness(core).await),
        (Method::GET, Route::Metrics) => Ok(metrics(core)),
        (Method::GET, Route::OpenApi) => Ok(super::openapi(super::ADMIN_OPENAPI)),
        (Method::GET, Route::Registrations) => registrations(admin).await,
        (Method::POST, Route::Registrations) => ops::create_registration(core, req).await,
        (Method::GET, Route::Registration(id)) => registration(admin, id).await,
        (Method::POST, Route::RevokeRegistration(id)) => ops::revoke_registration(core, id).await,
        (Method::POST, Route::Disconnect(id)) => disconnect(core, id).await,
        (Method::GET, Route::RegistrationKeys(id)) => ops::list_keys(core, Some(id)).await,
        (Method::POST, Route::RegistrationKeys(id)) => ops::create_key(core, id, req).await,
        (Method::PUT, Route::TcpAllow(id, service)) => {
            ops::set_tcp_allow(core, id, service, req).await
        }
        (Method::GET, Route::Tokens) => ops::list_tokens(core).await,
        (Method::POST, Route::Tokens) => ops::create_token(core, req).await,
        (Method::GET, Route::Token(id)) => ops::token(core, id).await,
        (Method::POST, Route::RevokeToken(id)) => ops::revoke_token(core, id).await,
        (Method::GET, Route::Keys) => ops::list_keys(core, None).await,
        (Method::GET, Route::Key(id)) => ops::key(core, id).await,
        (Method::POST, Route::RevokeKey(id)) => ops::revoke_key(core, id).await,
        _ => Err(RequestError::MethodNotAllowed(route.allow())),
    }
}

fn metrics(core: &Core) -> Response<ProxyBody> {
    let mut r = text(StatusCode::OK, core.metrics.render());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// Close a registration's tunnel (the agent reconnects). Idempotent: an agent that is not
/// connected is reported as such; an unknown registration is a 404.
async fn disconnect(core: &Core, id: &str) -> Result<Response<ProxyBody>, RequestError> {
    let disconnected = core.registry.disconnect(id);
    if disconnected {
        tracing::info!(registration = id, "agent disconnected by the admin API");
    } else if !core.auth.snapshot().registrations.contains_key(id) {
        return Err(RequestError::UnknownRegistration(id.to_owned()));
    }
    let body = serde_json::json!({ "registration": id, "disconnected": disconnected });
    Ok(json(StatusCode::OK, &body))
}

/// Ready while not draining. An unreachable store does not make a node unready: it goes on
/// serving the tunnels and keys it has cached (taking every node out of a load balancer
/// because the shared database restarts would be the outage a cluster exists to avoid); the
/// answer says so, for an operator's eyes.
async fn readiness(core: &Core) -> Response<ProxyBody> {
    if !core.is_ready() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    let probe = tokio::time::timeout(std::time::Duration::from_secs(1), core.store.version());
    match probe.await {
        Ok(Ok(_)) => text(StatusCode::OK, "ready\n"),
        _ => text(
            StatusCode::OK,
            "ready (store unreachable: serving cached credentials; writes fail with 503)\n",
        ),
    }
}

async fn registrations(admin: &Admin) -> Result<Response<ProxyBody>, RequestError> {
    let store = &admin.core.store;
    let regs = store.list_registrations().await?;
    let tcp = store.tcp_services(None).await?;
    let views: Vec<RegistrationView> = regs.into_iter().map(|r| view(admin, r, &tcp)).collect();
    Ok(json(StatusCode::OK, &views))
}

async fn registration(admin: &Admin, id: &str) -> Result<Response<ProxyBody>, RequestError> {
    let store = &admin.core.store;
    let reg = store.registration(id).await?;
    let tcp = store.tcp_services(Some(id)).await?;
    Ok(json(StatusCode::OK, &view(admin, reg, &tcp)))
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
        services: live.as_ref().map(|s| services_view(s)).unwrap_or_default(),
        registration: r,
    }
}

/// A live session's services and their reported health.
fn services_view(session: &crate::core::registry::AgentSession) -> Vec<ServiceView> {
    let health = session.health.read().unwrap_or_else(|p| p.into_inner());
    let default = session.http_service_named(None);
    session
        .services
        .iter()
        .map(|d| {
            let h = health.iter().find(|h| h.name == d.name);
            ServiceView {
                name: d.name.clone(),
                kind: d.kind,
                default: d.kind == g2c_proto::ServiceKind::Http && Some(d.name.as_str()) == default,
                healthy: h.map(|h| h.healthy),
                probe_us: h.map(|h| h.latency_us),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Route;

    /// Every operation in `openapi/admin.json` is routed, with the methods the document gives
    /// it, and the router has no endpoint the document leaves out.
    #[test]
    fn the_document_and_the_router_agree() {
        let doc: serde_json::Value = serde_json::from_str(super::super::ADMIN_OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            let concrete = path.replace("{id}", "abc").replace("{service}", "db");
            let route = Route::of(&concrete).unwrap_or_else(|| panic!("{path} is not routed"));
            let mut documented: Vec<String> = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .map(|k| k.to_ascii_uppercase())
                .collect();
            documented.sort();
            let mut routed: Vec<String> = route.allow().split(", ").map(str::to_owned).collect();
            routed.sort();
            assert_eq!(documented, routed, "{path}");
        }
        assert_eq!(
            paths.len(),
            16,
            "a new route needs its place in the document"
        );
        for stray in [
            "/v1",
            "/v1/registrations/abc/nope",
            "/v1/tokens/",
            "/v1/keys/a/b/c",
        ] {
            assert_eq!(Route::of(stray), None, "{stray}");
        }
    }
}
