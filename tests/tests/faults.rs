//! The fault suite, single-peer half (`faults_fleet.rs` has the fleet): floods, dead and
//! stopped agents, SIGTERM with requests in flight. Each test states the fault,
//! then asserts what callers and agents see, with deadlines instead of sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use g2c_proto::ServiceKind;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, GatewayOptions, TestAgent, TestGateway};
use g2c_tests::procs::ProcStack;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Open `n` TCP connections to `addr` that never speak; each task returns when the gateway
/// closed its connection.
async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<tokio::task::JoinHandle<Instant>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        out.push(tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(_) => {} // the server's version banner
                }
            }
        }));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ssh_connections_close_at_the_preauth_deadline_and_a_real_agent_still_gets_in() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        configure: Some(|c| {
            c.limits.ssh_preauth_timeout_secs = 2;
            c.limits.ssh_max_unauthenticated = 2000;
        }),
        ..Default::default()
    })
    .await;
    let opened = Instant::now();
    let idle = idle_connections(gw.addrs.ssh, 1000).await;
    let all_open = opened.elapsed();

    // A real agent connects within 2 s while the thousand sit there.
    let started = Instant::now();
    let agent = TestAgent::start(gw.register(&[("web", ServiceKind::Http, app.addr)]).await);
    g2c_tests::wait_until(
        Duration::from_secs(2),
        "agent connected among 1000 idle sockets",
        || {
            let c = agent.status.snapshot().connected;
            async move { c }
        },
    )
    .await;
    let agent_in = started.elapsed();

    let mut lived = Vec::new();
    for c in idle {
        lived.push(
            tokio::time::timeout(Duration::from_secs(10), c)
                .await
                .expect("closed")
                .unwrap()
                - opened,
        );
    }
    lived.sort();
    let (first, last) = (lived[0], lived[lived.len() - 1]);
    eprintln!("1000 idle: opened in {all_open:?}; agent in {agent_in:?}; closed between {first:?} and {last:?}");
    assert!(
        first >= Duration::from_millis(1900),
        "closed before the deadline: {first:?}"
    );
    assert!(
        last <= all_open + Duration::from_millis(3500),
        "closed late: {last:?}"
    );
    let scrape = gw.scrape().await;
    assert_eq!(
        scrape.get(
            "g2c_ssh_connections_closed_total",
            &[("reason", "preauth_deadline")]
        ),
        Some(1000.0)
    );
    assert!(
        agent.status.snapshot().connected,
        "the authenticated agent is not cut at the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_unauthenticated_cap_the_oldest_go_first_and_the_agent_gets_in() {
    let app = Backend::start().await;
    let gw = TestGateway::start_with(GatewayOptions {
        configure: Some(|c| {
            c.limits.ssh_preauth_timeout_secs = 30;
            c.limits.ssh_max_unauthenticated = 64;
        }),
        ..Default::default()
    })
    .await;
    let idle = idle_connections(gw.addrs.ssh, 500).await;
    let agent = TestAgent::start(gw.register(&[("web", ServiceKind::Http, app.addr)]).await);
    g2c_tests::wait_until(
        Duration::from_secs(2),
        "agent connected past the cap",
        || {
            let c = agent.status.snapshot().connected;
            async move { c }
        },
    )
    .await;
    // The 436 oldest were evicted at once, and the agent's own arrival evicted one more.
    g2c_tests::wait_until(
        Duration::from_secs(5),
        "437 idle connections evicted",
        || {
            let closed = idle.iter().filter(|c| c.is_finished()).count();
            async move { closed >= 437 }
        },
    )
    .await;
    let scrape = gw.scrape().await;
    let evicted = scrape.get(
        "g2c_ssh_connections_closed_total",
        &[("reason", "preauth_evicted")],
    );
    assert!(evicted >= Some(437.0), "{evicted:?}");
}

/// A front-door request through the process stack.
fn get(st: &ProcStack, path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    routed(http::Method::GET, &st.id, path, &st.key, "")
}

