//! TCP services through the tunnel against a real MariaDB (started by the harness on a free
//! loopback port): the `mariadb` CLI and a Rust MySQL client, bulk rows, a 16 MiB BLOB, 50
//! concurrent connections, an idle connection reused, failures surfacing fast, the source
//! allowlist failing closed, and registrations never crossing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use g2c_proto::ServiceKind;
use g2c_tests::harness::{TestAgent, TestGateway};
use g2c_tests::mariadb::MariaDb;
use g2c_tests::wait_until;
use mysql_async::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start_db() -> MariaDb {
    tokio::task::spawn_blocking(MariaDb::start).await.unwrap()
}

async fn cli(addr: SocketAddr, sql: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || MariaDb::cli(addr, &sql))
        .await
        .unwrap()
}

async fn conn(addr: SocketAddr) -> mysql_async::Conn {
    mysql_async::Conn::from_url(MariaDb::url_via(addr))
        .await
        .unwrap()
}

fn value(i: u32) -> String {
    format!("row-{i}-{}", "x".repeat((i % 37) as usize))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_and_rust_client_through_the_tunnel() {
    let db = start_db().await;
    let gw = TestGateway::start().await;
    let agent =
        TestAgent::start_connected(gw.register(&[("db", ServiceKind::Tcp, db.addr)]).await).await;
    let public = gw.open_tcp(agent.id(), "db", &["127.0.0.1/32"]).await;
    assert_ne!(public, db.addr);

    // The mariadb command-line client: schema and 10,000 rows.
    let mut sql = String::from("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64) NOT NULL);\n");
    for chunk in (0..10_000u32).collect::<Vec<_>>().chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("({i},'{}')", value(*i)))
            .collect();
        sql.push_str(&format!("INSERT INTO t VALUES {};\n", values.join(",")));
    }
    cli(public, sql).await.unwrap();
    let summary = "SELECT COUNT(*), SUM(CRC32(v)) FROM t;".to_string();
    let through = cli(public, summary.clone()).await.unwrap();
    let direct = cli(db.addr, summary).await.unwrap();
    assert_eq!(through, direct);
    assert!(through.starts_with("10000\t"), "{through}");

    // A Rust client reads every row back identical.
    let mut c = conn(public).await;
    let rows: Vec<(u32, String)> = c.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(rows.len(), 10_000);
    for (i, (id, v)) in rows.iter().enumerate() {
        assert_eq!(*id, i as u32);
        assert_eq!(*v, value(i as u32));
    }

    // A 16 MiB BLOB round trip.
    c.query_drop("CREATE TABLE b (id INT PRIMARY KEY, data LONGBLOB)")
        .await
        .unwrap();
    let blob: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    c.exec_drop("INSERT INTO b VALUES (1, ?)", (blob.clone(),))
        .await
        .unwrap();
    let back: Option<Vec<u8>> = c
        .query_first("SELECT data FROM b WHERE id = 1")
        .await
        .unwrap();
    assert!(back.as_deref() == Some(&blob[..]), "BLOB differs");

    // 50 concurrent connections, each doing real work at the same time.
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        tasks.push(tokio::spawn(async move {
            let mut c = conn(public).await;
            let got: Option<(u32, String)> = c
                .exec_first(
                    "SELECT ?, v FROM t WHERE id = ? AND SLEEP(0.2) = 0",
                    (i, i * 100),
                )
                .await
                .unwrap();
            assert_eq!(got, Some((i, value(i * 100))));
            c.disconnect().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // An idle connection is still usable later (no idle timeout in the tunnel).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n: Option<u32> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(10_000));
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_mariadb_mid_query_errors_fast() {
    let mut db = start_db().await;
    let gw = TestGateway::start().await;
    let agent =
        TestAgent::start_connected(gw.register(&[("db", ServiceKind::Tcp, db.addr)]).await).await;
    let public = gw.open_tcp(agent.id(), "db", &["127.0.0.1/32"]).await;
    let mut c = conn(public).await;
    let query = tokio::spawn(async move {
        let r: Result<Option<u32>, _> = c.query_first("SELECT SLEEP(30)").await;
        (r.is_err(), Instant::now())
    });
    let running = "SELECT CONCAT('running=', COUNT(*)) FROM information_schema.processlist \
                   WHERE info LIKE 'SELECT SLEEP(30)%'";
    let db_addr = db.addr;
    wait_until(Duration::from_secs(10), "the query runs", || async move {
        let out = tokio::task::spawn_blocking(move || MariaDb::cli(db_addr, running)).await;
        matches!(out, Ok(Ok(text)) if text.contains("running=1"))
    })
    .await;
    let killed = Instant::now();
    db.kill();
    let (errored, at) = tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .expect("no hang")
        .unwrap();
    assert!(errored, "the client sees an error");
    assert!(
        at.duration_since(killed) < Duration::from_secs(2),
        "{:?}",
        at.duration_since(killed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_agent_closes_public_connections_and_a_restart_brings_the_port_back() {
    let db = start_db().await;
    let gw = TestGateway::start().await;
    let cfg = gw.register(&[("db", ServiceKind::Tcp, db.addr)]).await;
    let config_path = gw.dir.path().join("agent.toml");
    cfg.save(&config_path).unwrap();
    let log = gw.dir.path().join("agent.log");
    let agent = g2c_tests::procs::start_agent(&config_path, log.clone());
    // The tunnel is up once the gateway shows the agent connected (announcing a TCP service
    // allocates nothing: the operator's allow below opens the port).
    let id = cfg.registration_id.clone();
    wait_until(Duration::from_secs(10), "agent connected", || async {
        gw.scrape()
            .await
            .get("g2c_agent_connected", &[("registration", &id)])
            == Some(1.0)
    })
    .await;
    let public = gw.open_tcp(&id, "db", &["127.0.0.1/32"]).await;
    // Two open client connections, greeted by MariaDB through the tunnel.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(public).await.unwrap();
        let mut greeting = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the whole greeting: until the server has been quiet for a moment.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
        {
            assert!(n > 0, "closed early");
            greeting.extend_from_slice(&buf[..n]);
        }
        assert!(greeting.len() > 4, "MariaDB greeting arrives");
        held.push(s);
    }
    agent.signal("KILL");
    let killed = Instant::now();
    for s in &mut held {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "public connection closed within 2 s: {r:?}"
        );
    }
    eprintln!(
        "public connections closed {:?} after SIGKILL",
        killed.elapsed()
    );
    // The port stops listening while the agent is gone...
    wait_until(Duration::from_secs(2), "port closed", || async move {
        tokio::net::TcpStream::connect(public).await.is_err()
    })
    .await;
    // ...and comes back on the same number when a service manager restarts the agent.
    let _agent = g2c_tests::procs::start_agent(&config_path, log);
    wait_until(Duration::from_secs(15), "port back after restart", || async move {
        match tokio::net::TcpStream::connect(public).await {
            Ok(mut s) => {
                let mut g = [0u8; 16];
                matches!(tokio::time::timeout(Duration::from_secs(2), s.read(&mut g)).await, Ok(Ok(n)) if n > 0)
            }
            Err(_) => false,
        }
    })
    .await;
    let mut c = conn(public).await;
    let one: Option<u32> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
}

async fn mariadb_connections(db: &MariaDb) -> u64 {
    let out = cli(db.addr, "SHOW GLOBAL STATUS LIKE 'Connections';".into())
        .await
        .unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_outside_the_allowlist_are_refused_before_the_agent() {
    let db = start_db().await;
    let gw = TestGateway::start().await;
    let agent =
        TestAgent::start_connected(gw.register(&[("db", ServiceKind::Tcp, db.addr)]).await).await;
    // No allowlist yet: the service holds no port at all (announcing allocates nothing).
    assert!(gw
        .store
        .tcp_services(Some(agent.id()))
        .await
        .unwrap()
        .is_empty());
    let public = gw.open_tcp(agent.id(), "db", &["127.0.0.1/32"]).await;

    let before = mariadb_connections(&db).await;
    for _ in 0..5 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = sock.connect(public).await.unwrap();
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("closed at once");
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "no greeting for a refused source: {r:?}"
        );
        let _ = s.write_all(b"hello").await;
    }
    let after = mariadb_connections(&db).await;
    assert_eq!(
        after,
        before + 1,
        "only our own status query reached MariaDB"
    );
    let scrape = gw.scrape().await;
    assert_eq!(
        scrape.get(
            "g2c_tcp_connections_refused_total",
            &[("registration", agent.id()), ("service", "db")]
        ),
        Some(5.0),
        "{}",
        scrape.0
    );
}

/// A TCP server that greets every connection with `tag` and echoes what it gets.
async fn tagged_server(tag: &'static [u8]) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                s.write_all(tag).await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_get_distinct_ports_and_never_cross() {
    let gw = TestGateway::start().await;
    let a_app = tagged_server(b"A").await;
    let b_app = tagged_server(b"B").await;
    let a =
        TestAgent::start_connected(gw.register(&[("svc", ServiceKind::Tcp, a_app)]).await).await;
    let b =
        TestAgent::start_connected(gw.register(&[("svc", ServiceKind::Tcp, b_app)]).await).await;
    let pa = gw.open_tcp(a.id(), "svc", &["127.0.0.0/8"]).await;
    let pb = gw.open_tcp(b.id(), "svc", &["127.0.0.0/8"]).await;
    assert_ne!(pa.port(), pb.port());
    assert_eq!(
        pa.port(),
        a.config.gateway.tunnel_port,
        "the first TCP service gets the tunnel port"
    );
    for _ in 0..10 {
        for (addr, tag) in [(pa, b'A'), (pb, b'B')] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await.unwrap();
            assert_eq!(first[0], tag);
            // Half-close: our FIN reaches the app, whose echo and FIN come back.
            s.write_all(b"ping").await.unwrap();
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"ping");
        }
    }
    // Stable: the same ports after a reconnect.
    let again = gw.store.tcp_services(Some(a.id())).await.unwrap();
    assert_eq!(again[0].port, pa.port());
}
