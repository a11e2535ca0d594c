//! In-process gateway and agent, each started through its real `run` function on real loopback
//! sockets (`127.0.0.1:0`), with a temporary directory for store, keys and configs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use g2c_agent::config::{AgentConfig, ReconnectConfig, ServiceConfig};
use g2c_agent::status::Status;
use g2c_gateway::config::{GatewayConfig, ListenerConfig, TlsListenerConfig};
use g2c_gateway::store::Store;
use g2c_gateway::{BoundAddrs, Listeners};
use g2c_proto::registration::RegisterRequest;
use g2c_proto::{sshkeys, ServiceKind};
use http::Request;
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::wait_until;

/// A running in-process gateway.
pub struct TestGateway {
    /// Bound addresses.
    pub addrs: BoundAddrs,
    /// The config it runs with.
    pub config: GatewayConfig,
    /// Store handle (the same SQLite file or PostgreSQL database) for creating tokens and
    /// keys behind the gateway's back, as the CLI or another node would.
    pub store: Arc<dyn Store>,
    /// Temp directory holding its files.
    pub dir: Arc<tempfile::TempDir>,
    /// Self-signed CA/cert PEM when TLS is on.
    pub tls_cert_pem: Option<String>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _ports: crate::PortBlock,
}

/// Options for [`TestGateway::start_with`].
#[derive(Default)]
pub struct GatewayOptions {
    /// Serve HTTPS (and a TLS backchannel) with a fresh rcgen certificate for `localhost`.
    pub tls: bool,
    /// Upstream timeout in seconds.
    pub upstream_timeout_secs: Option<u64>,
    /// Reuse this directory (restarts keep the store and host key).
    pub dir: Option<Arc<tempfile::TempDir>>,
    /// Bind exactly these addresses (restarts keep their ports).
    pub addrs: Option<BoundAddrs>,
    /// Heartbeat interval in seconds (agents report health at this pace).
    pub heartbeat_secs: Option<u64>,
    /// Write the audit log to `audit.log` in the gateway's directory.
    pub audit_file: bool,
    /// Any further change to the config before the gateway starts.
    pub configure: Option<fn(&mut GatewayConfig)>,
    /// Keep the store in this PostgreSQL database instead of a SQLite file.
    pub store_url: Option<String>,
}

async fn bind(addr: Option<SocketAddr>) -> TcpListener {
    let addr = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    // A just-closed port may linger briefly; retry for a moment on restart.
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}");
}

/// A test gateway's config before its listeners are bound: files in `dir`, loopback TCP
/// ports from a block of its own, the options applied.
fn base_config(
    opts: &GatewayOptions,
    dir: &std::path::Path,
    ports: &crate::PortBlock,
) -> GatewayConfig {
    let mut config = GatewayConfig::default();
    config.store.path = dir.join("gateway.db");
    config.ssh.host_key = dir.join("host_key");
    config.base_domain = "g2c.test".into();
    config.tcp.bind = std::net::IpAddr::from([127, 0, 0, 1]);
    (config.limits.port_range_start, config.limits.port_range_end) = (ports.start, ports.end);
    if let Some(t) = opts.upstream_timeout_secs {
        config.limits.upstream_timeout_secs = t;
    }
    config.limits.shutdown_grace_secs = 2;
    if let Some(h) = opts.heartbeat_secs {
        config.limits.heartbeat_secs = h;
    }
    if opts.audit_file {
        config.audit.file = Some(dir.join("audit.log"));
    }
    config.store.url = opts.store_url.clone();
    if let Some(configure) = opts.configure {
        configure(&mut config);
    }
    config
}

