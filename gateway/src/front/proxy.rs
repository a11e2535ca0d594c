//! The innermost service of the front door: rewrite an admitted request for the app (origin
//! form, hop-by-hop and gateway headers out, `X-Forwarded-*` in), send it through a pooled
//! connection of the request's tunnel, and pass the answer back, splicing an upgrade through.
//! Everything a request opens holds a lease on its key: revoking the key ends the wait for
//! the answer, the streamed response and the upgraded connection.

use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::header::{HeaderValue, HOST};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::body::{BodyFault, CallerBody};
use super::layers::api_key::KeyLease;
use super::layers::route::Target;
use super::layers::session::Tunnel;
use super::pool::{self, PooledBody, SendError};
use super::record::Facts;
use super::revoke::Revocable;
use super::{headers, route, ConnInfo, Front};
use crate::body::ProxyBody;
use crate::core::registry::AgentSession;
use crate::core::remote::Remote;
use crate::error::RequestError;

/// The proxy service of one connection.
#[derive(Clone)]
pub struct Proxy {
    /// The front door's state.
    front: Arc<Front>,
    /// The caller's connection.
    conn: ConnInfo,
    /// The caller's address as an `X-Forwarded-For` value, made once for all its requests.
    forwarded_for: HeaderValue,
}

impl Proxy {
    /// The proxy service of the caller's connection `conn`.
    pub fn new(front: Arc<Front>, conn: ConnInfo) -> Self {
        let forwarded_for = headers::forwarded_for(conn.peer.ip());
        Proxy {
            front,
            conn,
            forwarded_for,
        }
    }
}

impl tower::Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = RequestError;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, RequestError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RequestError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        Box::pin(proxy(
            self.front.clone(),
            self.conn,
            self.forwarded_for.clone(),
            req,
        ))
    }
}

async fn proxy(
    front: Arc<Front>,
    conn: ConnInfo,
    forwarded_for: HeaderValue,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, RequestError> {
    let (Some(target), Some(tunnel), Some(facts), Some(KeyLease(lease))) = (
        req.extensions_mut().remove::<Target>(),
        req.extensions_mut().remove::<Tunnel>(),
        req.extensions_mut().remove::<Arc<Facts>>(),
        req.extensions_mut().remove::<KeyLease>(),
    ) else {
        return Err(RequestError::Internal(
            "proxy reached without its layers".into(),
        ));
    };
    let reg = target.registration.as_str();
    // Resolved by the session layer for this node's tunnel; through another node, the
    // holder resolves `None` to the agent's default.
    let service_name = target.service.as_deref();
    let caller_version = req.version();
    let upgrade = (caller_version == Version::HTTP_11)
        .then(|| headers::upgrade_of(req.headers()))
        .flatten();
    let caller_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let fault = Arc::new(AtomicU8::new(0));
    let max_body = front.core.config.limits.max_body_bytes;
    let upstream_req = rewrite(
        req,
        target.rewritten,
        (conn, &forwarded_for),
        upgrade.as_ref(),
    )
    .map(|body| CallerBody::new(body, facts, max_body, fault.clone()));

    let upstream = match &tunnel {
        Tunnel::Local(session) => Upstream::Local(session, front.pools.get(session)),
        Tunnel::Remote(remote) => Upstream::Remote(remote.as_ref()),
    };
    let sending: BoxFuture<'_, _> = match &upstream {
        Upstream::Local(session, pool) => Box::pin(pool::send(
            &front.core,
            pool,
            session,
            service_name.unwrap_or("http"),
            upstream_req,
        )),
        Upstream::Remote(remote) => Box::pin(pool::send_remote(
            &front.core,
            *remote,
            reg,
            service_name,
            conn.peer,
            upstream_req,
        )),
    };
    let service = || service_name.unwrap_or("http").to_owned();
    let sent = match lease.run_until_cancelled(sending).await {
        None => return Err(RequestError::Unauthorized),
        Some(Ok(sent)) => sent,
        Some(Err(SendError::Connect(e))) => return Err(e),
        Some(Err(SendError::Http(e))) => {
            return Err(match CallerBody::fault(&fault) {
                BodyFault::Malformed => RequestError::BadRequest("malformed request body".into()),
                BodyFault::TooLarge => RequestError::PayloadTooLarge(max_body),
                BodyFault::None if matches!(&tunnel, Tunnel::Local(s) if s.link.is_closed()) => {
                    RequestError::AgentOffline(reg.to_owned())
                }
                BodyFault::None => RequestError::LocalServiceUnavailable {
                    registration: reg.to_owned(),
                    service: service(),
                    detail: format!("connection to the local service failed: {e}"),
                },
            })
        }
    };
    let mut resp = sent.response;
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let Some(caller) = caller_upgrade else {
            return Err(RequestError::LocalServiceUnavailable {
                registration: reg.to_owned(),
                service: service(),
                detail: "the app switched protocols without an upgrade request".into(),
            });
        };
        let app = hyper::upgrade::on(&mut resp);
        let span = tracing::debug_span!("upgrade", registration = reg);
        front
            .core
            .spawn(span, splice_upgrade(caller, app, lease.clone()));
    }
    headers::prepare_response(resp.headers_mut(), switching);
    *resp.version_mut() = caller_version;
    let back = match &upstream {
        Upstream::Local(_, pool) if !switching => Some(pool::Return {
            sender: sent.sender,
            pool,
            service: service(),
        }),
        _ => None,
    };
    Ok(resp.map(|body| Revocable::new(PooledBody::new(body, back), lease).boxed()))
}

