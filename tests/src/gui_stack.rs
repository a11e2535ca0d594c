//! The agent-GUI tests' stack: a gateway, two backends and the real agent binary with its
//! local API, plus the helpers to call that API the way the GUI and `g2c-agent status` do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use g2c_proto::ServiceKind;
use http::{Method, Request};
use http_body_util::Full;

use crate::backend::Backend;
use crate::client::{send, Reply};
use crate::harness::{routed, TestGateway};
use crate::procs::{bin, start_agent, Proc};
use crate::wait_until;

/// A gateway, two backends and the real `g2c-agent` binary serving its local API, with the
/// API's address, login secret and an API key for the registration.
pub struct GuiStack {
    pub gw: TestGateway,
    pub app_a: Backend,
    pub app_b: Backend,
    pub agent: Proc,
    pub config: PathBuf,
    pub api: SocketAddr,
    pub secret: String,
    pub id: String,
    pub key: String,
    pub dir: tempfile::TempDir,
}

impl GuiStack {
    /// Start everything and wait until the agent is connected.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// The same, with the agent's config changed by `edit` before the agent starts.
    pub async fn start_with(edit: impl FnOnce(&mut g2c_agent::config::AgentConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let gw = TestGateway::start().await;
        let (app_a, app_b) = (Backend::start().await, Backend::start().await);
        let mut cfg = gw.register(&[("web", ServiceKind::Http, app_a.addr)]).await;
        cfg.gateway.backchannel = Some(gw.backchannel_url());
        // A setting the form shows but does not edit: a save must keep it.
        cfg.services[0].health = Some(g2c_agent::config::HealthCheck {
            path: Some("/bytes/2".into()),
            ..g2c_agent::config::HealthCheck::new(g2c_agent::config::HealthProbe::Http)
        });
        edit(&mut cfg);
        let config = dir.path().join("agent.toml");
        cfg.save(&config).unwrap();
        let agent = start_agent(&config, dir.path().join("agent.out"));
        let api_file = config.with_extension("api");
        wait_until(Duration::from_secs(15), "agent API address recorded", || {
            let f = api_file.clone();
            async move { std::fs::read_to_string(f).is_ok_and(|t| t.parse::<SocketAddr>().is_ok()) }
        })
        .await;
        let api: SocketAddr = std::fs::read_to_string(&api_file).unwrap().parse().unwrap();
        let secret = std::fs::read_to_string(config.with_extension("secret"))
            .unwrap()
            .trim()
            .to_owned();
        let id = cfg.registration_id.clone();
        let key = gw.key(&id).await;
        let st = Self {
            gw,
            app_a,
            app_b,
            agent,
            config,
            api,
            secret,
            id,
            key,
            dir,
        };
        st.wait_status("connected", |s| s["connected"] == true)
            .await;
        st
    }

    /// One API call with extra headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| *k == "host") {
            req = req.header("host", self.api.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send(
            self.api,
            req.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
        )
        .await
    }

    /// One API call with the secret as a bearer token.
    pub async fn bearer(&self, method: Method, path: &str, body: &str) -> Reply {
        let auth = format!("Bearer {}", self.secret);
        self.call(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    /// The agent's status, with the secret as bearer.
    pub async fn status(&self) -> serde_json::Value {
        let r = self.bearer(Method::GET, "/v1/status", "").await;
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Poll the status until `pred` holds (15 s).
    pub async fn wait_status(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.status().await;
            if pred(&s) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Log the browser in at the GUI's `page` (`#requests`, ...).
    pub async fn log_in(&self, browser: &crate::webdriver::Browser, page: &str) {
        browser.goto(&format!("http://{}/{page}", self.api)).await;
        browser.wait_for("#secret", Duration::from_secs(15)).await;
        browser.fill("#secret", &self.secret).await;
        browser.click("#login").await;
        browser
            .wait_for("#conn-pill", Duration::from_secs(15))
            .await;
    }

    /// `method path` with `body` through the gateway to the agent's `web` service.
    pub async fn gw_request(&self, method: Method, path: &str, body: &str) -> Reply {
        send(
            self.gw.http(),
            routed(method, &self.id, path, &self.key, body.to_owned()),
        )
        .await
    }

    /// A request through the gateway to the agent's `web` service.
    pub async fn through_gateway(&self, path: &str) -> Reply {
        send(
            self.gw.http(),
            routed(Method::GET, &self.id, path, &self.key, ""),
        )
        .await
    }
}

/// Where the browser tests save their PNGs.
pub fn screenshots() -> PathBuf {
    // target/<profile>/g2c-agent → target/gui-screenshots
    bin("g2c-agent")
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("gui-screenshots")
}

/// Whether `app` saw a request for `uri`.
pub fn saw(app: &Backend, uri: &str) -> bool {
    app.seen().iter().any(|s| s.uri == uri)
}
