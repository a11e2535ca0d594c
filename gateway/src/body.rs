//! The one body type every gateway response uses (streamed from upstream or a small buffer),
//! and the small responses every listener builds from it (bytes, JSON).

use std::task::Poll;

use bytes::{Buf, Bytes};
use http::{HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// Why a response body failed: the app's connection (hyper's error) or the gateway cutting
/// it (a revoked key). Hyper resets the stream or closes the connection on either.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Response body: boxed, streaming.
pub type ProxyBody = BoxBody<Bytes, BodyError>;

/// A body from bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
#[cfg(test)]
pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Payload bytes in a polled frame (0 for trailers, errors and the end).
pub(crate) fn data_len<D: Buf, E>(polled: &Poll<Option<Result<Frame<D>, E>>>) -> u64 {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.data_ref().map_or(0, |d| d.remaining() as u64),
        _ => 0,
    }
}

/// A JSON response with `status`.
pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<ProxyBody> {
    let mut resp = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A plain-text response with `status`.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
