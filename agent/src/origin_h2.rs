//! HTTP/2 to an HTTPS origin that picked `h2` by ALPN (`http2 = true`). The gateway speaks
//! HTTP/1.1 on each tunnel stream, so for such a service the agent serves HTTP/1.1 on the
//! stream itself and sends every request over one multiplexed h2 connection per service,
//! which takes the place of a pool of HTTP/1.1 connections. A connection that died is
//! replaced by the next stream; one still open is shared by all of them.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The sending half of an origin's h2 connection.
pub type H2Sender = hyper::client::conn::http2::SendRequest<Incoming>;

/// Body of a translated answer: the origin's, or one the agent wrote.
type AnswerBody = BoxBody<Bytes, hyper::Error>;

/// How often an idle h2 connection is pinged, so a vanished origin is noticed.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// The open h2 connection of one service, if any.
#[derive(Debug, Default)]
pub struct H2Slot(Mutex<Option<H2Sender>>);

impl H2Slot {
    /// A sender on the open connection, if it is still open.
    pub fn current(&self) -> Option<H2Sender> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Start HTTP/2 on `tls` (an origin that chose `h2`), keep it as this service's connection
    /// and return a sender on it. The connection ends when the service is `retired`.
    pub async fn start<IO>(
        &self,
        tls: IO,
        service: &str,
        retired: CancellationToken,
    ) -> Result<H2Sender, String>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let span = tracing::info_span!("origin_h2", service = %service);
        tokio::spawn(
            async move {
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP/2 connection to the origin ended");
                    },
                    _ = retired.cancelled() => {}
                }
            }
            .instrument(span),
        );
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }
}

/// Serve HTTP/1.1 on `stream` (a tunnel stream) until it ends or `retired`, sending each
/// request to the origin over `sender`; `authority` names the origin when a request has no
/// `Host`.
pub async fn bridge<S>(stream: S, sender: H2Sender, authority: &str, retired: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let authority: Arc<str> = authority.into();
    let svc =
        hyper::service::service_fn(move |req| forward(req, sender.clone(), authority.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(error = %e, "stream to an HTTP/2 origin ended with an error");
        },
        _ = retired.cancelled() => {
            tracing::info!("service changed; closing its open stream");
        }
    }
}

/// One request: HTTP/1.1 in, HTTP/2 to the origin, its answer back as HTTP/1.1.
async fn forward(
    mut req: Request<Incoming>,
    mut sender: H2Sender,
    authority: Arc<str>,
) -> Result<Response<AnswerBody>, Infallible> {
    if req.headers().contains_key(header::UPGRADE) {
        return Ok(answer(
            StatusCode::NOT_IMPLEMENTED,
            "this service's origin speaks HTTP/2 (http2 = true), which carries no upgrades",
        ));
    }
    let host = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| authority.to_string());
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match format!("https://{host}{path}").parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, "unusable Host for HTTP/2")),
    }
    *req.version_mut() = Version::HTTP_2;
    drop_connection_headers(req.headers_mut());
    if let Err(e) = sender.ready().await {
        return Ok(answer(
            StatusCode::BAD_GATEWAY,
            &format!("HTTP/2 origin connection: {e}"),
        ));
    }
    match sender.send_request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            parts.version = Version::HTTP_11;
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(e) => Ok(answer(
            StatusCode::BAD_GATEWAY,
            &format!("HTTP/2 origin: {e}"),
        )),
    }
}

/// Remove the headers HTTP/2 forbids (RFC 9113 §8.2.2): `Connection` and those it lists,
/// and the other hop-by-hop ones; `TE` stays only as `trailers`.
fn drop_connection_headers(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if headers
        .get(header::TE)
        .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
}

/// An answer the agent writes itself.
fn answer(status: StatusCode, text: &str) -> Response<AnswerBody> {
    let body = Full::new(Bytes::from(format!("{text}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_do_not_reach_an_h2_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TE, "gzip".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        drop_connection_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
        let mut h = HeaderMap::new();
        h.insert(header::TE, "trailers".parse().unwrap());
        drop_connection_headers(&mut h);
        assert!(h.contains_key(header::TE));
    }
}
