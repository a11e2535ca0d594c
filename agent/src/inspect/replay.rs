//! Replay: send a kept request again, from the agent straight to the local app (not through
//! the gateway), and return the app's new answer to show beside the old one. The request goes
//! as it was kept: masked credentials are not kept, so they are not sent (the app may answer
//! 401 where the caller's request had a token), and the replay carries `X-G2C-Replay` so the
//! app's own logs can tell it apart.

use std::time::{Duration, Instant};

use bytes::Bytes;
use g2c_proto::http1::HOP_BY_HOP;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use super::entry::{is_masked, keep_prefix, split_head, BodyView, Entry, HeaderLine};
use super::mask::{Settings, MASK};
use crate::config::ServiceConfig;
use crate::origin_tls::OriginTls;

/// How long a replay may take in all.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most answer bytes read (the rest is not waited for).
const READ_LIMIT: u64 = 16 * 1024 * 1024;

/// Why a replay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The entry lacks what a replay needs (its body was not captured whole).
    #[error("{0}")]
    NotReplayable(String),
    /// The app could not be reached or did not answer.
    #[error("{0}")]
    Local(String),
}

/// The app's new answer.
#[derive(Debug, Serialize)]
pub struct Replayed {
    /// Masked headers and query parameters the replay went without.
    pub sent_without: Vec<String>,
    pub status: u16,
    pub headers: Vec<HeaderLine>,
    pub body: BodyView,
    pub duration_us: u64,
}

/// Send `entry` to `service` again.
pub async fn replay(
    entry: &Entry,
    service: &ServiceConfig,
    settings: &Settings,
) -> Result<Replayed, ReplayError> {
    let (req, sent_without) = rebuild(entry)?;
    let started = Instant::now();
    let answer = tokio::time::timeout(REPLAY_TIMEOUT, send(req, service))
        .await
        .map_err(|_| ReplayError::Local(format!("no answer within {REPLAY_TIMEOUT:?}")))??;
    let (parts, mut body) = answer.into_parts();
    let (mut kept, mut length) = (Vec::new(), 0u64);
    while length < READ_LIMIT {
        let Some(frame) = tokio::time::timeout(REPLAY_TIMEOUT, body.frame())
            .await
            .map_err(|_| ReplayError::Local("the answer's body stalled".into()))?
        else {
            break;
        };
        let frame = frame.map_err(|e| ReplayError::Local(format!("reading the answer: {e}")))?;
        if let Some(data) = frame.data_ref() {
            length += data.len() as u64;
            keep_prefix(&mut kept, data);
        }
    }
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| HeaderLine {
            name: n.to_string(),
            value: if settings.masks_header(n.as_str()) {
                MASK.into()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            },
        })
        .collect();
    Ok(Replayed {
        sent_without,
        status: parts.status.as_u16(),
        headers,
        body: BodyView::of(&kept, length),
        duration_us: started.elapsed().as_micros() as u64,
    })
}

/// The kept request as one to send: its head without masked or per-connection headers (and
/// its query without masked parameters), its captured body, and the names left out.
fn rebuild(entry: &Entry) -> Result<(Request<Full<Bytes>>, Vec<String>), ReplayError> {
    let not = |why: &str| ReplayError::NotReplayable(why.into());
    if !entry.replayable() {
        return Err(not(
            "its body was not kept whole (turn capture_bodies on for the service, bodies up to 1 KiB)",
        ));
    }
    let head = entry
        .request_head
        .as_deref()
        .ok_or_else(|| not("no request was seen"))?;
    let method = entry
        .method()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| not("the kept method is not one"))?;
    let mut sent_without = Vec::new();
    let target = unmasked_target(entry.target().unwrap_or("/"), &mut sent_without);
    let (_, headers) = split_head(head);
    let body = entry
        .request_body
        .as_ref()
        .map(|b| Bytes::copy_from_slice(&b.bytes))
        .unwrap_or_default();
    let mut req = Request::builder().method(method).uri(target);
    for h in headers {
        let lower = h.name.to_ascii_lowercase();
        if is_masked(&h.value) {
            sent_without.push(h.name);
            continue;
        }
        // The body is sent whole, so hyper sets its length.
        if HOP_BY_HOP.contains(&lower.as_str()) || lower == "content-length" {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) {
            req = req.header(n, v);
        }
    }
    req = req.header("x-g2c-replay", entry.seq.to_string());
    let req = req
        .body(Full::new(body))
        .map_err(|e| not(&format!("the kept request does not rebuild: {e}")))?;
    Ok((req, sent_without))
}

/// `target` without the query parameters whose values were masked (their names noted).
fn unmasked_target(target: &str, left_out: &mut Vec<String>) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((k, v)) if is_masked(v) => {
                left_out.push(format!("?{k}"));
                false
            }
            _ => true,
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Send `req` to the service over a new connection (TLS for an HTTPS origin, HTTP/1.1).
async fn send(
    req: Request<Full<Bytes>>,
    service: &ServiceConfig,
) -> Result<http::Response<hyper::body::Incoming>, ReplayError> {
    let local =
        |e: String| ReplayError::Local(format!("{} ({}): {e}", service.name, service.local));
    let tcp = TcpStream::connect(service.address())
        .await
        .map_err(|e| local(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    match OriginTls::for_service(service).map_err(local)? {
        Some(tls) => {
            let tls = tls.connect_h1(tcp).await.map_err(local)?;
            exchange(TokioIo::new(tls), req).await.map_err(local)
        }
        None => exchange(TokioIo::new(tcp), req).await.map_err(local),
    }
}

async fn exchange<IO>(
    io: IO,
    req: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}