/// Where a request is sent: a pooled connection of this node's session, or a fresh stream
/// through the node that holds the tunnel.
enum Upstream<'a> {
    Local(&'a AgentSession, Arc<pool::Pool>),
    Remote(&'a dyn Remote),
}

/// The request as the app gets it: origin-form target (the `/r/<id>` prefix stripped), HTTP/1.1,
/// hop-by-hop and gateway headers out, the caller's `Host` kept, `X-Forwarded-*` added.
fn rewrite<B>(
    req: Request<B>,
    rewritten: Option<http::uri::PathAndQuery>,
    (conn, forwarded_for): (ConnInfo, &HeaderValue),
    upgrade: Option<&HeaderValue>,
) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let host = route::request_host(&parts.headers, &parts.uri).map(str::to_owned);
    let original_host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let path = rewritten.or_else(|| parts.uri.path_and_query().cloned());
    parts.uri = match path {
        Some(pq) => http::Uri::from(pq),
        None => http::Uri::from_static("/"),
    };
    parts.version = Version::HTTP_11;
    headers::prepare_request(&mut parts.headers, upgrade);
    if let Some(h) = original_host {
        parts.headers.insert(HOST, h);
    }
    headers::add_forwarded(
        &mut parts.headers,
        forwarded_for,
        conn.trusted_proxy,
        conn.tls,
        host.as_deref(),
    );
    Request::from_parts(parts, body)
}

/// Copy between the caller and the app until either side ends or the key is revoked.
async fn splice_upgrade(
    caller: hyper::upgrade::OnUpgrade,
    app: hyper::upgrade::OnUpgrade,
    lease: CancellationToken,
) {
    let splice = async {
        let (caller, app) = match tokio::try_join!(caller, app) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut caller = TokioIo::new(caller);
        let mut app = TokioIo::new(app);
        if let Err(e) = tokio::io::copy_bidirectional(&mut caller, &mut app).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    };
    if lease.run_until_cancelled(splice).await.is_none() {
        tracing::info!("upgraded connection closed: its key was revoked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_sees_origin_form_its_host_and_no_gateway_credentials() {
        let req = Request::get("/r/abc/x?y=1")
            .header("host", "gw.example:8000")
            .header("proxy-authorization", "Bearer secret")
            .header("g2c-key", "secret")
            .header("authorization", "Bearer app")
            .header("connection", "keep-alive")
            .body(())
            .unwrap();
        let conn = ConnInfo {
            peer: "203.0.113.7:5555".parse().unwrap(),
            tls: true,
            trusted_proxy: false,
        };
        let xff = headers::forwarded_for(conn.peer.ip());
        let out = rewrite(req, Some("/x?y=1".parse().unwrap()), (conn, &xff), None);
        assert_eq!(out.uri(), "/x?y=1");
        assert_eq!(out.headers()["host"], "gw.example:8000");
        assert_eq!(out.headers()["authorization"], "Bearer app");
        assert!(out.headers().get("proxy-authorization").is_none());
        assert!(out.headers().get("g2c-key").is_none());
        assert!(out.headers().get("connection").is_none());
        assert_eq!(out.headers()["x-forwarded-for"], "203.0.113.7");
        assert_eq!(out.headers()["x-forwarded-proto"], "https");
    }
}
