//! The CLI's store operations on the admin API, end to end: a key created there calls through
//! the front door at once and is refused at once when revoked there; tokens are created with
//! their limits and listed without secrets; a TCP allowlist is set (and refused when
//! malformed); a wrong method gets 405 with `Allow`; disconnecting an offline agent is not an
//! error, and an unknown or revoked registration is a 404. Both listeners serve their OpenAPI document.

use bytes::Bytes;
use g2c_tests::backend::Backend;
use g2c_tests::client::{send, Reply};
use g2c_tests::harness::{routed, TestGateway};
use http::{Method, StatusCode};
use http_body_util::Full;
use serde_json::Value;

async fn admin(gw: &TestGateway, method: Method, path: &str, body: &str) -> (Reply, Value) {
    let req = gw.admin_request(method, path);
    let (parts, _) = req.into_parts();
    let req = http::Request::from_parts(parts, Full::new(Bytes::from(body.to_owned())));
    let reply = send(gw.addrs.admin, req).await;
    let v = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tokens_and_allowlists_are_managed_through_the_admin_api() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let (agent, _) = gw.web_agent(app.addr).await;
    let id = agent.id();

    let (r, key) = admin(
        &gw,
        Method::POST,
        &format!("/v1/registrations/{id}/keys"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let secret = key["secret"].as_str().unwrap();
    let key_id = key["id"].as_str().unwrap();
    let through = send(gw.http(), routed(Method::GET, id, "/", secret, "")).await;
    assert_eq!(through.status, StatusCode::OK);

    let (r, _) = admin(&gw, Method::POST, &format!("/v1/keys/{key_id}/revoke"), "").await;
    assert_eq!(r.status, StatusCode::OK);
    let refused = send(gw.http(), routed(Method::GET, id, "/", secret, "")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "revoked at once");
    let (_, shown) = admin(&gw, Method::GET, &format!("/v1/keys/{key_id}"), "").await;
    assert!(
        shown["revoked_at"].is_i64() && shown.get("secret").is_none(),
        "{shown}"
    );

    let (r, token) = admin(
        &gw,
        Method::POST,
        "/v1/tokens",
        r#"{"uses":2,"ttl_secs":600}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(token["secret"].as_str().unwrap().starts_with("g2ct_"));
    assert_eq!(token["uses_left"], 2);
    let (_, list) = admin(&gw, Method::GET, "/v1/tokens", "").await;
    let listed = list.as_array().unwrap();
    assert!(listed.iter().any(|t| t["id"] == token["id"]));
    assert!(listed.iter().all(|t| t.get("secret").is_none()));
    let (r, v) = admin(&gw, Method::POST, "/v1/tokens", r#"{"uses":-1}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{v}");

    let allow = format!("/v1/registrations/{id}/tcp/db/allow");
    let (r, t) = admin(&gw, Method::PUT, &allow, r#"{"allow":["203.0.113.0/24"]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{t}");
    assert_eq!(t["allow"][0], "203.0.113.0/24");
    assert!(t["port"].as_u64().unwrap() > 0);
    let (r, _) = admin(
        &gw,
        Method::PUT,
        &allow,
        r#"{"allow":["::ffff:1.2.3.4/64"]}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let (r, _) = admin(&gw, Method::DELETE, "/v1/tokens", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, POST");
    assert_eq!(r.error_code(), Some("method_not_allowed"));

    let (r, _) = admin(&gw, Method::POST, "/v1/registrations/ghost/disconnect", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let (r, _) = admin(
        &gw,
        Method::POST,
        &format!("/v1/registrations/{id}/revoke"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let (r, _) = admin(
        &gw,
        Method::POST,
        &format!("/v1/registrations/{id}/disconnect"),
        "",
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a revoked registration is no longer live"
    );
    let (_, v) = admin(&gw, Method::GET, &format!("/v1/registrations/{id}"), "").await;
    assert!(v["revoked_at"].is_i64(), "{v}");

    for at in [gw.addrs.admin, gw.addrs.backchannel] {
        let mut req = gw.admin_request(Method::GET, "/openapi.json");
        req.headers_mut().remove("authorization");
        let doc: Value = serde_json::from_slice(&send(at, req).await.body).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
