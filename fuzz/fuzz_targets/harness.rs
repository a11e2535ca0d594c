//! What the gateway fuzz targets share: one gateway state (the real front-door stack and
//! backchannel on a SQLite store in a temporary directory, one registration with an API key,
//! no agent connected) built once per process, and one in-memory HTTP/1 exchange with the real
//! handlers and the real limits.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use g2c_gateway::config::GatewayConfig;
use g2c_gateway::fuzzing::{Handlers, ProxyBody};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The gateway state and the credentials inputs may name.
pub struct Harness {
    /// Built once.
    pub gateway: Arc<Handlers>,
    /// `G2CREG` in an input becomes this registration ID.
    pub registration: String,
    /// `G2CKEY` in an input becomes this API key.
    pub key: String,
    _dir: tempfile::TempDir,
}

/// The runtime every input runs on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// The gateway state, built on first use.
pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        runtime().block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut config = GatewayConfig::default();
            config.base_domain = "g2c.test".into();
            config.store.path = dir.path().join("gateway.db");
            config.ssh.host_key = dir.path().join("host_key");
            let gateway = Arc::new(Handlers::build(config).await.expect("gateway state"));
            let ports = g2c_gateway::store::PortRange {
                start: 30000,
                end: 30999,
                per_registration: 4,
            };
            let token = gateway
                .store()
                .create_token(Some(1), Some(Duration::from_secs(3600)))
                .await
                .expect("token")
                .secret;
            let reg = gateway
                .store()
                .register(
                    &token,
                    Some("fuzz"),
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoO77y3o9L9fItc8Lm9cP9mP6pRSA0kwuMdoO6DNAFg fuzz",
                    ports,
                )
                .await
                .expect("registration");
            let key = gateway.store().create_key(&reg.id).await.expect("key").secret;
            gateway.refresh().await;
            Harness {
                gateway,
                registration: reg.id,
                key,
                _dir: dir,
            }
        })
    })
}

/// Put the harness's real credentials where the input has the placeholders.
pub fn with_credentials(h: &Harness, input: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(input);
    if !text.contains("G2CREG") && !text.contains("G2CKEY") {
        return input.to_vec();
    }
    text.replace("G2CREG", &h.registration)
        .replace("G2CKEY", &h.key)
        .into_bytes()
}

/// Serve one in-memory connection with `handler`, write `input` to it, half-close, and return
/// what came back. A connection that neither answers nor closes within 5 s is a hang: panic.
pub async fn exchange<F, Fut>(input: &[u8], handler: F) -> Vec<u8>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let limits = &harness().gateway.config().limits;
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let handler = Arc::new(handler);
    let svc = hyper::service::service_fn(move |req| {
        let fut = handler(req, peer);
        async move { Ok::<_, std::convert::Infallible>(fut.await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .serve_connection(TokioIo::new(server), svc)
        .with_upgrades();
    let served = tokio::spawn(conn);
    let mut out = Vec::new();
    let io = async {
        let _ = client.write_all(input).await;
        let _ = client.shutdown().await;
        let _ = client.read_to_end(&mut out).await;
    };
    if tokio::time::timeout(Duration::from_secs(5), io).await.is_err() {
        panic!("the connection hung: neither answered nor closed in 5 s");
    }
    served.abort();
    out
}

/// The status of the first response in `out`, if any.
pub fn first_status(out: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(out.get(..out.len().min(64))?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}
