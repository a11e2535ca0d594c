//! The agent's local GUI and JSON API on `127.0.0.1:3015` (configurable; a non-loopback
//! address needs `local_api.allow_remote`). One listener serves the embedded page (no CDN, works
//! offline) and `/v1/*`. Every request passes the same gate here: a Host header naming this
//! machine (no DNS rebinding), then for the API a session cookie or the secret as a bearer
//! token, and for a state-changing call a same-origin request carrying the session's CSRF
//! token. The handlers live in `api`, `logs`, `ops` and `diagnostics`.

pub mod api;
pub mod auth;
pub mod diagnostics;
pub mod logs;
pub mod ops;
pub mod requests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::LocalApiConfig;
use crate::supervisor::Supervisor;

/// The body of a GUI answer: whole, or (the request event stream) fed as it goes.
pub type GuiBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// A response of the GUI listener.
pub type Resp = Response<GuiBody>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> GuiBody {
    use http_body_util::BodyExt;
    Full::new(bytes.into()).boxed_unsync()
}

const INDEX_HTML: &str = include_str!("../../gui/index.html");
const APP_JS: &str = include_str!("../../gui/app.js");
const INSPECT_JS: &str = include_str!("../../gui/inspect.js");
const APP_CSS: &str = include_str!("../../gui/app.css");

/// Page policy: our own scripts and styles only, no framing, nothing leaves the page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Bind the listener, refusing a non-loopback address unless it is explicitly allowed.
pub async fn bind(config: &LocalApiConfig) -> std::io::Result<TcpListener> {
    if !config.listen.ip().is_loopback() && !config.allow_remote {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a loopback address; set local_api.allow_remote = true to expose the GUI",
                config.listen
            ),
        ));
    }
    TcpListener::bind(config.listen).await
}

/// Serve the GUI and API on `listener` until `shutdown`; requests in flight then finish.
pub async fn serve(
    listener: TcpListener,
    control: Arc<Supervisor>,
    auth: Arc<auth::GuiAuth>,
    shutdown: CancellationToken,
) {
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, "local API and GUI listening");
    let allow_remote = control.config().local_api.allow_remote;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "local API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let control = control.clone();
        let auth = auth.clone();
        let conn_shutdown = shutdown.clone();
        let stop = shutdown.clone();
        let port = local.map(|a| a.port()).unwrap_or(0);
        tokio::spawn(
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    let control = control.clone();
                    let auth = auth.clone();
                    let stop = stop.clone();
                    async move {
                        let gate = Gate {
                            port,
                            allow_remote,
                            auth,
                            shutdown: stop.clone(),
                        };
                        Ok::<_, Infallible>(with_headers(handle(&control, gate, req).await))
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(Duration::from_secs(10))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = conn_shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                    }
                }
            }
            .instrument(tracing::debug_span!("local_api", %peer)),
        );
    }
}

/// What the gate knows about the listener, and the login state it checks callers against.
#[derive(Clone)]
pub struct Gate {
    /// The port we listen on (names the session cookie: cookies do not tell ports apart).
    pub port: u16,
    /// Whether non-loopback access is allowed (then any Host is accepted).
    pub allow_remote: bool,
    /// The login secret and browser sessions (kept across in-process restarts).
    pub auth: Arc<auth::GuiAuth>,
    /// Ends the event streams when the agent stops.
    pub shutdown: CancellationToken,
}

impl Gate {
    /// The session cookie's name.
    pub fn cookie_name(&self) -> String {
        format!("g2c_session_{}", self.port)
    }
}

async fn handle(control: &Supervisor, gate: Gate, req: Request<Incoming>) -> Resp {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Host header required",
        );
    };
    if !gate.allow_remote && !is_local_host(&host) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            "this API answers to localhost names only",
        );
    }
    let path = req.uri().path().to_owned();
    if path.starts_with("/v1/") {
        return api::handle(control, gate, &host, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET only",
        );
    }
    match path.as_str() {
        "/" | "/index.html" => asset(INDEX_HTML, "text/html; charset=utf-8"),
        "/app.js" => asset(APP_JS, "text/javascript; charset=utf-8"),
        "/inspect.js" => asset(INSPECT_JS, "text/javascript; charset=utf-8"),
        "/app.css" => asset(APP_CSS, "text/css; charset=utf-8"),
        "/favicon.ico" => {
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such page"),
    }
}

/// Whether a Host header names this machine (`localhost`, a loopback IP), any port.
fn is_local_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn asset(text: &'static str, content_type: &'static str) -> Resp {
    let mut r = Response::new(full(Bytes::from_static(text.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Security headers on every answer.
fn with_headers(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A JSON answer.
pub fn json<T: serde::Serialize>(code: StatusCode, body: &T) -> Resp {
    let mut r = Response::new(full(serde_json::to_vec(body).unwrap_or_default()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON error `{"error":{"code","message"}}`.
pub fn error(code: StatusCode, kind: &str, message: impl Into<String>) -> Resp {
    json(
        code,
        &serde_json::json!({"error": {"code": kind, "message": message.into()}}),
    )
}

/// A JSON error naming the config field at fault.
pub fn field_error(field: &str, message: impl Into<String>) -> Resp {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({"error": {"code": "invalid_config", "field": field, "message": message.into()}}),
    )
}

/// The address the GUI is reachable at, for `g2c-agent gui`.
pub fn url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    match addr {
        SocketAddr::V6(_) if !addr.ip().is_unspecified() => {
            format!("http://[{host}]:{}/", addr.port())
        }
        _ => format!("http://{host}:{}/", addr.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_host_names_pass() {
        for ok in [
            "127.0.0.1:3015",
            "localhost:3015",
            "[::1]:3015",
            "localhost",
            "127.0.0.2",
        ] {
            assert!(is_local_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:3015",
            "10.0.0.1:3015",
            "localhost.evil.example",
            "[fe80::1]:1",
        ] {
            assert!(!is_local_host(bad), "{bad}");
        }
    }
}