/// Our own handle on the store `run()` opens (and migrates) as it starts.
async fn wait_for_store(config: &GatewayConfig) -> Arc<dyn Store> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match g2c_gateway::store::open(&config.store).await {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() > deadline => panic!("store: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// HTTPS and a TLS backchannel with a fresh rcgen certificate for `localhost`: the bound
/// HTTPS listener and the certificate's PEM.
async fn with_tls(
    config: &mut GatewayConfig,
    dir: &std::path::Path,
    addr: Option<SocketAddr>,
) -> (TcpListener, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let l = bind(addr).await;
    config.https = Some(TlsListenerConfig {
        listen: l.local_addr().unwrap(),
        cert: cert.clone(),
        key: key.clone(),
    });
    config.backchannel.cert = Some(cert);
    config.backchannel.key = Some(key);
    (l, ck.cert.pem())
}

impl TestGateway {
    /// Start with defaults (plain HTTP).
    pub async fn start() -> Self {
        Self::start_with(GatewayOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(opts: GatewayOptions) -> Self {
        let dir = opts
            .dir
            .clone()
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
        let ports = crate::port_block();
        let mut config = base_config(&opts, dir.path(), &ports);
        let prev = opts.addrs.as_ref();
        let http = bind(prev.and_then(|a| a.http)).await;
        config.http = Some(ListenerConfig {
            listen: http.local_addr().unwrap(),
        });
        let (https, tls_cert_pem) = if opts.tls {
            let (l, pem) = with_tls(&mut config, dir.path(), prev.and_then(|a| a.https)).await;
            (Some(l), Some(pem))
        } else {
            (None, None)
        };
        let listeners = Listeners {
            http: Some(http),
            https,
            ssh: bind(prev.map(|a| a.ssh)).await,
            backchannel: bind(prev.map(|a| a.backchannel)).await,
            admin: bind(prev.map(|a| a.admin)).await,
            peer: match &config.cluster {
                Some(c) => Some(bind(Some(c.peer_listen)).await),
                None => None,
            },
        };
        config.validate().unwrap();
        let addrs = listeners.addrs().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let config = config.clone();
            let shutdown = shutdown.clone();
            async move {
                g2c_gateway::run(listeners, config, shutdown).await.unwrap();
            }
        });
        // The store exists once run() opened it; open our own handle (same file or database).
        let store = wait_for_store(&config).await;
        // The listeners were bound before run() started, so a connect proves nothing: wait
        // for the admin API to answer its readiness probe (the store is open and the serve
        // loops run).
        wait_until(Duration::from_secs(10), "gateway ready", || async {
            crate::http_status(addrs.admin, "/readyz").await == Some(200)
        })
        .await;
        Self {
            addrs,
            config,
            store,
            dir,
            tls_cert_pem,
            _ports: ports,
            shutdown,
            task: Some(task),
        }
    }

    /// The backchannel URL.
    pub fn backchannel_url(&self) -> String {
        if self.tls_cert_pem.is_some() {
            format!("https://localhost:{}", self.addrs.backchannel.port())
        } else {
            format!("http://{}", self.addrs.backchannel)
        }
    }

    /// Plain front-door address.
    pub fn http(&self) -> SocketAddr {
        self.addrs.http.unwrap()
    }

    /// Scrape the admin listener's `/metrics`.
    pub async fn scrape(&self) -> crate::prom::Scrape {
        crate::prom::scrape(self.addrs.admin).await
    }

    /// Create a single-use token.
    pub async fn token(&self) -> String {
        self.store
            .create_token(Some(1), Some(Duration::from_secs(3600)))
            .await
            .unwrap()
            .secret
    }

    /// Create an API key for a registration.
    pub async fn key(&self, registration: &str) -> String {
        self.store.create_key(registration).await.unwrap().secret
    }

    /// The set-up most front-door tests start from: a connected agent serving one HTTP service
    /// `web` at `app`, and an API key for its registration.
    pub async fn web_agent(&self, app: SocketAddr) -> (TestAgent, String) {
        let agent =
            TestAgent::start_connected(self.register(&[("web", ServiceKind::Http, app)]).await)
                .await;
        let key = self.key(agent.id()).await;
        (agent, key)
    }

    /// Register a new agent (real backchannel call) serving `services`; returns its config.
    pub async fn register(&self, services: &[(&str, ServiceKind, SocketAddr)]) -> AgentConfig {
        let services = services
            .iter()
            .map(|(n, k, a)| ServiceConfig::new(*n, *k, a.to_string()))
            .collect();
        self.register_services(services).await
    }

    /// [`TestGateway::register`] with the services' whole configuration (HTTPS origins,
    /// health checks).
    pub async fn register_services(&self, services: Vec<ServiceConfig>) -> AgentConfig {
        let key_file = self.dir.path().join(format!("agent_key_{}", rand_suffix()));
        let key = sshkeys::load_or_generate(&key_file).unwrap();
        let ca = self.tls_cert_pem.as_ref().map(|pem| {
            let p = self.dir.path().join("ca.pem");
            std::fs::write(&p, pem).unwrap();
            p
        });
        let token = self.token().await;
        let mut config = register_with(
            &self.backchannel_url(),
            ca.as_deref(),
            &token,
            key_file,
            &key,
            "test",
            services,
        )
        .await;
        config.reconnect = ReconnectConfig {
            initial_delay_ms: 50,
            max_delay_ms: 500,
            stable_after_secs: 5,
        };
        config
    }

    /// Allow `cidrs` on a registration's TCP service and return its public address once it
    /// listens (the agent must be connected).
    pub async fn open_tcp(&self, registration: &str, service: &str, cidrs: &[&str]) -> SocketAddr {
        let ports = self.config.limits.ports();
        let cidrs: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
        let t = self
            .store
            .set_tcp_allow(registration, service, &cidrs, ports)
            .await
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], t.port));
        wait_until(
            Duration::from_secs(10),
            "public TCP port listening",
            || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
        )
        .await;
        addr
    }

    /// A request to the admin listener, with the admin token.
    pub fn admin_request(&self, method: http::Method, path: &str) -> Request<Full<Bytes>> {
        crate::client::admin_request(method, path, &self.dir.path().join("admin_token"))
    }

    /// Stop and wait for `run` to return.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Register `key` (stored in `key_file`) over the real backchannel with `token`; returns the
