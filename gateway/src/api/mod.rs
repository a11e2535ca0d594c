//! The API wing: the admin listener (probes, metrics, registrations with their live state,
//! disconnect, the store operations) and the backchannel (registration of agents). Both answer
//! errors through the one mapping in [`crate::error`] and serve their OpenAPI document at
//! `/openapi.json` (kept in `gateway/openapi/`).

pub mod admin;
pub mod admin_gate;
mod admin_ops;
pub mod backchannel;

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use crate::body::{full, ProxyBody};
use crate::error::RequestError;

/// The admin API's contract.
pub const ADMIN_OPENAPI: &str = include_str!("../../openapi/admin.json");
/// The backchannel's contract.
pub const BACKCHANNEL_OPENAPI: &str = include_str!("../../openapi/backchannel.json");

/// An OpenAPI document as a response.
fn openapi(doc: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(full(doc));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON request body of at most `max` bytes; no body at all reads as `{}`.
async fn read_json<T, B>(req: Request<B>, max: usize) -> Result<T, RequestError>
where
    T: DeserializeOwned,
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let body = Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|_| RequestError::BadRequest("request body too large or unreadable".into()))?
        .to_bytes();
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(body)
        .map_err(|e| RequestError::BadRequest(format!("invalid request body: {e}")))
}
