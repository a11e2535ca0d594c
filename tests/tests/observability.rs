//! Observability end to end: a known mix of traffic shows up in one scrape with exactly those
//! counts under the right labels (and passes `promtool check metrics`); agent figures relayed
//! over the control stream reach the scrape within two heartbeats; the audit log has one line
//! per request with the documented fields and no secret; the admin API shows live state and
//! disconnects an agent; the deploy/prometheus rules and dashboard are valid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use g2c_gateway::store::Store;
use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, GatewayOptions, TestAgent, TestGateway};
use g2c_tests::wait_until;
use http::{Method, Request};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn admin_post(path: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "admin")
        .body(Full::default())
        .unwrap()
}

async fn admin_registrations(gw: &TestGateway) -> serde_json::Value {
    let reply = send(
        gw.addrs.admin,
        Request::get("/v1/registrations")
            .header("host", "admin")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    serde_json::from_slice(&reply.body).unwrap()
}

async fn refused_source_connect(public: SocketAddr) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(public).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("a refused source is closed at once");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_traffic_mix_shows_exact_counts_in_one_scrape() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        heartbeat_secs: Some(1),
        ..Default::default()
    })
    .await;
    let a = TestAgent::start_connected(
        gw.register(&[
            ("web", ServiceKind::Http, app.addr),
            ("raw", ServiceKind::Tcp, app.addr),
        ])
        .await,
    )
    .await;
    let b = gw.register(&[("web", ServiceKind::Http, app.addr)]).await; // never connects
    let (id_a, id_b) = (a.id().to_owned(), b.registration_id.clone());
    let key_a = gw.key(&id_a).await;
    let key_b = gw.key(&id_b).await;

    const N: usize = 5; // successes
    const M: usize = 3; // 401s against registration A
    const K: usize = 2; // 502 agent_offline on registration B
    for i in 0..N {
        let r = send(
            gw.http(),
            routed(Method::GET, &id_a, &format!("/ok/{i}"), &key_a, ""),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..M {
        let r = send(gw.http(), routed(Method::GET, &id_a, "/", "g2ck_wrong", "")).await;
        assert_eq!(r.status, 401);
    }
    for _ in 0..K {
        let r = send(gw.http(), routed(Method::POST, &id_b, "/", &key_b, "x")).await;
        assert_eq!(r.status, 502);
        assert_eq!(r.error_code(), Some("agent_offline"));
    }

    // Live state on the admin API, then one agent reconnect forced through it.
    let regs = admin_registrations(&gw).await;
    let ra = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id_a.as_str())
        .unwrap()
        .clone();
    assert_eq!(ra["connected"], true);
    assert_eq!(ra["active_streams"], 1, "one pooled HTTP stream: {ra}");
    assert!(ra["agent_version"].is_string() && ra["agent_addr"].is_string());
    let status_before = a.status.snapshot().reconnects;
    let r = send(
        gw.addrs.admin,
        admin_post(&format!("/v1/registrations/{id_a}/disconnect")),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = send(
        gw.addrs.admin,
        admin_post(&format!("/v1/registrations/{id_b}/disconnect")),
    )
    .await;
    // The one error mapping: agent_offline is 502 on every listener.
    assert_eq!(r.status, 502, "B is not connected");
    assert_eq!(r.headers["g2c-error"], "agent_offline");
    let r = send(gw.addrs.admin, admin_post("/v1/no-such-thing")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["g2c-error"], "not_found");
    let st = a.status.clone();
    wait_until(Duration::from_secs(10), "agent reconnected", || {
        let s = st.snapshot();
        async move { s.connected && s.reconnects == status_before + 1 }
    })
    .await;

    // One refused TCP source (the port reopened with the new session).
    let public = gw.open_tcp(&id_a, "raw", &["127.0.0.1/32"]).await;
    refused_source_connect(public).await;

    // The agent's own report of its reconnect arrives with its next heartbeat.
    let reg_a = [("registration", id_a.as_str())];
    wait_until(Duration::from_secs(5), "agent report relayed", || async {
        gw.scrape().await.get("g2c_agent_reconnects", &reg_a) == Some(1.0)
    })
    .await;
    wait_until(Duration::from_secs(5), "store events counted", || async {
        let s = gw.scrape().await;
        s.get("g2c_api_key_events_total", &[("event", "created")]) == Some(2.0)
            && s.get("g2c_registration_events_total", &[("event", "created")]) == Some(2.0)
    })
    .await;

    let s = gw.scrape().await;
    let req = |reg: &str, class: &str| {
        s.get(
            "g2c_http_requests_total",
            &[("registration", reg), ("status_class", class)],
        )
    };
    let err = |reg: &str, code: &str| {
        s.get(
            "g2c_http_errors_total",
            &[("code", code), ("registration", reg)],
        )
    };
    assert_eq!(req(&id_a, "2xx"), Some(N as f64), "{}", s.0);
    assert_eq!(req(&id_a, "4xx"), Some(M as f64));
    assert_eq!(err(&id_a, "unauthorized"), Some(M as f64));
    assert_eq!(req(&id_b, "5xx"), Some(K as f64));
    assert_eq!(err(&id_b, "agent_offline"), Some(K as f64));
    assert_eq!(req(&id_a, "5xx"), None);
    assert_eq!(
        s.series("g2c_http_requests_total").len(),
        3,
        "no other label sets"
    );
    assert_eq!(
        s.get("g2c_http_request_duration_seconds_count", &reg_a),
        Some((N + M) as f64)
    );
    assert_eq!(s.get("g2c_tunnel_sessions_opened_total", &reg_a), Some(2.0));
    assert_eq!(s.get("g2c_tunnel_sessions_replaced_total", &reg_a), None);
    assert_eq!(s.get("g2c_agents_connected", &[]), Some(1.0));
    assert_eq!(s.get("g2c_agent_connected", &reg_a), Some(1.0));
    assert_eq!(
        s.get(
            "g2c_tcp_connections_refused_total",
            &[("registration", &id_a), ("service", "raw")]
        ),
        Some(1.0)
    );
    let out = s
        .get(
            "g2c_bytes_total",
            &[
                ("direction", "out"),
                ("protocol", "http"),
                ("registration", &id_a),
            ],
        )
        .unwrap();
    assert!(out > 0.0);
    assert!(s.get("process_resident_memory_bytes", &[]).unwrap() > 0.0);
    s.promtool_check().expect("promtool check metrics");
    // The dashboard and the alert rules only use metric names the gateway defines.
    check_deploy_prometheus_names();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_service_going_down_reaches_the_scrape_within_two_heartbeats() {
    let heartbeat = Duration::from_secs(1);
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    let gw = TestGateway::start_with(GatewayOptions {
        heartbeat_secs: Some(heartbeat.as_secs()),
        ..Default::default()
    })
    .await;
    let mut cfg = gw.register(&[("db", ServiceKind::Tcp, local_addr)]).await;
    cfg.services[0].health_check = Some(true); // off by default for TCP services
    let agent = TestAgent::start_connected(cfg).await;
    let id = agent.id().to_owned();
    let svc = [("registration", id.as_str()), ("service", "db")];
    wait_until(Duration::from_secs(5), "db reported up", || async {
        gw.scrape().await.get("g2c_agent_service_up", &svc) == Some(1.0)
    })
    .await;
    let s = gw.scrape().await;
    let info = s.series("g2c_agent_info");
    assert_eq!(info.len(), 1);
    assert_eq!(info[0]["version"], env!("CARGO_PKG_VERSION"));
    assert!(s.get("g2c_agent_service_probe_seconds", &svc).unwrap() >= 0.0);
    assert!(
        s.get(
            "g2c_agent_last_heartbeat_timestamp_seconds",
            &[("registration", &id)]
        )
        .unwrap()
            > 1.7e9
    );

    drop(local); // the local service goes away: connects are refused from now on
    let gone = Instant::now();
    wait_until(heartbeat * 2, "db reported down", || async {
        gw.scrape().await.get("g2c_agent_service_up", &svc) == Some(0.0)
    })
    .await;
    eprintln!("unhealthy service visible after {:?}", gone.elapsed());

    // The agent leaves: presence drops to 0 and its stale figures disappear.
    let mut agent = agent;
    agent.stop().await;
    wait_until(Duration::from_secs(5), "agent presence 0", || async {
        let s = gw.scrape().await;
        s.get("g2c_agent_connected", &[("registration", &id)]) == Some(0.0)
            && s.series("g2c_agent_service_up").is_empty()
            && s.series("g2c_agent_info").is_empty()
    })
    .await;
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_has_one_line_per_request_and_no_secret() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        audit_file: true,
        ..Default::default()
    })
    .await;
    let agent = TestAgent::start_connected(
        gw.register(&[
            ("web", ServiceKind::Http, app.addr),
            ("raw", ServiceKind::Tcp, app.addr),
        ])
        .await,
    )
    .await;
    let id = agent.id().to_owned();
    let created = gw.store.create_key(&id).await.unwrap();
    let (key, key_id) = (created.secret, created.info.id);
    let public = gw.open_tcp(&id, "raw", &["127.0.0.1/32"]).await;
    let audit = gw.dir.path().join("audit.log");

    let app_secret = "Bearer app-own-secret-5f1e";
    let with_secrets = Request::post(format!("/r/{id}/echo?token=query-secret-77"))
        .header("host", "gw.test")
        .header("proxy-authorization", format!("Bearer {key}"))
        .header("authorization", app_secret)
        .body(Full::new(Bytes::from_static(b"0123456789")))
        .unwrap();
    let r = send(gw.http(), with_secrets).await;
    assert_eq!(r.status, 200);
    let request_id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let r = send(
        gw.http(),
        routed(Method::GET, &id, "/x", "g2ck_wrong-secret", ""),
    )
    .await;
    assert_eq!(r.status, 401);

    let mut tcp = tokio::net::TcpStream::connect(public).await.unwrap();
    let raw = b"GET /raw HTTP/1.0\r\nHost: x\r\n\r\n";
    tcp.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200"));
    drop(tcp);

    // (open_tcp's readiness probe connections are audited too, with zero bytes.)
    wait_until(Duration::from_secs(5), "audit lines written", || {
        let lines = audit_lines(&audit);
        let http = lines.iter().filter(|l| l["kind"] == "http").count();
        let tcp = lines
            .iter()
            .filter(|l| l["kind"] == "tcp" && l["bytes_in"] != 0)
            .count();
        async move { http >= 2 && tcp >= 1 }
    })
    .await;
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [
        &key[..],
        "g2ck_wrong-secret",
        "app-own-secret",
        "query-secret",
    ] {
        assert!(!text.contains(secret), "audit log leaks {secret:?}");
    }
    let lines = audit_lines(&audit);
    let http: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "http").collect();
    assert_eq!(http.len(), 2, "one line per HTTP request: {text}");
    let ok = http.iter().find(|l| l["status"] == 200).unwrap();
    for field in [
        "time",
        "registration",
        "key_id",
        "caller",
        "method",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "error",
        "request_id",
    ] {
        assert!(ok.get(field).is_some(), "field {field} missing: {ok}");
    }
    assert_eq!(ok["registration"], id.as_str());
    assert_eq!(ok["key_id"], key_id.as_str());
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["path"], format!("/r/{id}/echo"));
    assert_eq!(ok["bytes_in"], 10);
    assert!(ok["bytes_out"].as_u64().unwrap() >= 10);
    assert_eq!(ok["request_id"], request_id.as_str());
    assert!(ok["error"].is_null());
    assert!(ok["caller"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    let denied = http.iter().find(|l| l["status"] == 401).unwrap();
    assert_eq!(denied["error"], "unauthorized");
    assert_eq!(denied["registration"], id.as_str());
    assert!(denied["key_id"].is_null());

    let tcp_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["kind"] == "tcp" && l["bytes_in"] == raw.len())
        .collect();
    assert_eq!(tcp_lines.len(), 1, "{text}");
    let t = tcp_lines[0];
    assert_eq!(t["service"], "raw");
    assert_eq!(t["bytes_out"], answer.len());
    assert_eq!(t["registration"], id.as_str());
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Metric names (histogram suffixes removed) the gateway's metrics module defines.
fn defined_metric_names() -> Vec<String> {
    let src = std::fs::read_to_string(repo_file("gateway/src/core/metrics.rs")).unwrap();
    src.split('"')
        .filter(|s| s.starts_with("g2c_") && !s.contains(' '))
        .map(str::to_owned)
        .collect()
}

/// Every `g2c_*` name used in the alert rules and the dashboard is one the gateway defines.
fn check_deploy_prometheus_names() {
    let defined = defined_metric_names();
    let mut used = Vec::new();
    for f in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/grafana-dashboard.json",
    ] {
        let text = std::fs::read_to_string(repo_file(f)).unwrap();
        for (i, _) in text.match_indices("g2c_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.push((f, name));
        }
    }
    assert!(used.len() > 5, "the files use the metrics");
    for (f, name) in used {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            defined.iter().any(|d| d == base || d == &name),
            "{f} uses {name}, which the gateway does not export"
        );
    }
}

