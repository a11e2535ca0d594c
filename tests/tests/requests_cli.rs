//! The inspector from the command line and under load, with the real `g2c-agent` binary
//! behind a real gateway: `g2c-agent requests --follow` prints requests as they happen (and
//! `requests` alone the recent ones), and 100,000 requests leave the agent's memory where the
//! bounded buffer put it.

use std::time::Duration;

use bytes::Bytes;
use g2c_tests::gui_stack::GuiStack;
use g2c_tests::harness::routed;
use g2c_tests::procs::{bin, Proc};
use g2c_tests::wait_until;
use http::Method;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_prints_each_request_as_it_happens() {
    let st = GuiStack::start_with(|cfg| cfg.services[0].capture_bodies = true).await;
    // One request before: `requests` lists it; `--follow` starts after it.
    assert_eq!(st.through_gateway("/bytes/3").await.status, 200);
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(bin("g2c-agent"));
        cmd.arg("--config").arg(&st.config).args(args);
        cmd
    };
    wait_until(Duration::from_secs(10), "the first request listed", || {
        let out = std::process::Command::new(bin("g2c-agent"))
            .arg("--config")
            .arg(&st.config)
            .args(["requests", "--last", "5"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        async move { text.contains("/bytes/3") && text.contains("GET") && text.contains(" 200 ") }
    })
    .await;

    let follower = Proc::spawn(
        &mut cli(&["requests", "--follow", "--json", "--last", "0"]),
        st.dir.path().join("follow.out"),
    );
    // The follower is connected once a request made now shows in its output.
    let lines = |p: &Proc| -> Vec<serde_json::Value> {
        p.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_until(
        Duration::from_secs(15),
        "the follower prints a request",
        || {
            let st = &st;
            let seen = lines(&follower).iter().any(|v| v["target"] == "/bytes/4");
            async move {
                if !seen {
                    st.through_gateway("/bytes/4").await;
                }
                seen
            }
        },
    )
    .await;
    for n in [5, 6, 7] {
        let path = format!("/bytes/{n}");
        assert_eq!(st.through_gateway(&path).await.status, 200);
        wait_until(Duration::from_secs(10), "the follower prints it", || {
            let seen = lines(&follower)
                .iter()
                .any(|v| v["target"] == path.as_str());
            async move { seen }
        })
        .await;
    }
    let printed = lines(&follower);
    let order: Vec<&str> = printed
        .iter()
        .filter_map(|v| v["target"].as_str())
        .filter(|t| ["/bytes/5", "/bytes/6", "/bytes/7"].contains(t))
        .collect();
    assert_eq!(order, ["/bytes/5", "/bytes/6", "/bytes/7"]);
    assert!(printed
        .iter()
        .all(|v| v["status"] == 200 && v["service"] == "web"));
    assert!(
        !printed.iter().any(|v| v["target"] == "/bytes/3"),
        "--last 0 prints no history"
    );

    // The same list for scripts, filtered; and replay's rules on the API.
    let list = |q: &str| {
        let st = &st;
        let q = q.to_owned();
        async move {
            let r = st
                .bearer(Method::GET, &format!("/v1/requests?{q}"), "")
                .await;
            assert_eq!(r.status, 200, "{q}");
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["requests"].as_array().unwrap().clone()
        }
    };
    let only = list("q=bytes/6").await;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["target"], "/bytes/6");
    assert!(list("status=5xx").await.is_empty());
    assert!(list("service=nope").await.is_empty());
    let after = only[0]["seq"].as_u64().unwrap();
    let newer = list(&format!("after={after}")).await;
    assert!(newer.iter().all(|v| v["seq"].as_u64() > Some(after)) && !newer.is_empty());
    let r = st.gw_request(Method::POST, "/echo", "twice").await;
    assert_eq!(r.body, "twice");
    let post = wait_for_target(&st, "/echo").await;
    let replay = format!("/v1/requests/{post}/replay");
    let r = st.bearer(Method::POST, &replay, "").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json_code().as_deref(), Some("confirm_required"));
    let r = st
        .bearer(Method::POST, &replay, r#"{"confirm":true}"#)
        .await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["replay"]["status"], 200);
    assert_eq!(
        v["replay"]["body"]["text"], "twice",
        "bodies up to a KiB are kept for replay"
    );
    assert_eq!(v["original"]["seq"].as_u64(), Some(post));
    let r = st
        .bearer(Method::POST, "/v1/requests/999999/replay", "")
        .await;
    assert_eq!(r.status, 404);
}

/// The sequence number of the newest request to `target`, once it is kept.
async fn wait_for_target(st: &GuiStack, target: &str) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = st.bearer(Method::GET, "/v1/requests", "").await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if let Some(e) = v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["target"] == target)
        {
            return e["seq"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "{target} never kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` keep-alive GETs of 1 KiB on one connection to the gateway.
async fn keep_alive_gets(st: &GuiStack, n: usize) {
    let tcp = tokio::net::TcpStream::connect(st.gw.http()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..n {
        let req = routed(Method::GET, &st.id, "/bytes/1024", &st.key, Bytes::new());
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 1024);
    }
}

/// Requests in `conns` parallel keep-alive loops.
async fn load(st: &std::sync::Arc<GuiStack>, total: usize, conns: usize) {
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let st = st.clone();
            tokio::spawn(async move { keep_alive_gets(&st, total / conns).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_requests_leave_the_agents_memory_where_the_buffer_put_it() {
    // Bodies captured too: the most the inspector keeps per request.
    let st = std::sync::Arc::new(
        GuiStack::start_with(|cfg| cfg.services[0].capture_bodies = true).await,
    );
    // Fill the buffer (500 kept) and let every pool and arena reach its working size.
    load(&st, 4_000, 8).await;
    let filled = st.agent.rss_kib();
    load(&st, 100_000, 8).await;
    let after = st.agent.rss_kib();
    let kept = st.bearer(Method::GET, "/v1/requests?limit=10000", "").await;
    let kept: serde_json::Value = serde_json::from_slice(&kept.body).unwrap();
    let kept = kept["requests"].as_array().unwrap().len();
    println!(
        "agent RSS: {filled} KiB with the buffer full, {after} KiB after 100,000 more requests \
         ({:+} KiB); {kept} requests kept",
        after as i64 - filled as i64
    );
    assert_eq!(kept, 500, "the default bound");
    assert!(
        after <= filled + 4 * 1024,
        "RSS grew from {filled} to {after} KiB over 100,000 requests"
    );
}
