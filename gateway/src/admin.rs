//! The admin listener: liveness and readiness probes, Prometheus `/metrics`, and a read-only
//! view of registrations with their live tunnel state.

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
        (&Method::GET, "/readyz") => {
            if shared.ready.load(Ordering::SeqCst) {
                Response::new(full("ready\n"))
            } else {
                let mut r = Response::new(full("draining\n"));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            }
        }
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
        _ => error_response(
            StatusCode::NOT_FOUND,
            code::BAD_REQUEST,
            "no such endpoint".into(),
            None,
        ),
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
