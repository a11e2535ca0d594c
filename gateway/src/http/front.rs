//! The front door: route a caller's request to a registration, authenticate it, and proxy it
//! through that registration's tunnel, streaming bodies both ways and passing upgrades through.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use http::header::{HeaderValue, HOST};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::{BodyFault, CallerBody, ProxyBody, Tracked};
use super::headers::{self, REQUEST_ID};
use super::record::RequestRecord;
use super::route;
use super::upstream::{self, UpstreamError};
use crate::error::ProxyError;
use crate::Shared;

/// Handle one caller request; always answers (errors become their mapped response).
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
) -> Response<ProxyBody> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&new_request_id()).expect("hex is a valid header")
        });
    let method = req.method().clone();
    let mut record = RequestRecord::new(
        shared.clone(),
        peer,
        method.clone(),
        req.uri().path(),
        request_id.clone(),
    );
    let mut resp = match proxy(&shared, req, peer, tls, &request_id, &mut record).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, %method, code = e.code(), party = ?e.party(), error = %e, "request refused");
            record.error = Some(e.code());
            e.to_response()
        }
    };
    record.status = resp.status().as_u16();
    resp.headers_mut().insert(REQUEST_ID, request_id);
    resp.map(|b| Tracked::new(b, record).boxed())
}

fn new_request_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

async fn proxy(
    shared: &Shared,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    request_id: &HeaderValue,
    record: &mut RequestRecord,
) -> Result<Response<ProxyBody>, ProxyError> {
    if req
        .extensions()
        .get::<super::framing::AmbiguousFraming>()
        .is_some()
    {
        return Err(ProxyError::BadRequest(
            "ambiguous request framing: both Content-Length and Transfer-Encoding, or repeated Content-Length".into(),
        ));
    }
    if let Some(problem) = headers::framing_problem(req.headers()) {
        return Err(ProxyError::BadRequest(format!(
            "ambiguous request framing: {problem}"
        )));
    }
    let limits = &shared.config.limits;
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if limits.max_body_bytes > 0 && declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(ProxyError::PayloadTooLarge(limits.max_body_bytes));
    }
    let target = route::route(req.headers(), req.uri(), &shared.config.base_domain)?;
    let reg = target.registration;
    // A refused caller is counted under the registration it named, if that one exists (only
    // on this path: a success is labelled below without another snapshot).
    let unauthorized = |record: &mut RequestRecord| {
        if shared.auth.snapshot().registrations.contains_key(&reg) {
            record.registration = Some(reg.clone());
        }
        ProxyError::Unauthorized
    };
    let Some(key) = route::api_key(req.headers()) else {
        return Err(unauthorized(record));
    };
    let Some((snapshot, key_info)) = shared.auth.key(key).await else {
        return Err(unauthorized(record));
    };
    record.key_id = Some(key_info.id.clone());
    if !snapshot.registrations.contains_key(&reg) {
        return Err(ProxyError::UnknownRegistration(reg));
    }
    record.registration = Some(reg.clone());
    if key_info.registration_id != reg {
        return Err(ProxyError::Forbidden(reg));
    }
    let limited = shared
        .registration_rate
        .check(&reg)
        .and_then(|()| shared.key_rate.check(&key_info.id));
    if let Err(wait) = limited {
        return Err(ProxyError::RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            registration: reg,
        });
    }
    let session = shared
        .registry
        .get(&reg)
        .ok_or_else(|| ProxyError::AgentOffline(reg.clone()))?;
    let cap = limits.registration_max_inflight;
    if cap > 0 && session.inflight() >= cap {
        return Err(ProxyError::Overloaded(Some(reg)));
    }

    let caller_version = req.version();
    let upgrade = if caller_version == Version::HTTP_11 {
        headers::upgrade_of(req.headers())
    } else {
        None
    };
    let caller_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let host = route::request_host(&parts.headers, &parts.uri).map(str::to_owned);
    let original_host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let path = target
        .rewritten
        .or_else(|| parts.uri.path_and_query().cloned())
        .map(|pq| pq.to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = format!("http://{}{}", upstream::authority(&reg, session.id), path)
        .parse()
        .map_err(|_| ProxyError::BadRequest("malformed request target".into()))?;
    parts.version = Version::HTTP_11;
    headers::prepare_request(&mut parts.headers, upgrade.as_ref());
    if let Some(h) = original_host {
        parts.headers.insert(HOST, h);
    }
    headers::add_forwarded(&mut parts.headers, peer.ip(), tls, host.as_deref());
    parts.headers.insert(REQUEST_ID, request_id.clone());
    let fault = Arc::new(AtomicU8::new(0));
    let body = CallerBody::new(
        body,
        record.bytes_in.clone(),
        limits.max_body_bytes,
        fault.clone(),
    );
    let upstream_req = Request::from_parts(parts, body);

    record.inflight = Some(session.begin_request());
    let timeout = shared.config.limits.upstream_timeout();
    let mut resp = match tokio::time::timeout(timeout, shared.client.request(upstream_req)).await {
        Err(_) => return Err(ProxyError::UpstreamTimeout(reg)),
        Ok(Err(e)) => {
            return Err(match CallerBody::fault(&fault) {
                BodyFault::Malformed => ProxyError::BadRequest("malformed request body".into()),
                BodyFault::TooLarge => ProxyError::PayloadTooLarge(limits.max_body_bytes),
                BodyFault::None => {
                    classify_client_error(&e, &reg, g2c_proto::mux::Mux::is_closed(&session.mux))
                }
            })
        }
        Ok(Ok(r)) => r,
    };

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        match caller_upgrade {
            Some(caller) => {
                let app = hyper::upgrade::on(&mut resp);
                tokio::spawn(splice_upgrade(caller, app));
            }
            None => {
                return Err(ProxyError::LocalServiceUnavailable {
                    registration: reg,
                    message: "the app switched protocols without an upgrade request".into(),
                })
            }
        }
    }
    headers::prepare_response(resp.headers_mut(), switching);
    *resp.version_mut() = caller_version;
    Ok(resp.map(BodyExt::boxed))
}

/// Map a client error to who failed. A broken connection on a live tunnel is the app's doing;
/// on a dead tunnel, the agent's.
fn classify_client_error(
    err: &hyper_util::client::legacy::Error,
    reg: &str,
    tunnel_closed: bool,
) -> ProxyError {
    match upstream::find_upstream_error(err) {
        Some(UpstreamError::AgentOffline) => ProxyError::AgentOffline(reg.to_owned()),
        Some(UpstreamError::LocalUnavailable(m)) => ProxyError::LocalServiceUnavailable {
            registration: reg.to_owned(),
            message: m.clone(),
        },
        Some(UpstreamError::Timeout) => ProxyError::UpstreamTimeout(reg.to_owned()),
        Some(UpstreamError::TooManyStreams) => ProxyError::Overloaded(Some(reg.to_owned())),
        None if tunnel_closed => ProxyError::AgentOffline(reg.to_owned()),
        None => ProxyError::LocalServiceUnavailable {
            registration: reg.to_owned(),
            message: format!("connection to the local service failed: {err}"),
        },
    }
}

async fn splice_upgrade(caller: hyper::upgrade::OnUpgrade, app: hyper::upgrade::OnUpgrade) {
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
}
