//! A small W3C WebDriver client for the GUI tests: starts Debian's `chromedriver` on a free
//! loopback port with a headless `chromium` (fresh profile, no background networking), and
//! offers the few commands the tests need: navigate, find, click, type, read text, run a
//! script, take a screenshot, read the browser's console log.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::client::send;
use crate::procs::Proc;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium driven through chromedriver.
pub struct Browser {
    driver: Proc,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Start chromedriver and open a browser session; the driver's log goes to `dir`.
    pub async fn start(dir: &Path) -> Self {
        let port = free_port();
        let driver = Proc::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1"),
            dir.join("chromedriver.log"),
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let profile = tempfile::tempdir().unwrap();
        crate::wait_until(
            Duration::from_secs(20),
            "chromedriver ready",
            || async move {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => raw(addr, "GET", "/status", None).await["value"]["ready"] == true,
                    Err(_) => false,
                }
            },
        )
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let answer = raw(addr, "POST", "/session", Some(caps)).await;
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_owned();
        Self {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_cmd(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// One command; `Err` carries the WebDriver error (code first) instead of panicking.
    async fn try_cmd(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        let answer = raw(self.addr, method, &path, body).await;
        if let Some(err) = answer["value"]["error"].as_str() {
            return Err(format!(
                "webdriver {method} {path}: {err}: {}",
                answer["value"]["message"]
            ));
        }
        Ok(answer["value"].clone())
    }

    /// Run a command on the element matching `css`, looking it up again when the page
    /// replaced it between the lookup and the command (live pages re-render their rows: a
    /// "stale element reference" is the page moving on, not a failure). `None`: no element.
    async fn on_element(
        &self,
        css: &str,
        method: &str,
        what: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        for _ in 0..20 {
            let e = self.find(css).await?;
            match self
                .try_cmd(method, &format!("/element/{e}{what}"), body.clone())
                .await
            {
                Ok(v) => return Some(v),
                Err(err) if err.contains("stale element reference") => continue,
                Err(err) => panic!("{err}"),
            }
        }
        panic!("{css}: the element went stale 20 times in a row")
    }

    /// Load `url`.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    /// The first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/elements", self.session);
        let answer = raw(
            self.addr,
            "POST",
            &path,
            Some(json!({"using": "css selector", "value": css})),
        )
        .await;
        answer["value"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|e| e[ELEMENT].as_str())
            .map(str::to_owned)
    }

    /// Wait until an element matching `css` exists.
    pub async fn wait_for(&self, css: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Click the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.wait_for(css, Duration::from_secs(10)).await;
        self.on_element(css, "POST", "/click", Some(json!({})))
            .await
            .unwrap_or_else(|| panic!("{css} disappeared before the click"));
    }

    /// Replace the text of the input matching `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.wait_for(css, Duration::from_secs(10)).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// The rendered text of the element matching `css` ("" when there is none).
    pub async fn text(&self, css: &str) -> String {
        self.on_element(css, "GET", "/text", None)
            .await
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Wait until the text of `css` satisfies `pred`; returns it.
    pub async fn wait_text(
        &self,
        css: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let t = self.text(css).await;
            if pred(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {css} to show {what}; it shows {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Run a script in the page and return its value.
    pub async fn execute(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Save a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The browser console entries since the last call: `(level, source, message)`.
    pub async fn console(&self) -> Vec<(String, String, String)> {
        let v = self
            .cmd("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or_default().to_owned(),
                    e["source"].as_str().unwrap_or_default().to_owned(),
                    e["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The page's own script errors since the last call (a failed request, such as the 401
    /// before login, is the network's entry, not the script's).
    pub async fn script_errors(&self) -> Vec<(String, String, String)> {
        self.console()
            .await
            .into_iter()
            .filter(|(level, source, _)| level == "SEVERE" && source != "network")
            .collect()
    }

    /// End the session and the driver.
    pub async fn quit(mut self) {
        let path = format!("/session/{}", self.session);
        let _ = raw(self.addr, "DELETE", &path, None).await;
        self.driver.kill().await;
    }
}

async fn raw(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("localhost:{}", addr.port()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(60), send(addr, req))
        .await
        .unwrap_or_else(|_| panic!("webdriver {method} {path}: no answer in 60 s"));
    serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
}
