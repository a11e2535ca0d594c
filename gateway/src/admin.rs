//! The admin listener: liveness and readiness probes, Prometheus `/metrics`, registrations with
//! their live tunnel state, and disconnecting an agent.
//!
//! It has no authentication of its own: it binds loopback by default and belongs on a private
//! interface (DESIGN.md).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use g2c_proto::error_code as code;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use crate::error::error_response;
use crate::http::body::{full, ProxyBody};
use crate::store::{Registration, TcpService};
use crate::Shared;

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
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => Response::new(full("ok\n")),
        (&Method::GET, "/readyz") => readiness(&shared).await,
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(full(shared.metrics.render()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::GET, "/v1/registrations") => match registrations(&shared).await {
            Ok((regs, tcp)) => {
                let views: Vec<RegistrationView> = regs
                    .into_iter()
                    .map(|r| {
                        let live = shared.registry.get(&r.id);
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
                            active_streams: live.as_ref().map(|_| {
                                shared
                                    .metrics
                                    .active_streams
                                    .with_label_values(&[&r.id])
                                    .get()
                            }),
                            inflight_requests: live.as_ref().map(|s| s.inflight()),
                            last_heartbeat: live
                                .as_ref()
                                .map(|s| s.last_heartbeat.load(Ordering::Relaxed))
                                .filter(|t| *t > 0),
                            tcp_services: {
                                let listening = shared.tcp.listening(&r.id);
                                tcp.iter()
                                    .filter(|t| t.registration_id == r.id)
                                    .map(|t| TcpView {
                                        service: t.service.clone(),
                                        port: t.port,
                                        allow: t.allow.clone(),
                                        listening: listening
                                            .iter()
                                            .any(|(s, p)| *s == t.service && *p == t.port),
                                    })
                                    .collect()
                            },
                            registration: r,
                        }
                    })
                    .collect();
                let mut resp = Response::new(full(Bytes::from(
                    serde_json::to_vec(&views).unwrap_or_default(),
                )));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                resp
            }
            Err(e) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL,
                e.to_string(),
                None,
            ),
        },
        (&Method::POST, path) => match path
            .strip_prefix("/v1/registrations/")
            .and_then(|p| p.strip_suffix("/disconnect"))
        {
            Some(id) if shared.registry.disconnect(id) => {
                tracing::info!(registration = id, "agent disconnected by the admin API");
                json(&serde_json::json!({ "registration": id, "disconnected": true }))
            }
            Some(id) => error_response(
                StatusCode::NOT_FOUND,
                code::AGENT_OFFLINE,
                format!("the agent for registration {id} is not connected"),
                Some(id),
            ),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn not_found() -> Response<ProxyBody> {
    error_response(
        StatusCode::NOT_FOUND,
        code::BAD_REQUEST,
        "no such endpoint".into(),
        None,
    )
}

fn json(value: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::from(value.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Ready while not draining and the store answers (within a second).
async fn readiness(shared: &Shared) -> Response<ProxyBody> {
    let problem = if !shared.ready.load(Ordering::SeqCst) {
        Some("draining")
    } else {
        match tokio::time::timeout(std::time::Duration::from_secs(1), shared.store.version()).await
        {
            Ok(Ok(_)) => None,
            _ => Some("store unreachable"),
        }
    };
    match problem {
        None => Response::new(full("ready\n")),
        Some(why) => {
            let mut r = Response::new(full(format!("{why}\n")));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
    }
}

async fn registrations(
    shared: &Shared,
) -> Result<(Vec<Registration>, Vec<TcpService>), crate::store::StoreError> {
    Ok((
        shared.store.list_registrations().await?,
        shared.store.tcp_services(None).await?,
    ))
}