#[test]
fn prometheus_rules_pass_promtool_and_their_unit_tests_and_the_dashboard_parses() {
    let dir = repo_file("deploy/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["check", "config", "prometheus.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian package `prometheus`; scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap())
            .unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(targets.iter().all(|t| t["expr"].is_string()), "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_at_once_on_sigterm_while_requests_in_flight_finish() {
    let app = Backend::start().await;
    let mut st = g2c_tests::procs::ProcStack::start(app.addr).await;
    let admin = st.gw.addrs.admin;
    let readyz = || {
        send(
            admin,
            Request::get("/readyz")
                .header("host", "admin")
                .body(Full::default())
                .unwrap(),
        )
    };
    assert_eq!(readyz().await.status, 200);
    assert_eq!(
        send(
            admin,
            Request::get("/healthz")
                .header("host", "admin")
                .body(Full::default())
                .unwrap()
        )
        .await
        .status,
        200
    );

    const IN_FLIGHT: usize = 5;
    let mut calls = Vec::new();
    for i in 0..IN_FLIGHT {
        let req = routed(
            Method::GET,
            &st.id,
            &format!("/slow/1500?n={i}"),
            &st.key,
            "",
        );
        calls.push(tokio::spawn(send(st.http(), req)));
    }
    wait_until(Duration::from_secs(10), "requests reached the app", || {
        let n = app
            .seen()
            .iter()
            .filter(|s| s.uri.starts_with("/slow/"))
            .count();
        async move { n == IN_FLIGHT }
    })
    .await;

    let signalled = Instant::now();
    st.gw.proc.signal("TERM");
    let not_ready = loop {
        let r = readyz().await;
        if r.status == 503 {
            break signalled.elapsed();
        }
        assert!(signalled.elapsed() < Duration::from_secs(2), "still ready");
    };
    eprintln!("/readyz answered 503 {not_ready:?} after SIGTERM");
    assert!(not_ready < Duration::from_millis(100), "{not_ready:?}");

    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "in-flight request finished");
        assert_eq!(&r.body[..], b"slow done");
    }
    assert_eq!(st.gw.proc.wait(Duration::from_secs(10)).await, Some(0));
}
