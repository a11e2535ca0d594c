//! The store's contract, run against both backends: the embedded SQLite file and a real
//! PostgreSQL server started by the harness. Every operation the gateway relies on (token
//! limits, registration and port allocation, keys, revocation cascading, TCP allowlists and
//! quotas, the version counter, the authentication snapshot, concurrent writers) must behave
//! the same on both. Each case gets a fresh store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use g2c_gateway::config::StoreConfig;
use g2c_gateway::store::{hash_secret, PgStore, PortRange, SqliteStore, Store, StoreError};
use g2c_tests::postgres::Postgres;

const PK: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoO77y3o9L9fItc8Lm9cP9mP6pRSA0kwuMdoO6DNAFg u";

fn ports(start: u16, end: u16) -> PortRange {
    PortRange {
        start,
        end,
        per_registration: 3,
    }
}

const RANGE: PortRange = PortRange {
    start: 41000,
    end: 41999,
    per_registration: 3,
};

type Case = fn(Arc<dyn Store>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[(&str, Case)] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
    };
}

cases!(
    tokens_limit_uses_expiry_and_revocation,
    registrations_get_distinct_ports_never_reused,
    keys_belong_to_live_registrations_and_revocation_cascades,
    keys_may_be_scoped_to_one_service,
    tcp_allowlists_allocate_within_the_quota,
    every_write_bumps_the_version_and_nothing_else_does,
    the_auth_snapshot_holds_exactly_what_is_live,
    concurrent_registrations_never_share_a_port,
);

async fn registered(s: &dyn Store) -> String {
    let t = s.create_token(None, None).await.unwrap().secret;
    s.register(&t, Some("a"), PK, RANGE).await.unwrap().id
}

async fn tokens_limit_uses_expiry_and_revocation(s: Arc<dyn Store>) {
    let two = s
        .create_token(Some(2), Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert!(two.secret.starts_with("g2ct_"));
    assert_eq!(two.info.uses_left, Some(2));
    s.register(&two.secret, None, PK, RANGE).await.unwrap();
    s.register(&two.secret, None, PK, RANGE).await.unwrap();
    let why = |r: Result<_, StoreError>| match r {
        Err(StoreError::TokenRejected(why)) => why,
        other => panic!("{:?}", other.map(|_: g2c_gateway::store::Registration| ())),
    };
    assert_eq!(
        why(s.register(&two.secret, None, PK, RANGE).await),
        "token used up"
    );
    assert_eq!(
        why(s.register("g2ct_nope", None, PK, RANGE).await),
        "unknown token"
    );
    let expired = s.create_token(None, Some(Duration::ZERO)).await.unwrap();
    assert_eq!(
        why(s.register(&expired.secret, None, PK, RANGE).await),
        "token expired"
    );
    let revoked = s.create_token(None, None).await.unwrap();
    s.revoke_token(&revoked.info.id).await.unwrap();
    s.revoke_token(&revoked.info.id).await.unwrap(); // idempotent
    assert_eq!(
        why(s.register(&revoked.secret, None, PK, RANGE).await),
        "token revoked"
    );
    assert!(matches!(
        s.revoke_token("nope").await,
        Err(StoreError::NotFound("token"))
    ));
    let unlimited = s.create_token(None, None).await.unwrap();
    for _ in 0..5 {
        s.register(&unlimited.secret, None, PK, RANGE)
            .await
            .unwrap();
    }
    let listed = s.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 4);
    let two_now = listed.iter().find(|t| t.id == two.info.id).unwrap();
    assert_eq!(two_now.uses_left, Some(0));
    assert!(listed
        .iter()
        .find(|t| t.id == revoked.info.id)
        .unwrap()
        .revoked_at
        .is_some());
}

