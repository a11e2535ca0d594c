//! The agent GUI's request inspector in a real headless Chromium, against the real gateway,
//! the real `g2c-agent` binary and real apps: requests appear live and in order with their
//! statuses, a stopped app's 502 shows `local_service_unavailable`, a request opens into its
//! headers with `Authorization` masked, a GET replays at once and a POST only once confirmed,
//! and the Traffic page draws the burst (screenshots under `target/gui-screenshots/`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use g2c_agent::config::ServiceConfig;
use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::{send, Reply};
use g2c_tests::gui_stack::{screenshots, GuiStack};
use g2c_tests::harness::routed;
use g2c_tests::webdriver::Browser;
use http::Method;
use serde_json::Value;

/// How long the page has for each change.
const WAIT: Duration = Duration::from_secs(15);
/// How long a request may take to show on the page before the test calls it lost. The
/// acceptance figure is a second; the measured worst case is printed, and this limit is wider
/// so a busy CI machine does not turn a slow browser into a red run.
const SHOWS_WITHIN: Duration = Duration::from_secs(5);

/// `method path` through the gateway to `service`, with extra headers.
async fn call(
    st: &GuiStack,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = routed(method, &st.id, path, &st.key, Bytes::from(body.to_owned()));
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    send(st.gw.http(), req).await
}

