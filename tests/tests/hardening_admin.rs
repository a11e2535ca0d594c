//! The admin API tried as a hostile page in an operator's browser would: without the token it
//! reads and changes nothing; a DNS-rebound Host name or a cross-site request is refused even
//! when the request carries the token; probes and the scrape stay open.

use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::TestGateway;
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_the_admin_api_reads_and_changes_nothing() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let (agent, _key) = gw.web_agent(app.addr).await;
    let admin = gw.addrs.admin;
    let disconnect = format!("/v1/registrations/{}/disconnect", agent.id());
    for (method, path) in [
        (Method::GET, "/v1/registrations"),
        (Method::POST, disconnect.as_str()),
    ] {
        let mut req = gw.admin_request(method.clone(), path);
        req.headers_mut().remove("authorization");
        let r = send(admin, req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(r.headers["g2c-error"], "unauthorized");
        let mut req = gw.admin_request(method.clone(), path);
        req.headers_mut()
            .insert("authorization", "Bearer g2ca_guess".parse().unwrap());
        assert_eq!(send(admin, req).await.status, StatusCode::UNAUTHORIZED);
    }
    assert!(agent.status.snapshot().connected, "nobody disconnected it");
    // Probes and the scrape need no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let mut req = gw.admin_request(Method::GET, path);
        req.headers_mut().remove("authorization");
        assert_eq!(send(admin, req).await.status, StatusCode::OK, "{path}");
    }
    let r = send(admin, gw.admin_request(Method::GET, "/v1/registrations")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&r.body).contains(agent.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebound_host_names_and_cross_site_requests_are_refused_even_with_the_token() {
    let app = Backend::start().await;
    let gw = TestGateway::start().await;
    let (agent, _key) = gw.web_agent(app.addr).await;
    let admin = gw.addrs.admin;
    for host in ["attacker.example", "attacker.example:9091"] {
        let mut req = gw.admin_request(Method::GET, "/v1/registrations");
        req.headers_mut().insert("host", host.parse().unwrap());
        let r = send(admin, req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{host}");
        assert!(!String::from_utf8_lossy(&r.body).contains(agent.id()));
    }
    let disconnect = format!("/v1/registrations/{}/disconnect", agent.id());
    for (name, value) in [
        ("origin", "http://attacker.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let mut req = gw.admin_request(Method::POST, &disconnect);
        req.headers_mut().insert(name, value.parse().unwrap());
        let r = send(admin, req).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {value}");
    }
    assert!(agent.status.snapshot().connected, "nobody disconnected it");
}
