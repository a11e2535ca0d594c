//! One test per caller-facing error code: status, `G2C-Error` header and JSON body agree, and
//! the message says who failed.

use std::time::Duration;

use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::{send, Reply};
use g2c_tests::harness::{routed, GatewayOptions, TestAgent, TestGateway};
use http::{Method, Request, StatusCode};
use http_body_util::Full;

fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "body: {:?}", reply.body);
    assert_eq!(reply.error_code(), Some(code));
    assert_eq!(reply.json_code().as_deref(), Some(code));
    assert_eq!(reply.headers["content-type"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_errors_401_403_404_400() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let a = TestAgent::start_connected(gw.register(&[("web", ServiceKind::Http, app.addr)]).await)
        .await;
    let b = gw.register(&[("web", ServiceKind::Http, app.addr)]).await;
    let key_a = gw.key(a.id()).await;
    let key_b = gw.key(&b.registration_id).await;

    let no_key = Request::get(format!("/r/{}/", a.id()))
        .header("host", "gw")
        .body(Full::default())
        .unwrap();
    assert_error(
        &send(gw.http(), no_key).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let bad_key = routed(Method::GET, a.id(), "/", "g2ck_not_a_key", "");
    assert_error(
        &send(gw.http(), bad_key).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let other = send(gw.http(), routed(Method::GET, a.id(), "/", &key_b, "")).await;
    assert_error(&other, StatusCode::FORBIDDEN, "forbidden");
    let unknown = send(gw.http(), routed(Method::GET, "nosuchreg", "/", &key_a, "")).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "unknown_registration");
    let unnamed = Request::get("/plain")
        .header("host", "gw")
        .header("g2c-key", &key_a)
        .body(Full::default())
        .unwrap();
    assert_error(
        &send(gw.http(), unnamed).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(app.seen().is_empty(), "no refused request reached the app");
    // The right key still works.
    assert_eq!(
        send(gw.http(), routed(Method::GET, a.id(), "/", &key_a, ""))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_offline_is_502() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let cfg = gw.register(&[("web", ServiceKind::Http, app.addr)]).await;
    let key = gw.key(&cfg.registration_id).await;
    let reply = send(
        gw.http(),
        routed(Method::GET, &cfg.registration_id, "/", &key, ""),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_GATEWAY, "agent_offline");
    // And again after an agent came and went.
    let mut agent = TestAgent::start_connected(cfg.clone()).await;
    assert_eq!(
        send(gw.http(), routed(Method::GET, agent.id(), "/", &key, ""))
            .await
            .status,
        StatusCode::OK
    );
    agent.stop().await;
    let id = cfg.registration_id.clone();
    g2c_tests::wait_until(
        Duration::from_secs(5),
        "gateway notices the agent left",
        || {
            let (addr, id, key) = (gw.http(), id.clone(), key.clone());
            async move {
                send(addr, routed(Method::GET, &id, "/", &key, ""))
                    .await
                    .status
                    == StatusCode::BAD_GATEWAY
            }
        },
    )
    .await;
    let reply = send(gw.http(), routed(Method::GET, &id, "/", &key, "")).await;
    assert_error(&reply, StatusCode::BAD_GATEWAY, "agent_offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_app_down_is_502_local_service_unavailable() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = TestGateway::start().await;
    let agent =
        TestAgent::start_connected(gw.register(&[("web", ServiceKind::Http, closed)]).await).await;
    let key = gw.key(agent.id()).await;
    let reply = send(gw.http(), routed(Method::GET, agent.id(), "/", &key, "")).await;
    assert_error(&reply, StatusCode::BAD_GATEWAY, "local_service_unavailable");
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["error"]["registration"], agent.id());
    // The caller learns which service, never where it lives inside the site or the OS error.
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"web\""), "names the service: {message}");
    let body = String::from_utf8_lossy(&reply.body);
    for secret in [closed.to_string(), "127.0.0.1".into(), "refused".into()] {
        assert!(!body.contains(&secret), "{secret:?} leaked in {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_app_is_504() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        upstream_timeout_secs: Some(1),
        ..Default::default()
    })
    .await;
    let (agent, key) = gw.web_agent(app.addr).await;
    let started = std::time::Instant::now();
    let reply = send(
        gw.http(),
        routed(Method::GET, agent.id(), "/slow/3000", &key, ""),
    )
    .await;
    assert_error(&reply, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered at the timeout, not after the app"
    );
    // A fast request right after still works.
    assert_eq!(
        send(
            gw.http(),
            routed(Method::GET, agent.id(), "/slow/10", &key, "")
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_is_429_with_retry_after_and_other_registrations_unaffected() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        configure: Some(|c| {
            c.limits.registration_rate_per_sec = 2;
            c.limits.registration_burst = 5;
        }),
        ..Default::default()
    })
    .await;
    let a = TestAgent::start_connected(gw.register(&[("web", ServiceKind::Http, app.addr)]).await)
        .await;
    let b = TestAgent::start_connected(gw.register(&[("web", ServiceKind::Http, app.addr)]).await)
        .await;
    let (key_a, key_b) = (gw.key(a.id()).await, gw.key(b.id()).await);

    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..12 {
        let r = send(
            gw.http(),
            routed(Method::GET, a.id(), &format!("/a{i}"), &key_a, ""),
        )
        .await;
        let status = r.status;
        if status == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
            limited = Some(r);
        }
        statuses.push(status.as_u16());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // A burst of 5, plus at most a couple refilled at 2/s while the loop ran.
    assert!((5..=8).contains(&ok), "{statuses:?}");
    let limited = limited.expect("some requests were limited");
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 1, "a token comes back within 0.5 s at 2/s");
    assert!(
        app.seen()
            .iter()
            .filter(|s| s.uri.starts_with("/a"))
            .count()
            == ok,
        "limited requests never reached the app"
    );
    // Another registration is unaffected.
    for i in 0..5 {
        let r = send(
            gw.http(),
            routed(Method::GET, b.id(), &format!("/b{i}"), &key_b, ""),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // The limited one recovers once tokens refill.
    g2c_tests::wait_until(
        Duration::from_secs(3),
        "registration A admitted again",
        || async {
            send(gw.http(), routed(Method::GET, a.id(), "/again", &key_a, ""))
                .await
                .status
                == StatusCode::OK
        },
    )
    .await;
}