/// agent's config with its local API on a free loopback port.
pub async fn register_with(
    backchannel: &str,
    ca: Option<&std::path::Path>,
    token: &str,
    key_file: std::path::PathBuf,
    key: &russh::keys::PrivateKey,
    name: &str,
    services: Vec<ServiceConfig>,
) -> AgentConfig {
    let answer = g2c_agent::register::register(
        backchannel,
        ca,
        &RegisterRequest {
            name: Some(name.into()),
            public_key: sshkeys::public_openssh(key.public_key()),
            token: token.into(),
        },
        g2c_agent::register::PlainHttp::LoopbackOnly,
    )
    .await
    .unwrap();
    let mut config = AgentConfig::for_registration(&answer, key_file, services, None);
    config.local_api.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// A running in-process agent.
pub struct TestAgent {
    /// Its config.
    pub config: AgentConfig,
    /// Live status.
    pub status: Arc<Status>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestAgent {
    /// Start the agent's real `run`.
    pub fn start(config: AgentConfig) -> Self {
        let status = Arc::new(Status::new(String::new(), config.registration_id.clone()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (config, status, shutdown) = (config.clone(), status.clone(), shutdown.clone());
            async move {
                g2c_agent::run(config, status, shutdown).await.unwrap();
            }
        });
        Self {
            config,
            status,
            shutdown,
            task: Some(task),
        }
    }

    /// Start and wait until the tunnel is up.
    pub async fn start_connected(config: AgentConfig) -> Self {
        let a = Self::start(config);
        a.wait_connected().await;
        a
    }

    /// Wait until the tunnel is up.
    pub async fn wait_connected(&self) {
        let s = self.status.clone();
        wait_until(Duration::from_secs(15), "agent connected", || {
            let c = s.snapshot().connected;
            async move { c }
        })
        .await;
    }

    /// Registration ID.
    pub fn id(&self) -> &str {
        &self.config.registration_id
    }

    /// Drop the agent at once, without a drain (its sockets close as the task dies).
    pub async fn abort(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Stop and wait for it to drain.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A GET through the front door by `/r/<id>/` path with the key in `G2C-Key`.
pub fn routed(
    method: http::Method,
    id: &str,
    path: &str,
    key: &str,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("/r/{id}{path}"))
        .header("host", "gateway.test")
        .header("g2c-key", key)
        .body(Full::new(body.into()))
        .unwrap()
}