/// The rows of the Requests table, newest first: (seq, target, status, tail).
async fn rows(browser: &Browser) -> Vec<(u64, String, String, String)> {
    let v = browser
        .execute(
            "return [...document.querySelectorAll('#req-table tbody tr')].map((r) => [Number(r.dataset.seq), \
             r.querySelector('.req-target').textContent, r.querySelector('.req-status').textContent, \
             r.querySelector('.req-tail').textContent]);",
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap(),
                r[1].as_str().unwrap().to_owned(),
                r[2].as_str().unwrap().to_owned(),
                r[3].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Wait until the newest row's target is `target`; how long that took.
async fn shows(browser: &Browser, target: &str) -> Duration {
    let started = Instant::now();
    loop {
        if rows(browser).await.first().is_some_and(|r| r.1 == target) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < SHOWS_WITHIN,
            "{target} did not show within {SHOWS_WITHIN:?}: {:?}",
            rows(browser).await.first()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_show_live_open_into_masked_headers_replay_and_chart_the_traffic() {
    let stopped = Backend::start().await;
    let stopped_addr = stopped.addr;
    drop(stopped);
    let st = GuiStack::start_with(|cfg| {
        cfg.services[0].capture_bodies = true;
        cfg.services.push(ServiceConfig::new(
            "down",
            ServiceKind::Http,
            stopped_addr.to_string(),
        ));
    })
    .await;
    let shots = screenshots();
    let browser = Browser::start(st.dir.path()).await;
    st.log_in(&browser, "#requests").await;
    browser
        .wait_text("#req-live", "the live feed", WAIT, |t| t == "live")
        .await;

    // 1. Fifty requests, each on the page as it ends, in order, with the app's statuses.
    let mut expected = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..50u32 {
        let path = if i % 10 == 9 {
            format!("/status/{}", 400 + i)
        } else {
            format!("/bytes/{}", 10 + i)
        };
        let r = call(&st, Method::GET, &path, &[], "").await;
        let status = if i % 10 == 9 { 400 + i as u16 } else { 200 };
        assert_eq!(r.status, status, "{path}");
        slowest = slowest.max(shows(&browser, &path).await);
        expected.push((path, status.to_string()));
    }
    println!("slowest of 50 requests to show on the page: {slowest:?}");
    let seen: Vec<(String, String)> = rows(&browser)
        .await
        .into_iter()
        .rev()
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(seen, expected, "all fifty, in order, with their statuses");
    browser.screenshot(&shots.join("requests.png")).await;

    // A stopped app: the gateway answers 502, and the page says why and who.
    let r = call(&st, Method::GET, "/x", &[("g2c-service", "down")], "").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), Some("local_service_unavailable"));
    browser
        .wait_text(
            "#req-table tbody tr:first-child .req-tail",
            "the refusal",
            WAIT,
            |t| t.contains("local_service_unavailable") && t.contains("local app"),
        )
        .await;
    assert_eq!(rows(&browser).await[0].2, "502");

    // A request's detail: its headers, with the app's credentials masked.
    let r = call(
        &st,
        Method::GET,
        "/bytes/16?token=query-secret-1&page=2",
        &[
            ("authorization", "Bearer app-secret-123"),
            ("x-trace", "t-1"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    // Masked in the one copy kept: overwritten, so only the length shows.
    let target = format!(
        "/bytes/16?token={}&page=2",
        "*".repeat("query-secret-1".len())
    );
    shows(&browser, &target).await;
    browser.click("#req-table tbody tr:first-child").await;
    let headers = browser
        .wait_text("#req-headers", "the request headers", WAIT, |t| {
            t.contains("x-trace")
        })
        .await;
    assert!(
        headers.contains("authorization") && headers.contains("***"),
        "{headers}"
    );
    let page = browser.text("body").await;
    assert!(!page.contains("app-secret-123") && !page.contains("query-secret-1"));
    assert!(browser.text("#resp-line").await.contains("200"));
    browser.screenshot(&shots.join("request-detail.png")).await;

    // 2. Replay a GET: at once, from the agent to the app, the new answer beside the old.
    let before = st.app_a.seen().len();
    browser.click("#replay").await;
    browser
        .wait_text("#replay-new-status", "the replay's status", WAIT, |t| {
            t == "200"
        })
        .await;
    let replayed = st.app_a.seen();
    assert_eq!(replayed.len(), before + 1);
    let last = replayed.last().unwrap();
    assert_eq!(
        last.uri, "/bytes/16?page=2",
        "masked parameters are left out"
    );
    assert!(last.headers.contains_key("x-g2c-replay"));
    assert!(
        !last.headers.contains_key("authorization"),
        "masked credentials are not sent"
    );
    assert_eq!(
        browser.text("#replay-new-body").await,
        browser.text("#replay-old-body").await
    );
    let without = browser.text("#replay-without").await;
    assert!(
        without.contains("authorization") && without.contains("?token"),
        "{without}"
    );
    browser.screenshot(&shots.join("replay.png")).await;

    // A POST asks first, and goes only once confirmed.
    let r = call(
        &st,
        Method::POST,
        "/echo",
        &[("content-type", "text/plain")],
        "hello replay",
    )
    .await;
    assert_eq!(r.body, "hello replay");
    shows(&browser, "/echo").await;
    browser.click("#req-table tbody tr:first-child").await;
    browser
        .wait_text("#req-body", "the captured body", WAIT, |t| {
            t == "hello replay"
        })
        .await;
    let before = st.app_a.seen().len();
    browser.click("#replay").await;
    browser
        .wait_text("#replay-confirm", "the question", WAIT, |t| {
            t.contains("POST may change something")
        })
        .await;
    assert_eq!(
        st.app_a.seen().len(),
        before,
        "nothing sent before the answer"
    );
    browser.screenshot(&shots.join("replay-confirm.png")).await;
    browser.click("#replay-confirm-yes").await;
    browser
        .wait_text("#replay-new-body", "the echoed body", WAIT, |t| {
            t == "hello replay"
        })
        .await;
    let last = st.app_a.seen().last().unwrap().clone();
    assert_eq!((last.method, last.uri.as_str()), (Method::POST, "/echo"));

    // 3. The Traffic page draws the burst, with the tunnel's reconnect marked.
    let r = st.bearer(Method::POST, "/v1/reconnect", "").await;
    assert_eq!(r.status, 202);
    st.wait_status("reconnected", |s| {
        s["connected"] == true && s["reconnects"].as_u64() >= Some(1)
    })
    .await;
    browser.click("#nav-traffic").await;
    browser.wait_for("#chart-rate polyline", WAIT).await;
    let drawn = browser
        .execute(
            "return { rate: Number(document.querySelector('#chart-rate').dataset.points), \
             latency: Number(document.querySelector('#chart-latency').dataset.points), \
             marks: document.querySelectorAll('#chart-rate .mark').length, \
             lines: document.querySelectorAll('#charts polyline').length, \
             series: state.series };",
        )
        .await;
    println!(
        "charts: rate {} points, latency {}, marks {}",
        drawn["rate"], drawn["latency"], drawn["marks"]
    );
    assert!(drawn["latency"].as_u64() >= Some(1), "{drawn}");
    assert!(
        drawn["marks"].as_u64() >= Some(1),
        "the reconnect is marked: {drawn}"
    );
    assert!(drawn["lines"].as_u64() >= Some(4), "{drawn}");
    // What the page drew is what the API serves: the 52 requests of `web` (50, the masked
    // one and the POST; replays go straight to the app and the refusal was `down`'s).
    let web = &drawn["series"]["services"]["web"];
    let counted: f64 = web
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests_per_s"].as_f64().unwrap() * 10.0)
        .sum();
    assert_eq!(counted.round(), 52.0, "requests charted");
    let api = st
        .bearer(Method::GET, "/v1/metrics/series?service=web", "")
        .await;
    let api: Value = serde_json::from_slice(&api.body).unwrap();
    let api_count: f64 = api["services"]["web"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests_per_s"].as_f64().unwrap() * 10.0)
        .sum();
    assert_eq!(api_count.round(), counted.round());
    assert!(web
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["p99_us"].as_u64() > Some(0)));
    browser.screenshot(&shots.join("traffic.png")).await;

    let errors = browser.script_errors().await;
    assert!(errors.is_empty(), "JavaScript errors: {errors:?}");
    browser.quit().await;
}
