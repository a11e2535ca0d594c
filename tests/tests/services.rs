//! Several services behind one agent: callers pick an HTTP service by host label
//! (`<svc>--<id>.<base_domain>`), by the `G2C-Service` header or by the path form
//! (`/r/<svc>--<id>/`); without a choice the agent's first HTTP service answers. Keys may be
//! scoped to one service; an unknown service is its own 404. Real gateway, agent and apps.

use bytes::Bytes;
use g2c_agent::config::ServiceConfig;
use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{TestAgent, TestGateway};
use g2c_tests::tls_origin;
use http::{Method, Request};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET of `path` with these headers, the key in `G2C-Key`.
fn get(path: &str, key: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("g2c-key", key);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", "gateway.test");
    }
    b.body(Full::default()).unwrap()
}

struct Site {
    _dir: tempfile::TempDir,
    gw: TestGateway,
    agent: TestAgent,
    web: Backend,
    api: Backend,
    db: Backend,
    key: String,
}

async fn site() -> Site {
    let gw = TestGateway::start().await;
    let (web, api, db) = (
        Backend::start().await,
        Backend::start().await,
        Backend::start().await,
    );
    // The third HTTP service is an HTTPS origin with a certificate from its own CA.
    let dir = tempfile::tempdir().unwrap();
    let ca = tls_origin::pki(dir.path(), "site");
    let secure = tls_origin::origin(&ca, false).await;
    let mut config = gw
        .register(&[
            ("web", ServiceKind::Http, web.addr),
            ("db", ServiceKind::Tcp, db.addr),
            ("Api", ServiceKind::Http, api.addr),
        ])
        .await;
    config.services.push(ServiceConfig {
        ca_file: Some(ca.ca_file.clone()),
        server_name: Some(tls_origin::ORIGIN_NAME.into()),
        ..ServiceConfig::new("secure", ServiceKind::Http, format!("https://{secure}"))
    });
    let agent = TestAgent::start_connected(config).await;
    let key = gw.key(agent.id()).await;
    Site {
        _dir: dir,
        gw,
        agent,
        web,
        api,
        db,
        key,
    }
}

