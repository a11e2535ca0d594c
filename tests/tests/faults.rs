//! The fault suite: floods, dead and misbehaving peers, restarts. Each test states the fault,
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
        async move { text.contains("gateway went away; reconnecting after a random delay") }
    })
    .await;
}

/// Register `n` agents with the real gateway process (one token with `n` uses), each with its
/// own key and the default reconnect pacing, all serving `app` as `web`.
async fn register_many(
    gw: &g2c_tests::procs::GatewayProc,
    dir: &std::path::Path,
    n: usize,
    app: SocketAddr,
) -> Vec<g2c_agent::config::AgentConfig> {
    let token = gw.cli(&["token", "create", "--uses", &n.to_string()]).await;
    let backchannel = format!("http://{}", gw.addrs.backchannel);
    let mut out = Vec::new();
    for i in 0..n {
        let key_file = dir.join(format!("agent_key_{i}"));
        let key = g2c_proto::sshkeys::load_or_generate(&key_file).unwrap();
        let web = g2c_agent::config::ServiceConfig {
            name: "web".into(),
            kind: ServiceKind::Http,
            local: app.to_string(),
            health_check: None,
        };
        let name = format!("agent-{i}");
        out.push(
            g2c_tests::harness::register_with(
                &backchannel,
                None,
                &token,
                key_file,
                &key,
                &name,
                vec![web],
            )
            .await,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restart_brings_100_agents_back_within_10_s_with_spread_out_reconnects() {
    let app = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = g2c_tests::procs::GatewayProc::start(dir.path(), None).await;
    let configs = register_many(&gw, dir.path(), 100, app.addr).await;
    let agents: Vec<TestAgent> = configs.into_iter().map(TestAgent::start).collect();
    let all_up = |agents: &[TestAgent]| agents.iter().all(|a| a.status.snapshot().connected);
    g2c_tests::wait_until(Duration::from_secs(20), "100 agents connected", || {
        let up = all_up(&agents);
        async move { up }
    })
    .await;
    let key = gw
        .cli(&["key", "create", "--registration", agents[0].id()])
        .await;

    // Restart: SIGTERM (drain, GoAway), then a new process on the same addresses.
    let addrs = gw.addrs.clone();
    gw.proc.signal("TERM");
    assert_eq!(gw.proc.wait(Duration::from_secs(10)).await, Some(0));
    // During the gap a caller is refused at once (nothing listens), never left hanging.
    let gap = tokio::time::timeout(
        Duration::from_secs(1),
        TcpStream::connect(addrs.http.unwrap()),
    )
    .await;
    assert!(matches!(gap, Ok(Err(_))), "nothing listens during the gap");
    let gw2 = g2c_tests::procs::GatewayProc::start(dir.path(), Some(&addrs)).await;
    let up_at = Instant::now();
    // Right after the restart, requests get an answer at once: 200 if the agent is back,
    // 502 agent_offline if not yet.
    let early = tokio::time::timeout(
        Duration::from_secs(1),
        send(
            addrs.http.unwrap(),
            routed(http::Method::GET, agents[0].id(), "/bytes/4", &key, ""),
        ),
    )
    .await
    .expect("answered at once");
    assert!(
        matches!(early.status.as_u16(), 200 | 502),
        "{}",
        early.status
    );

    // Record when each agent is back.
    let mut back: Vec<Option<Duration>> = vec![None; agents.len()];
    let deadline = up_at + Duration::from_secs(10);
    while back.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "only {} of 100 agents back within 10 s",
            back.iter().filter(|b| b.is_some()).count()
        );
        for (i, a) in agents.iter().enumerate() {
            if back[i].is_none() && a.status.snapshot().connected {
                back[i] = Some(up_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut times: Vec<Duration> = back.into_iter().flatten().collect();
    times.sort();
    let spread = times[times.len() - 1] - times[0];
    // The most agents that came back inside any 50 ms window.
    let crowd = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] <= Duration::from_millis(50))
                .count()
        })
        .max()
        .unwrap();
    eprintln!(
        "100 agents back between {:?} and {:?}; at most {crowd} in any 50 ms",
        times[0], times[99]
    );
    // GoAway spreads reconnects over up to 2 s: about 2-3 agents per 50 ms, never a herd.
    assert!(
        spread >= Duration::from_millis(1000),
        "reconnects not spread out: {spread:?}"
    );
    assert!(crowd <= 20, "{crowd} agents reconnected inside 50 ms");
    let r = send(
        addrs.http.unwrap(),
        routed(http::Method::GET, agents[0].id(), "/bytes/4", &key, ""),
    )
    .await;
    assert_eq!(r.status, 200);
    drop(gw2);
}

/// The gateway process's footprint: (RSS KiB, open fds, tokio tasks).
async fn footprint(gw: &g2c_tests::procs::GatewayProc) -> (u64, usize, f64) {
    let tasks = g2c_tests::prom::scrape(gw.addrs.admin)
        .await
        .get("g2c_runtime_tasks", &[])
        .unwrap_or(0.0);
    (gw.proc.rss_kib(), gw.proc.open_fds(), tasks)
}

fn within(now: f64, base: f64, pct: f64, slack: f64) -> bool {
    (now - base).abs() <= (base * pct / 100.0).max(slack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_flapping_every_100_ms_leaves_no_trace_in_the_gateway() {
    let secs: u64 = std::env::var("G2C_FLAP_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let app = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = g2c_tests::procs::GatewayProc::start(dir.path(), None).await;
    let config = register_many(&gw, dir.path(), 1, app.addr).await.remove(0);
    let id = config.registration_id.clone();

    // One cycle: connect (timed), then leave, gracefully or by dropping the connection.
    let cycle = |n: u64| {
        let config = config.clone();
        async move {
            let started = Instant::now();
            let mut agent = TestAgent::start(config);
            agent.wait_connected().await;
            let took = started.elapsed();
            if n % 2 == 0 {
                agent.stop().await;
            } else {
                agent.abort().await;
            }
            took
        }
    };
    let settled = |what: &'static str| {
        let gw = &gw;
        let id = id.clone();
        async move {
            g2c_tests::wait_until(Duration::from_secs(15), what, || {
                let id = id.clone();
                async move { !gw.is_connected(&id).await }
            })
            .await;
        }
    };
    for n in 0..20 {
        cycle(n).await;
    }
    settled("warm-up agent gone").await;
    let base = footprint(&gw).await;

    let mut connects = Vec::new();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0;
    while Instant::now() < until {
        tick.tick().await;
        connects.push(cycle(n).await);
        n += 1;
    }
    settled("flapping agent gone").await;
    connects.sort();
    let p99 = connects[connects.len() * 99 / 100];
    let mut last = footprint(&gw).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(within(last.0 as f64, base.0 as f64, 5.0, 0.0)
        && within(last.1 as f64, base.1 as f64, 5.0, 1.0)
        && within(last.2, base.2, 5.0, 1.0))
    {
        assert!(
            Instant::now() < deadline,
            "after {n} cycles the gateway did not return to its baseline (RSS KiB, fds, tasks): {base:?} -> {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = footprint(&gw).await;
    }
    eprintln!(
        "{n} connect/disconnect cycles in {secs} s: connect p50 {:?}, p99 {p99:?}, max {:?}; baseline {base:?} -> {last:?}",
        connects[connects.len() / 2],
        connects[connects.len() - 1]
    );
    assert!(
        p99 < Duration::from_secs(1),
        "a new session waited on the old one: p99 {p99:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_agent_loses_its_session_while_other_tunnels_keep_serving() {
    use g2c_tests::rogue::{self, Misbehaviour};
    let app = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw =
        g2c_tests::procs::GatewayProc::start_with_limits(dir.path(), None, "heartbeat_secs = 1\n")
            .await;
    let mut configs = register_many(&gw, dir.path(), 5, app.addr).await;
    let good = TestAgent::start_connected(configs.remove(0)).await;
    let key = gw
        .cli(&["key", "create", "--registration", good.id()])
        .await;
    let http = gw.addrs.http.unwrap();

    // Steady traffic to the good agent for the whole test.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn({
        let (stop, id, key) = (stop.clone(), good.id().to_owned(), key.clone());
        async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.is_cancelled() {
                let r = send(
                    http,
                    routed(http::Method::GET, &id, "/bytes/2048", &key, ""),
                )
                .await;
                if r.status == 200 && r.body.len() == 2048 {
                    ok += 1;
                } else {
                    failed.push(r.status);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        }
    });
    let base_rss = gw.proc.rss_kib();

    let cases = [
        Misbehaviour::OpenStreams(500),
        Misbehaviour::OversizedFrame,
        Misbehaviour::Garbage,
        Misbehaviour::Silent,
    ];
    for (config, how) in configs.iter().zip(cases) {
        let started = Instant::now();
        let r = rogue::connect(config, how).await;
        if let Misbehaviour::Silent = how {
            // Requests with large bodies to the agent that never reads: held by flow control,
            // then failed when its session is closed.
            let rkey = gw
                .cli(&["key", "create", "--registration", &config.registration_id])
                .await;
            for _ in 0..8 {
                let req = routed(
                    http::Method::POST,
                    &config.registration_id,
                    "/sink",
                    &rkey,
                    vec![0u8; 4 << 20],
                );
                tokio::spawn(async move { send(http, req).await });
            }
        }
        tokio::time::timeout(Duration::from_secs(10), r.mux.closed())
            .await
            .unwrap_or_else(|_| panic!("{how:?}: the gateway kept the session"));
        eprintln!("{how:?}: session closed after {:?}", started.elapsed());
    }
    stop.cancel();
    let (ok, failed) = load.await.unwrap();
    let grown = gw.proc.rss_kib().saturating_sub(base_rss);
    eprintln!(
        "good agent: {ok} requests ok, {} failed; gateway RSS grew {grown} KiB",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "the good tunnel failed requests: {failed:?}"
    );
    assert!(ok > 50);
    assert!(grown < 96 * 1024, "gateway RSS grew {grown} KiB");
    let scrape = g2c_tests::prom::scrape(gw.addrs.admin).await;
    assert_eq!(
        scrape.get(
            "g2c_ssh_connections_closed_total",
            &[("reason", "protocol_violation")]
        ),
        Some(1.0)
    );
}
