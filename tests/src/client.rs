//! A small HTTP client for tests: one connection per call (HTTP/1.1, h2c prior knowledge, or
//! h2/HTTP/1.1 over TLS with ALPN), returning status, headers and the whole body.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Whole body.
    pub body: Bytes,
    /// Protocol version used.
    pub version: Version,
}

impl Reply {
    /// The `G2C-Error` code, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.headers.get("g2c-error").and_then(|v| v.to_str().ok())
    }

    /// The JSON body's `error.code`.
    pub fn json_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["error"]["code"].as_str().map(str::to_owned)
    }
}

/// A request to a gateway's admin listener with the token in `token_file` (written beside the
/// store at the gateway's first start).
pub fn admin_request(
    method: http::Method,
    path: &str,
    token_file: &std::path::Path,
) -> Request<Full<Bytes>> {
    let token = std::fs::read_to_string(token_file).expect("the gateway wrote its admin token");
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {}", token.trim()))
        .body(Full::default())
        .unwrap()
}

/// Send one HTTP/1.1 request on a fresh connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    collect(s.send_request(req).await.unwrap()).await
}

/// Send one request over HTTP/2 cleartext with prior knowledge.
pub async fn send_h2c(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut s, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    collect(s.send_request(req).await.unwrap()).await
}

/// Send one request over TLS, negotiating h2 or HTTP/1.1 by ALPN, trusting `ca_pem`.
pub async fn send_tls(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    req: Request<Full<Bytes>>,
) -> Reply {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        let (mut s, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        collect(s.send_request(req).await.unwrap()).await
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        collect(s.send_request(req).await.unwrap()).await
    }
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let version = resp.version();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body,
        version,
    }
}

/// [`send`] that reports failure instead of panicking (a refused or reset connection, a
/// truncated body, no answer within `limit`): for load loops that count what failed.
pub async fn try_send(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
    limit: std::time::Duration,
) -> Result<Reply, String> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        })
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// Send `req` (for `/bytes/N`) and check the `size` pattern bytes of the answer as they
/// stream, never holding the whole body; returns the seconds it took.
pub async fn download_checked(addr: SocketAddr, req: Request<Full<Bytes>>, size: u64) -> f64 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let started = std::time::Instant::now();
    let resp = s.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(
                data.iter()
                    .enumerate()
                    .all(|(i, b)| *b == crate::pattern_byte(got + i as u64)),
                "corrupt at {got}"
            );
            got += data.len() as u64;
        }
    }
    assert_eq!(got, size);
    started.elapsed().as_secs_f64()
}

/// A WebSocket upgrade of `uri` (`ws://gw.test/...`) through the gateway, the key in
/// `G2C-Key`, for `tokio_tungstenite::client_async`.
pub fn ws_request(
    uri: &str,
    key: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    tokio_tungstenite::tungstenite::handshake::client::Request::builder()
        .uri(uri)
        .header("host", "gw.test")
        .header("g2c-key", key)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap()
}
