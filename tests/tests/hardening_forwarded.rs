//! What a caller says about itself: `X-Forwarded-For` and `X-Request-Id` from a caller that is
//! no trusted proxy are replaced (the caller's id travels on apart, as `X-Caller-Request-Id`,
//! and in the audit line); from a configured trusted proxy they are kept and appended to. (On
//! main both were taken as given from anyone.)

use std::time::Duration;

use g2c_gateway::config::GatewayConfig;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, GatewayOptions, TestGateway};
use http::Method;

async fn forged_request(gw: &TestGateway, app: &Backend) -> (http::HeaderMap, http::HeaderMap) {
    let (agent, key) = gw.web_agent(app.addr).await;
    let mut req = routed(Method::GET, agent.id(), "/whoami", &key, "");
    let h = req.headers_mut();
    h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
    h.insert("x-request-id", "forged-id-1".parse().unwrap());
    h.insert("x-caller-request-id", "also-forged".parse().unwrap());
    let reply = send(gw.http(), req).await;
    assert_eq!(reply.status, 200);
    let seen = app.seen().pop().expect("the app saw the request").headers;
    (reply.headers, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_caller_cannot_say_where_it_came_from_or_name_the_request() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        audit_file: true,
        ..Default::default()
    })
    .await;
    let (reply, seen) = forged_request(&gw, &app).await;
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "replaced, not appended"
    );
    let id = seen["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "forged-id-1");
    assert_eq!(
        reply["x-request-id"],
        id.as_str(),
        "the caller learns the real id"
    );
    assert_eq!(
        seen["x-caller-request-id"], "forged-id-1",
        "its own id, kept apart"
    );
    // The audit line names both, each as what it is.
    let log = gw.dir.path().join("audit.log");
    g2c_tests::wait_until(Duration::from_secs(5), "the audit line", || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&id))
    })
    .await;
    let line: serde_json::Value = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["request_id"] == id.as_str())
        .unwrap();
    assert_eq!(line["caller_request_id"], "forged-id-1");
    assert_eq!(
        line["caller"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
}

fn trust_loopback(c: &mut GatewayConfig) {
    c.trusted_proxies = vec!["127.0.0.0/8".into()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_is_appended_to_and_its_request_id_kept() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        configure: Some(trust_loopback),
        ..Default::default()
    })
    .await;
    let (reply, seen) = forged_request(&gw, &app).await;
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(seen["x-request-id"], "forged-id-1");
    assert_eq!(reply["x-request-id"], "forged-id-1");
    assert!(
        !seen.contains_key("x-caller-request-id"),
        "never taken from a caller"
    );
}