/// How many requests each app has seen: (web, api).
fn seen(s: &Site) -> (usize, usize) {
    (s.web.seen().len(), s.api.seen().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_is_reached_by_host_label_header_and_path_and_the_first_is_the_default() {
    let s = site().await;
    let http = s.gw.addrs.http.unwrap();
    let id = s.agent.id().to_owned();
    let api_host = format!("api--{id}.g2c.test");
    let web_host = format!("web--{id}.g2c.test");
    let plain_host = format!("{id}.g2c.test");
    let api_path = format!("/r/api--{id}/bytes/3?x=1");
    let web_path = format!("/r/web--{id}/bytes/3");
    let plain_path = format!("/r/{id}/bytes/3");
    // (request, which app must see it)
    let cases: Vec<(Request<Full<Bytes>>, &str)> = vec![
        (get("/bytes/3", &s.key, &[("host", &api_host)]), "api"),
        (get("/bytes/3", &s.key, &[("host", &web_host)]), "web"),
        (get("/bytes/3", &s.key, &[("host", &plain_host)]), "web"),
        (
            get(
                "/bytes/3",
                &s.key,
                &[("g2c-registration", &id), ("g2c-service", "API")],
            ),
            "api",
        ),
        (get(&plain_path, &s.key, &[("g2c-service", "api")]), "api"),
        (get(&api_path, &s.key, &[]), "api"),
        (get(&web_path, &s.key, &[]), "web"),
        (get(&plain_path, &s.key, &[]), "web"),
    ];
    for (i, (req, app)) in cases.into_iter().enumerate() {
        let before = seen(&s);
        let r = send(http, req).await;
        assert_eq!(r.status, 200, "case {i}: {:?}", r.body);
        assert_eq!(&r.body[..], b"\x00\x01\x02", "case {i}");
        let after = seen(&s);
        let want = match app {
            "api" => (before.0, before.1 + 1),
            _ => (before.0 + 1, before.1),
        };
        assert_eq!(after, want, "case {i} went to the wrong app");
    }
    // The HTTPS service, the same three ways.
    let secure_host = format!("secure--{id}.g2c.test");
    let secure_path = format!("/r/secure--{id}/bytes/3");
    for req in [
        get("/bytes/3", &s.key, &[("host", &secure_host)]),
        get(&plain_path, &s.key, &[("g2c-service", "secure")]),
        get(&secure_path, &s.key, &[]),
    ] {
        let r = send(http, req).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(&r.body[..], b"secure /bytes/3 HTTP/1.1 0");
    }
    // The app sees neither the gateway's headers nor the service prefix.
    let last = s.api.last();
    assert_eq!(last.uri, "/bytes/3?x=1");
    assert!(last.headers.get("g2c-service").is_none());
    assert!(last.headers.get("g2c-key").is_none());

    // Per-service request counts name the service as the agent announced it.
    let scrape = s.gw.scrape().await;
    let api = scrape
        .get(
            "g2c_http_service_requests_total",
            &[
                ("registration", &id),
                ("service", "Api"),
                ("status_class", "2xx"),
            ],
        )
        .unwrap();
    assert_eq!(api, 4.0);

    // The TCP service keeps its own port.
    let port = s.gw.open_tcp(&id, "db", &["127.0.0.0/8"]).await;
    let mut tcp = tokio::net::TcpStream::connect(port).await.unwrap();
    tcp.write_all(b"GET /bytes/2 HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(s.db.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_scoped_to_one_service_is_refused_elsewhere_and_unknown_services_have_their_own_404()
{
    let s = site().await;
    let http = s.gw.addrs.http.unwrap();
    let id = s.agent.id().to_owned();
    let scoped =
        s.gw.store
            .create_scoped_key(&id, Some("api"))
            .await
            .unwrap()
            .secret;
    let path = |svc: &str| format!("/r/{svc}--{id}/bytes/1");

    let ok = send(http, get(&path("api"), &scoped, &[])).await;
    assert_eq!(ok.status, 200);
    // Naming no service, a scoped key goes to its own service, not the default.
    let before = seen(&s);
    let r = send(http, get(&format!("/r/{id}/bytes/1"), &scoped, &[])).await;
    assert_eq!(r.status, 200);
    assert_eq!(seen(&s), (before.0, before.1 + 1));

    for svc in ["web", "db", "ghost"] {
        let r = send(http, get(&path(svc), &scoped, &[])).await;
        assert_eq!(r.status, 403, "{svc}");
        assert_eq!(r.headers["g2c-error"], "forbidden", "{svc}");
    }
    // An unscoped key: the unknown service and the TCP one are not HTTP services here.
    for svc in ["ghost", "db"] {
        let r = send(http, get(&path(svc), &s.key, &[])).await;
        assert_eq!(r.status, 404, "{svc}");
        assert_eq!(r.headers["g2c-error"], "unknown_service", "{svc}");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["registration"], id.as_str());
        assert!(
            body["error"]["message"].as_str().unwrap().contains(svc),
            "{body}"
        );
    }
    // A malformed name is a bad request, not a guess.
    let r = send(
        http,
        get(&format!("/r/{id}/"), &s.key, &[("g2c-service", "a b")]),
    )
    .await;
    assert_eq!(r.headers["g2c-error"], "bad_request");
    assert_eq!(seen(&s).0, 0, "nothing reached the default app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_names_services_and_creates_scoped_keys() {
    let s = site().await;
    let id = s.agent.id().to_owned();
    let mut req =
        s.gw.admin_request(Method::POST, &format!("/v1/registrations/{id}/keys"));
    *req.body_mut() = Full::new(Bytes::from_static(br#"{"service":"web"}"#));
    let r = send(s.gw.addrs.admin, req).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let created: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(created["service"], "web");
    let mut req =
        s.gw.admin_request(Method::POST, &format!("/v1/registrations/{id}/keys"));
    *req.body_mut() = Full::new(Bytes::from_static(br#"{"service":"no spaces"}"#));
    assert_eq!(send(s.gw.addrs.admin, req).await.status, 400);

    let r = send(
        s.gw.addrs.admin,
        s.gw.admin_request(Method::GET, &format!("/v1/registrations/{id}")),
    )
    .await;
    let view: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let services = view["services"].as_array().unwrap();
    let names: Vec<(&str, &str, bool)> = services
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["kind"].as_str().unwrap(),
                s["default"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("web", "http", true),
            ("db", "tcp", false),
            ("Api", "http", false),
            ("secure", "http", false)
        ]
    );
}
