//! Observability end to end: a known mix of traffic shows up in one scrape with exactly those
//! counts under the right labels (and passes `promtool check metrics`); agent figures relayed
//! over the control stream reach the scrape within two heartbeats; the audit log has one line
//! per request with the documented fields and no secret; the admin API shows live state and
//! disconnects an agent; the deploy/prometheus rules and dashboard are valid.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, GatewayOptions, TestAgent, TestGateway};
use g2c_tests::wait_until;
use http::{Method, Request};
use http_body_util::Full;
use tokio::io::AsyncReadExt;

async fn admin_registrations(gw: &TestGateway) -> serde_json::Value {
    let reply = send(
        gw.addrs.admin,
        gw.admin_request(Method::GET, "/v1/registrations"),
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

    send_the_mix(&gw, (&id_a, &key_a), (&id_b, &key_b)).await;
    admin_shows_live_state_and_disconnects(&gw, &a, &id_a, &id_b).await;
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

    the_scrape_has_exactly_the_mix(&gw.scrape().await, &id_a, &id_b);
}

const N: usize = 5; // successes
const M: usize = 3; // 401s against registration A
const K: usize = 2; // 502 agent_offline on registration B

/// N successes and M wrong keys against A, K requests to B whose agent never connected.
async fn send_the_mix(gw: &TestGateway, (id_a, key_a): (&str, &str), (id_b, key_b): (&str, &str)) {
    for i in 0..N {
        let r = send(
            gw.http(),
            routed(Method::GET, id_a, &format!("/ok/{i}"), key_a, ""),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    for _ in 0..M {
        let r = send(gw.http(), routed(Method::GET, id_a, "/", "g2ck_wrong", "")).await;
        assert_eq!(r.status, 401);
    }
    for _ in 0..K {
        let r = send(gw.http(), routed(Method::POST, id_b, "/", key_b, "x")).await;
        assert_eq!(r.status, 502);
        assert_eq!(r.error_code(), Some("agent_offline"));
    }
}

/// Live state on the admin API, then one agent reconnect forced through it.
async fn admin_shows_live_state_and_disconnects(
    gw: &TestGateway,
    a: &TestAgent,
    id_a: &str,
    id_b: &str,
) {
    let regs = admin_registrations(gw).await;
    let ra = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id_a)
        .unwrap()
        .clone();
    assert_eq!(ra["connected"], true);
    assert_eq!(ra["active_streams"], 1, "one pooled HTTP stream: {ra}");
    assert!(ra["agent_version"].is_string() && ra["agent_addr"].is_string());
    let status_before = a.status.snapshot().reconnects;
    let r = send(
        gw.addrs.admin,
        gw.admin_request(
            Method::POST,
            &format!("/v1/registrations/{id_a}/disconnect"),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = send(
        gw.addrs.admin,
        gw.admin_request(
            Method::POST,
            &format!("/v1/registrations/{id_b}/disconnect"),
        ),
    )
    .await;
    // Idempotent: B is not connected, so nothing was disconnected (not a gateway error).
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["disconnected"], false, "B is not connected");
    let r = send(
        gw.addrs.admin,
        gw.admin_request(Method::POST, "/v1/no-such-thing"),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["g2c-error"], "not_found");
    let st = a.status.clone();
    wait_until(Duration::from_secs(10), "agent reconnected", || {
        let s = st.snapshot();
        async move { s.connected && s.reconnects == status_before + 1 }
    })
    .await;
}

/// Exactly the mix's counts under the right labels, and nothing else.
fn the_scrape_has_exactly_the_mix(s: &g2c_tests::prom::Scrape, id_a: &str, id_b: &str) {
    let reg_a = [("registration", id_a)];
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
    assert_eq!(req(id_a, "2xx"), Some(N as f64), "{}", s.0);
    assert_eq!(req(id_a, "4xx"), Some(M as f64));
    assert_eq!(err(id_a, "unauthorized"), Some(M as f64));
    assert_eq!(req(id_b, "5xx"), Some(K as f64));
    assert_eq!(err(id_b, "agent_offline"), Some(K as f64));
    assert_eq!(req(id_a, "5xx"), None);
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
            &[("registration", id_a), ("service", "raw")]
        ),
        Some(1.0)
    );
    let out = s
        .get(
            "g2c_bytes_total",
            &[
                ("direction", "out"),
                ("protocol", "http"),
                ("registration", id_a),
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
                .header("host", "127.0.0.1")
                .body(Full::default())
                .unwrap(),
        )
    };
    assert_eq!(readyz().await.status, 200);
    assert_eq!(
        send(
            admin,
            Request::get("/healthz")
                .header("host", "127.0.0.1")
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