async fn registrations_get_distinct_ports_never_reused(s: Arc<dyn Store>) {
    let t = s.create_token(None, None).await.unwrap().secret;
    let small = ports(42000, 42002);
    let a = s.register(&t, Some("acme-qb"), PK, small).await.unwrap();
    let b = s.register(&t, None, PK, small).await.unwrap();
    assert_eq!(
        (a.tunnel_port, b.tunnel_port),
        (42000, 42001),
        "lowest first"
    );
    assert_ne!(a.id, b.id);
    assert!(a
        .id
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert_eq!(s.registration(&a.id).await.unwrap(), a);
    s.revoke_registration(&a.id).await.unwrap();
    let c = s.register(&t, None, PK, small).await.unwrap();
    assert_eq!(
        c.tunnel_port, 42002,
        "a revoked registration keeps its port"
    );
    assert!(matches!(
        s.register(&t, None, PK, small).await,
        Err(StoreError::PortsExhausted)
    ));
    let all = s.list_registrations().await.unwrap();
    assert_eq!(all.len(), 3, "revoked ones stay listed");
    assert!(all
        .iter()
        .find(|r| r.id == a.id)
        .unwrap()
        .revoked_at
        .is_some());
    let named = all.iter().find(|r| r.id == a.id).unwrap();
    assert_eq!(named.name.as_deref(), Some("acme-qb"));
    assert!(matches!(
        s.registration("nope").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.revoke_registration("nope").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn keys_belong_to_live_registrations_and_revocation_cascades(s: Arc<dyn Store>) {
    let a = registered(&*s).await;
    let b = registered(&*s).await;
    let ka = s.create_key(&a).await.unwrap();
    let ka2 = s.create_key(&a).await.unwrap();
    let kb = s.create_key(&b).await.unwrap();
    assert!(ka.secret.starts_with("g2ck_") && ka.secret != ka2.secret);
    assert!(matches!(
        s.create_key("nope").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.list_keys(Some(&a)).await.unwrap().len(), 2);
    assert_eq!(s.list_keys(None).await.unwrap().len(), 3);
    s.revoke_key(&ka2.info.id).await.unwrap();
    s.revoke_key(&ka2.info.id).await.unwrap();
    assert!(matches!(
        s.revoke_key("nope").await,
        Err(StoreError::NotFound("key"))
    ));
    s.revoke_registration(&a).await.unwrap();
    assert!(matches!(
        s.create_key(&a).await,
        Err(StoreError::NotFound(_))
    ));
    let keys = s.list_keys(None).await.unwrap();
    let revoked = |id: &str| {
        keys.iter()
            .find(|k| k.id == id)
            .unwrap()
            .revoked_at
            .is_some()
    };
    assert!(revoked(&ka.info.id) && revoked(&ka2.info.id), "cascaded");
    assert!(!revoked(&kb.info.id));
}

async fn keys_may_be_scoped_to_one_service(s: Arc<dyn Store>) {
    let a = registered(&*s).await;
    let scoped = s.create_scoped_key(&a, Some("Reports")).await.unwrap();
    assert_eq!(
        scoped.info.service.as_deref(),
        Some("reports"),
        "stored lowercased"
    );
    let any = s.create_key(&a).await.unwrap();
    assert_eq!(any.info.service, None);
    assert!(matches!(
        s.create_scoped_key(&a, Some("no spaces")).await,
        Err(StoreError::Invalid(_))
    ));
    let listed = s.list_keys(Some(&a)).await.unwrap();
    let by_id = |id: &str| listed.iter().find(|k| k.id == id).unwrap().service.clone();
    assert_eq!(by_id(&scoped.info.id).as_deref(), Some("reports"));
    assert_eq!(by_id(&any.info.id), None);
    let auth = s.auth_data().await.unwrap();
    let hash = g2c_gateway::store::hash_secret(&scoped.secret);
    let (_, k) = auth.keys.iter().find(|(h, _)| *h == hash).unwrap();
    assert_eq!(k.service.as_deref(), Some("reports"));
}

async fn tcp_allowlists_allocate_within_the_quota(s: Arc<dyn Store>) {
    let a = registered(&*s).await;
    let b = registered(&*s).await;
    let reg_a = s.registration(&a).await.unwrap();
    let cidrs = vec![
        "203.0.113.0/24".to_owned(),
        "::ffff:198.51.100.7".to_owned(),
    ];
    let db = s.set_tcp_allow(&a, "db", &cidrs, RANGE).await.unwrap();
    assert_eq!(
        db.port, reg_a.tunnel_port,
        "the first service gets the tunnel port"
    );
    assert_eq!(db.allow, ["203.0.113.0/24", "198.51.100.7/32"], "canonical");
    let qb = s.set_tcp_allow(&a, "qb", &[], RANGE).await.unwrap();
    let reg_b = s.registration(&b).await.unwrap();
    assert!(
        qb.port != db.port && qb.port != reg_b.tunnel_port,
        "a port nobody holds"
    );
    let again = s.set_tcp_allow(&a, "db", &[], RANGE).await.unwrap();
    assert_eq!(
        (again.port, again.allow.len()),
        (db.port, 0),
        "same port, closed"
    );
    s.set_tcp_allow(&a, "x", &[], RANGE).await.unwrap();
    assert!(matches!(
        s.set_tcp_allow(&a, "y", &[], RANGE).await,
        Err(StoreError::PortQuota(3))
    ));
    let bad = vec!["::ffff:1.2.3.4/64".to_owned()];
    assert!(matches!(
        s.set_tcp_allow(&a, "db", &bad, RANGE).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.set_tcp_allow("nope", "db", &[], RANGE).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.tcp_services(Some(&a)).await.unwrap().len(), 3);
    assert_eq!(s.tcp_services(Some(&b)).await.unwrap().len(), 0);
    // A new registration never gets a port a TCP service holds.
    let c = registered(&*s).await;
    let held: Vec<u16> = s
        .tcp_services(None)
        .await
        .unwrap()
        .iter()
        .map(|t| t.port)
        .collect();
    assert!(!held.contains(&s.registration(&c).await.unwrap().tunnel_port));
}

async fn every_write_bumps_the_version_and_nothing_else_does(s: Arc<dyn Store>) {
    let mut last = s.version().await.unwrap();
    let mut bumped = |v: i64, what: &str| {
        assert!(v > last, "{what} bumps the version ({last} -> {v})");
        last = v;
    };
    let t = s.create_token(None, None).await.unwrap();
    bumped(s.version().await.unwrap(), "create_token");
    let r = s.register(&t.secret, None, PK, RANGE).await.unwrap();
    bumped(s.version().await.unwrap(), "register");
    let k = s.create_key(&r.id).await.unwrap();
    bumped(s.version().await.unwrap(), "create_key");
    s.set_tcp_allow(&r.id, "db", &[], RANGE).await.unwrap();
    bumped(s.version().await.unwrap(), "set_tcp_allow");
    s.revoke_key(&k.info.id).await.unwrap();
    bumped(s.version().await.unwrap(), "revoke_key");
    s.revoke_token(&t.info.id).await.unwrap();
    bumped(s.version().await.unwrap(), "revoke_token");
    s.revoke_registration(&r.id).await.unwrap();
    bumped(s.version().await.unwrap(), "revoke_registration");
    let _ = s.list_tokens().await.unwrap();
    let _ = s.list_keys(None).await.unwrap();
    let _ = s.auth_data().await.unwrap();
    let _ = s.register("g2ct_nope", None, PK, RANGE).await.unwrap_err();
    assert_eq!(
        s.version().await.unwrap(),
        last,
        "reads and refusals do not bump"
    );
}

async fn the_auth_snapshot_holds_exactly_what_is_live(s: Arc<dyn Store>) {
    let a = registered(&*s).await;
    let b = registered(&*s).await;
    let ka = s.create_key(&a).await.unwrap();
    let kb = s.create_key(&b).await.unwrap();
    s.set_tcp_allow(&a, "db", &["10.0.0.0/8".into()], RANGE)
        .await
        .unwrap();
    s.set_tcp_allow(&b, "db", &["10.0.0.0/8".into()], RANGE)
        .await
        .unwrap();
    s.revoke_registration(&b).await.unwrap();
    let d = s.auth_data().await.unwrap();
    let regs: Vec<&str> = d.registrations.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(regs, [a.as_str()]);
    assert_eq!(d.keys.len(), 1);
    assert_eq!(
        d.keys[0].0,
        hash_secret(&ka.secret),
        "keys by the hash of their secret"
    );
    assert_eq!(d.keys[0].1.id, ka.info.id);
    assert!(d.keys.iter().all(|(_, k)| k.id != kb.info.id));
    assert_eq!(d.tcp.len(), 1);
    assert_eq!(
        (d.tcp[0].registration_id.as_str(), d.tcp[0].allow.len()),
        (a.as_str(), 1)
    );
}

async fn concurrent_registrations_never_share_a_port(s: Arc<dyn Store>) {
    let t = s.create_token(Some(16), None).await.unwrap().secret;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = s.clone();
            let t = t.clone();
            tokio::spawn(async move { s.register(&t, None, PK, RANGE).await })
        })
        .collect();
    let mut ports = Vec::new();
    for task in tasks {
        ports.push(
            task.await
                .unwrap()
                .expect("each of 16 uses registers")
                .tunnel_port,
        );
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 16, "16 distinct ports");
    assert!(
        s.register(&t, None, PK, RANGE).await.is_err(),
        "the 17th use is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_meets_the_store_contract() {
    for (name, case) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("g2c.db")).await.unwrap();
        eprintln!("sqlite: {name}");
        case(Arc::new(store)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_meets_the_store_contract() {
    let pg = Postgres::start();
    for (name, case) in CASES {
        let config = StoreConfig {
            url: Some(pg.create_database()),
            ..Default::default()
        };
        let store = PgStore::open(&config).await.unwrap();
        eprintln!("postgres: {name}");
        case(Arc::new(store)).await;
    }
}
