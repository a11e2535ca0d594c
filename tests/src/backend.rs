//! The private application behind the agent: a real hyper HTTP/1.1 server on `127.0.0.1:0` that
//! records what it saw.
//!
//! Routes: `/echo` (any method; echoes the body, streamed), `/bytes/N` (N pattern bytes),
//! `/sink` (consumes the body; answers its length and checksum), `/slow/MS`, `/slowbytes/MS/N`,
//! `/drip/N` (one byte per 50 ms), `/status/N` (answers status N), `/ws` (WebSocket echo).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::pattern_byte;

/// What the app saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// Headers as received.
    pub headers: HeaderMap,
}

/// A running backend.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Start on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.set_nodelay(true);
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, seen.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            connections,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the backend saw a request")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|n: Infallible| match n {})
        .boxed()
}

/// Simple order-sensitive checksum (FNV-1a 64).
pub fn checksum(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// FNV-1a offset basis.
pub const CHECKSUM_INIT: u64 = 0xcbf29ce484222325;

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    seen.lock().unwrap().push(Seen {
        method: req.method().clone(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_owned();
    let resp = if path == "/close" {
        // The app ends the keep-alive connection after this answer.
        let mut r = Response::new(full("closing"));
        r.headers_mut()
            .insert(http::header::CONNECTION, "close".parse().unwrap());
        r
    } else if path == "/echo" {
        let mut r = Response::new(req.into_body().boxed());
        r.headers_mut()
            .insert("x-echo-method", "yes".parse().unwrap());
        r
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        bytes(n.parse().unwrap_or(0))
    } else if path == "/sink" {
        sink(req).await
    } else if let Some(rest) = path.strip_prefix("/slowbytes/") {
        // /slowbytes/MS/N: wait MS, then N pattern bytes.
        let (ms, n) = rest.split_once('/').unwrap_or((rest, "0"));
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        let n: u64 = n.parse().unwrap_or(0);
        let body: Vec<u8> = (0..n).map(pattern_byte).collect();
        Response::new(full(body))
    } else if let Some(n) = path.strip_prefix("/drip/") {
        // /drip/N: headers at once, then one pattern byte every 50 ms, N in all.
        drip(n.parse().unwrap_or(0))
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        Response::new(full("slow done"))
    } else if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(full(format!("status {code}")));
        *r.status_mut() = code.parse().unwrap_or(StatusCode::BAD_REQUEST);
        r
    } else if path == "/ws" {
        websocket(req)
    } else {
        let mut r = Response::new(full(format!("hello from the private app: {path}")));
        r.headers_mut().insert("x-app", "1".parse().unwrap());
        r
    };
    Ok(resp)
}

/// `/bytes/N`: N pattern bytes, streamed in 64 KiB chunks, with a length.
fn bytes(n: u64) -> Response<Body> {
    let stream = futures::stream::unfold(0u64, move |off| async move {
        if off >= n {
            return None;
        }
        let len = (n - off).min(64 * 1024);
        let chunk: Vec<u8> = (off..off + len).map(pattern_byte).collect();
        Some((
            Ok::<_, hyper::Error>(Frame::data(Bytes::from(chunk))),
            off + len,
        ))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, n.to_string().parse().unwrap());
    r
}

/// `/sink`: read the whole body; answer its length and checksum.
async fn sink(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut count = 0u64;
    let mut sum = CHECKSUM_INIT;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    count += d.len() as u64;
                    sum = checksum(d, sum);
                }
            }
            Err(_) => break,
        }
    }
    Response::new(full(format!("{{\"bytes\":{count},\"checksum\":{sum}}}")))
}

/// `/drip/N`: headers at once, then one pattern byte every 50 ms, N in all.
fn drip(n: u64) -> Response<Body> {
    let stream = futures::stream::unfold(0u64, move |i| async move {
        if i >= n {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((
            Ok::<_, hyper::Error>(Frame::data(Bytes::from(vec![pattern_byte(i)]))),
            i + 1,
        ))
    });
    Response::new(BodyExt::boxed(StreamBody::new(stream)))
}

/// `/ws`: a WebSocket echo.
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(up) = on_upgrade.await {
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(up),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
        }
    });
    let accept = key
        .map(|k| tokio_tungstenite::tungstenite::handshake::derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(""))
        .unwrap()
}
