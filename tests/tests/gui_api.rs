//! The agent's local JSON API (what the GUI and `g2c-agent status` call), against the real
//! `g2c-agent` binary connected to a gateway: probed for auth and CSRF holes, its diagnostics
//! bundle searched for secrets, key rotation and restart driven through it.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use g2c_agent::config::AgentConfig;
use g2c_tests::gui_stack::GuiStack;
use g2c_tests::procs::bin;
use g2c_tests::wait_until;
use http::Method;

/// A gateway, two HTTP apps, and the real agent binary serving `web` → app A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_call_needs_the_secret_and_cross_site_posts_are_refused() {
    let st = GuiStack::start().await;
    no_call_answers_without_the_secret(&st).await;
    let (cookie, csrf) = log_in(&st).await;
    state_changes_need_same_origin_and_the_token(&st, &cookie, &csrf).await;
    foreign_hosts_are_refused_and_the_cli_reads_the_same_api(&st).await;
    a_non_loopback_listener_needs_the_switch(&st).await;
}

/// Every endpoint answers 401 without the secret, with a wrong one, or a forged cookie.
async fn no_call_answers_without_the_secret(st: &GuiStack) {
    let calls = [
        (Method::GET, "/v1/status"),
        (Method::GET, "/v1/session"),
        (Method::GET, "/v1/config"),
        (Method::PUT, "/v1/config"),
        (Method::GET, "/v1/logs"),
        (Method::GET, "/v1/logs/files"),
        (Method::POST, "/v1/reconnect"),
        (Method::POST, "/v1/restart"),
        (Method::POST, "/v1/services/web/test"),
        (Method::POST, "/v1/rotate-key"),
        (Method::GET, "/v1/diagnostics"),
        (Method::GET, "/v1/requests"),
        (Method::GET, "/v1/requests/stream"),
        (Method::GET, "/v1/requests/1"),
        (Method::POST, "/v1/requests/1/replay"),
        (Method::GET, "/v1/metrics/series"),
        (Method::POST, "/v1/logout"),
        (Method::GET, "/v1/no-such-thing"),
    ];
    for (m, p) in &calls {
        for auth in [
            None,
            Some("Bearer not-the-secret"),
            Some("Basic Zm9vOmJhcg=="),
        ] {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            let r = st.call(m.clone(), p, &headers, "{}").await;
            assert_eq!(r.status, 401, "{m} {p} with {auth:?}");
            assert_eq!(r.json_code().as_deref(), Some("unauthorized"));
        }
    }
    // A forged session cookie is no better.
    let cookie = format!("g2c_session_{}=deadbeef", st.api.port());
    let r = st
        .call(Method::GET, "/v1/status", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(r.status, 401);
}

/// Login: wrong secret 401, a form post (what a cross-site form can send) 415, the right one
/// 200 with an HttpOnly SameSite=Strict cookie. Returns the cookie and the CSRF token.
async fn log_in(st: &GuiStack) -> (String, String) {
    let json = [("content-type", "application/json")];
    let r = st
        .call(Method::POST, "/v1/login", &json, r#"{"secret":"wrong"}"#)
        .await;
    assert_eq!(r.status, 401);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let body = format!("secret={}", st.secret);
    assert_eq!(
        st.call(Method::POST, "/v1/login", &form, &body)
            .await
            .status,
        415
    );
    let body = serde_json::json!({"secret": st.secret}).to_string();
    let r = st.call(Method::POST, "/v1/login", &json, &body).await;
    assert_eq!(r.status, 200);
    let set_cookie = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let csrf = csrf["csrf"].as_str().unwrap().to_owned();
    let r = st
        .call(Method::GET, "/v1/status", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(r.status, 200);
    (cookie, csrf)
}

/// State changes from a browser session: refused cross-site, or without the CSRF token.
async fn state_changes_need_same_origin_and_the_token(st: &GuiStack, cookie: &str, csrf: &str) {
    let before = st.status().await["reconnects"].as_u64().unwrap();
    let origin = format!("http://{}", st.api);
    let refused = [
        vec![
            ("cookie", cookie),
            ("x-csrf-token", csrf),
            ("origin", "http://evil.example"),
        ],
        vec![
            ("cookie", cookie),
            ("x-csrf-token", csrf),
            ("sec-fetch-site", "cross-site"),
        ],
        vec![("cookie", cookie), ("origin", origin.as_str())],
        vec![
            ("cookie", cookie),
            ("x-csrf-token", "0000"),
            ("origin", origin.as_str()),
        ],
    ];
    // A replay from another site would make the agent send a request to the app: refused
    // like every other state change.
    assert_eq!(st.through_gateway("/bytes/5").await.status, 200);
    let app_saw = st.app_a.seen().len();
    for headers in &refused {
        for path in ["/v1/reconnect", "/v1/requests/1/replay"] {
            let r = st.call(Method::POST, path, headers, "").await;
            assert_eq!(r.status, 403, "{path} {headers:?}");
            assert!(matches!(
                r.json_code().as_deref(),
                Some("cross_site" | "csrf")
            ));
        }
    }
    assert_eq!(st.app_a.seen().len(), app_saw, "no replay reached the app");
    // A bearer secret from another site's page is refused the same way.
    let auth = format!("Bearer {}", st.secret);
    let r = st
        .call(
            Method::POST,
            "/v1/reconnect",
            &[("authorization", &auth), ("origin", "http://evil.example")],
            "",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        st.status().await["reconnects"].as_u64().unwrap(),
        before,
        "a refused call changed nothing"
    );
    // The same call, same-origin with the token, works.
    let ok = [
        ("cookie", cookie),
        ("x-csrf-token", csrf),
        ("origin", origin.as_str()),
    ];
    assert_eq!(
        st.call(Method::POST, "/v1/reconnect", &ok, "").await.status,
        202
    );
    st.wait_status("reconnected", |s| {
        s["reconnects"].as_u64() > Some(before) && s["connected"] == true
    })
    .await;
}

/// DNS rebinding: a foreign Host name is refused even with the secret; `g2c-agent status`
/// reads the same API with the secret file.
async fn foreign_hosts_are_refused_and_the_cli_reads_the_same_api(st: &GuiStack) {
    let auth = format!("Bearer {}", st.secret);
    let r = st
        .call(
            Method::GET,
            "/v1/status",
            &[("authorization", &auth), ("host", "evil.example")],
            "",
        )
        .await;
    assert_eq!(r.status, 421);

    // `g2c-agent status` reads the same API with the secret file.
    let out = tokio::process::Command::new(bin("g2c-agent"))
        .arg("--config")
        .arg(&st.config)
        .arg("status")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("connected:     yes"),
        "{text}"
    );
    let out = tokio::process::Command::new(bin("g2c-agent"))
        .arg("--config")
        .arg(&st.config)
        .args(["gui", "--show-secret"])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), st.secret);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(st.config.with_extension("secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

/// A non-loopback listen address without the explicit switch: refused by the config check and
/// by the listener itself.
async fn a_non_loopback_listener_needs_the_switch(st: &GuiStack) {
    let mut cfg = AgentConfig::load(&st.config).unwrap();
    cfg.local_api.listen = "0.0.0.0:0".parse().unwrap();
    let open = st.dir.path().join("open.toml");
    cfg.save(&open).unwrap();
    for cmd in [&["config", "check"][..], &["run"][..]] {
        let out = tokio::process::Command::new(bin("g2c-agent"))
            .arg("--config")
            .arg(&open)
            .args(cmd)
            .env("G2C_LOG_DIR", st.dir.path().join("open-logs"))
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("local_api.listen"),
            "{cmd:?}: {err}"
        );
    }
    let e = g2c_agent::gui::bind(&cfg.local_api).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diagnostics_bundle_holds_status_config_and_logs_but_no_secret() {
    let st = GuiStack::start().await;
    // Make sure the log has something from this run, including a refused login.
    let r = st
        .call(
            Method::POST,
            "/v1/login",
            &[("content-type", "application/json")],
            r#"{"secret":"nope"}"#,
        )
        .await;
    assert_eq!(r.status, 401);
    let r = st.bearer(Method::GET, "/v1/diagnostics", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/gzip");
    assert!(r.headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains(".tar.gz"));
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&r.body[..]));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        files.insert(name, text);
    }
    let names: Vec<_> = files.keys().cloned().collect();
    for want in [
        "status.json",
        "config.toml",
        "system.json",
        "logs/agent.log",
    ] {
        assert!(
            names.contains(&format!("g2c-diagnostics/{want}")),
            "{want} missing from {names:?}"
        );
    }
    assert!(files["g2c-diagnostics/status.json"].contains(&st.id));
    assert!(files["g2c-diagnostics/config.toml"].contains(&st.id));
    assert!(files["g2c-diagnostics/logs/agent.log"].contains("GUI login refused"));

    // Nothing secret: not the GUI secret, not the private key (any line of it).
    let all: String = files.values().cloned().collect();
    assert!(!all.contains(&st.secret), "the GUI secret leaked");
    assert!(!all.contains("PRIVATE KEY"), "a private key leaked");
    let cfg = AgentConfig::load(&st.config).unwrap();
    let key_text = std::fs::read_to_string(&cfg.key_file).unwrap();
    for line in key_text
        .lines()
        .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
    {
        assert!(!all.contains(line), "private key material leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_and_restart_from_the_api_keep_the_agent_serving() {
    let mut st = GuiStack::start().await;
    let cfg = AgentConfig::load(&st.config).unwrap();
    let old_key = std::fs::read_to_string(&cfg.key_file).unwrap();

    // A wrong token changes nothing.
    let r = st
        .bearer(Method::POST, "/v1/rotate-key", r#"{"token":"not-a-token"}"#)
        .await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(std::fs::read_to_string(&cfg.key_file).unwrap(), old_key);
    assert_eq!(
        AgentConfig::load(&st.config).unwrap().registration_id,
        st.id
    );

    // A fresh token: a new key, a new registration, the tunnel follows.
    let body = serde_json::json!({"token": st.gw.token().await}).to_string();
    let r = st.bearer(Method::POST, "/v1/rotate-key", &body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let answer: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let new_id = answer["registration_id"].as_str().unwrap().to_owned();
    assert_eq!(answer["old_registration_id"], st.id.as_str());
    assert_ne!(new_id, st.id);
    let new_key = std::fs::read_to_string(&cfg.key_file).unwrap();
    assert_ne!(new_key, old_key, "the key file holds a new key");
    assert_eq!(
        AgentConfig::load(&st.config).unwrap().registration_id,
        new_id
    );
    let id = new_id.clone();
    st.wait_status("connected as the new registration", move |s| {
        s["connected"] == true && s["registration_id"] == id.as_str()
    })
    .await;
    st.id = new_id.clone();
    st.key = st.gw.key(&new_id).await;
    let r = st.through_gateway("/bytes/7").await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 7));

    // Restart: the agent re-reads its file and comes back in the same process.
    let pid = st.status().await["pid"].clone();
    let old_api = st.api;
    let r = st.bearer(Method::POST, "/v1/restart", "").await;
    assert_eq!(r.status, 202);
    let api_file = st.config.with_extension("api");
    wait_until(
        Duration::from_secs(20),
        "the API back after the restart",
        || {
            let f = api_file.clone();
            async move {
                std::fs::read_to_string(f)
                    .ok()
                    .and_then(|t| t.parse::<SocketAddr>().ok())
                    .is_some_and(|a| a != old_api)
            }
        },
    )
    .await;
    st.api = std::fs::read_to_string(&api_file).unwrap().parse().unwrap();
    st.wait_status("connected after the restart", |s| s["connected"] == true)
        .await;
    assert_eq!(st.status().await["pid"], pid, "same process");
    let r = st.through_gateway("/bytes/9").await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 9));
}