async fn active_streams(st: &ProcStack) -> f64 {
    g2c_tests::prom::scrape(st.gw.addrs.admin)
        .await
        .get("g2c_active_streams", &[("registration", &st.id)])
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_request_gives_502_within_a_second_and_streams_return_to_zero() {
    let app = Backend::start().await;
    let mut st = ProcStack::start(app.addr).await;
    let http = st.http();
    // One request waiting for its headers, one with headers sent and its body dripping.
    let waiting = tokio::spawn({
        let req = get(&st, "/slow/10000");
        async move { send(http, req).await }
    });
    let tcp = TcpStream::connect(http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let dripping = sender.send_request(get(&st, "/drip/1000")).await.unwrap();
    assert_eq!(dripping.status(), 200);
    g2c_tests::wait_until(Duration::from_secs(5), "both requests at the app", || {
        let n = app.seen().len();
        async move { n >= 2 }
    })
    .await;
    assert!(active_streams(&st).await >= 2.0);

    let killed = Instant::now();
    st.agent.kill().await;
    let reply = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiting caller is answered within 1 s")
        .unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), Some("agent_offline"));
    let cut = tokio::time::timeout(
        Duration::from_secs(1),
        http_body_util::BodyExt::collect(dripping.into_body()),
    )
    .await
    .expect("the dripping body ends within 1 s");
    assert!(
        cut.is_err(),
        "a body cut by the agent's death is an error, not a clean end"
    );
    eprintln!("502 and cut body {:?} after SIGKILL", killed.elapsed());
    g2c_tests::wait_until(Duration::from_secs(5), "active streams back to 0", || {
        let st = &st;
        async move { active_streams(st).await == 0.0 }
    })
    .await;
    let ProcStack { dir: _dir, .. } = st;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_is_detected_within_15_seconds_and_its_pending_request_ends() {
    let app = Backend::start().await;
    let st = ProcStack::start(app.addr).await;
    let http = st.http();
    let pending = tokio::spawn({
        let req = get(&st, "/slow/60000");
        async move { send(http, req).await }
    });
    g2c_tests::wait_until(Duration::from_secs(5), "request at the app", || {
        let n = app.seen().len();
        async move { n >= 1 }
    })
    .await;
    let stopped = Instant::now();
    st.agent.signal("STOP");
    g2c_tests::wait_until(
        Duration::from_secs(16),
        "the gateway notices the stopped agent",
        || {
            let st = &st;
            async move { !st.gw.is_connected(&st.id).await }
        },
    )
    .await;
    let detected = stopped.elapsed();
    let reply = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("the pending request ends once the agent is declared dead")
        .unwrap();
    st.agent.signal("CONT");
    eprintln!(
        "stopped agent detected after {detected:?}; pending request got {}",
        reply.status
    );
    assert!(detected <= Duration::from_secs(15), "{detected:?}");
    assert!(
        matches!(reply.status.as_u16(), 502 | 504),
        "{}",
        reply.status
    );
    // And a new request is refused at once, not left hanging.
    let quick =
        tokio::time::timeout(Duration::from_secs(2), send(http, get(&st, "/bytes/1"))).await;
    assert_eq!(quick.expect("answered at once").status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_100_responses_in_flight_completes_them_all_and_exits_promptly() {
    let app = Backend::start().await;
    let mut st = ProcStack::start(app.addr).await;
    let http = st.http();
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let req = get(&st, "/slowbytes/700/16384");
            tokio::spawn(async move {
                let r = send(http, req).await;
                (r, Instant::now())
            })
        })
        .collect();
    g2c_tests::wait_until(Duration::from_secs(10), "100 requests at the app", || {
        let n = app.seen().len();
        async move { n >= 100 }
    })
    .await;
    st.gw.proc.signal("TERM");
    let mut last = Instant::now();
    for c in calls {
        let (r, at) = c.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 16384, "untruncated");
        assert!(r
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == g2c_tests::pattern_byte(i as u64)));
        last = last.max(at);
    }
    let code = st.gw.proc.wait(Duration::from_secs(10)).await;
    let exit_after_last = last.elapsed();
    eprintln!("gateway exited {exit_after_last:?} after the last response");
    assert_eq!(code, Some(0));
    assert!(
        exit_after_last <= Duration::from_secs(1),
        "{exit_after_last:?}"
    );
    // The agent was told to go away rather than left to find out.
    g2c_tests::wait_until(Duration::from_secs(5), "the agent got GoAway", || {
        let text = st.agent.log_text();
        async move { text.contains("gateway went away; reconnecting elsewhere after a random delay") }
    })
    .await;
}
