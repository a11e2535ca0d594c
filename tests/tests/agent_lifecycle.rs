//! The agent as customers run it, with the real binaries: generated service definitions pass the
//! platforms' validators; it retries an absent gateway with growing, jittered delays and
//! connects when it appears; a bad config is fatal and named; SIGKILL + restart resumes the
//! tunnel and SIGTERM drains; log files rotate within their bounds; `status` reads the live
//! agent; the npm tarballs install offline and work.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use g2c_agent::config::AgentConfig;
use g2c_tests::backend::Backend;
use g2c_tests::client::send;
use g2c_tests::harness::{routed, TestGateway};
use g2c_tests::procs::{bin, register_agent, start_agent, GatewayProc, Proc, ProcStack};
use g2c_tests::wait_until;
use http::Method;
use tokio::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn agent_cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("g2c-agent"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .await
        .unwrap()
}

async fn status_json(config: &Path) -> Option<serde_json::Value> {
    let out = agent_cli(config, &["status", "--json"]).await;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Rewrite the agent config with `edit` applied.
fn edit_config(path: &Path, edit: impl FnOnce(&mut AgentConfig)) {
    let mut cfg = AgentConfig::load(path).unwrap();
    edit(&mut cfg);
    cfg.save(path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_definitions_pass_the_platform_validators() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(dir.path(), None).await;
    let (_, config) = register_agent(&gw, dir.path(), &["web=127.0.0.1:9"]).await;

    // --dry-run prints the unit; systemd's own verifier accepts it.
    let out = agent_cli(&config, &["service", "install", "--dry-run", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["manager"], "systemd");
    let unit = plan["file"][1].as_str().unwrap();
    assert!(plan["file"][0]
        .as_str()
        .unwrap()
        .ends_with("/ground2cloud-agent.service"));
    for line in [
        "Restart=always",
        "StartLimitIntervalSec=0",
        "After=network-online.target",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    let unit_file = dir.path().join("ground2cloud-agent.service");
    std::fs::write(&unit_file, unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_file)
        .output()
        .await
        .expect("systemd-analyze (Debian package `systemd`; scripts/test.sh installs it)");
    let complaints = String::from_utf8_lossy(&verify.stderr).to_string();
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {complaints}"
    );
    assert!(
        !complaints.contains("ground2cloud-agent.service:"),
        "no complaint about our unit: {complaints}"
    );

    // The launchd plist is a valid property list with KeepAlive (checked by Python's plistlib).
    let plist = g2c_agent::service::launchd_plist(&bin("g2c-agent"), &config);
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import plistlib,sys; p=plistlib.loads(sys.stdin.buffer.read()); \
             assert p['KeepAlive'] is True and p['RunAtLoad'] is True, p; \
             print(p['Label'], ' '.join(p['ProgramArguments']))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = py.stdin.take().unwrap();
    stdin.write_all(plist.as_bytes()).await.unwrap();
    drop(stdin);
    let out = py.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.starts_with("com.ground2cloud.agent "), "{printed}");
    assert!(printed.trim_end().ends_with(" run"), "{printed}");

    // Installing against a missing or invalid config is refused, naming the problem.
    let missing = dir.path().join("nope.toml");
    let out = agent_cli(&missing, &["service", "install", "--dry-run"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to install"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_fatal_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(dir.path(), None).await;
    let (_, config) = register_agent(&gw, dir.path(), &["web=127.0.0.1:9"]).await;
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:9", "no-port-here");
    std::fs::write(&config, text).unwrap();
    for args in [&["run"][..], &["config", "check"][..]] {
        let out = tokio::time::timeout(Duration::from_secs(10), agent_cli(&config, args))
            .await
            .expect("exits at once");
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("services[0].local"), "{args:?}: {err}");
    }
}

/// `delay_ms=N` values of the agent's "reconnecting after delay" lines.
fn retry_delays(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("reconnecting after delay"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("delay_ms="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_gateway_is_retried_with_growing_jittered_delays_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = GatewayProc::start(dir.path(), None).await;
    let (id, config) = register_agent(&gw, dir.path(), &["web=127.0.0.1:9"]).await;
    edit_config(&config, |c| {
        c.reconnect.initial_delay_ms = 40;
        c.reconnect.max_delay_ms = 640;
    });
    let addrs = gw.addrs.clone();
    gw.proc.signal("TERM");
    assert_eq!(gw.proc.wait(Duration::from_secs(10)).await, Some(0));

    let agent = start_agent(&config, dir.path().join("agent.log"));
    wait_until(Duration::from_secs(20), "six retries logged", || {
        let n = retry_delays(&agent.log_text()).len();
        async move { n >= 6 }
    })
    .await;
    let delays = retry_delays(&agent.log_text());
    eprintln!("retry delays (ms): {delays:?}");
    // Exponential with jitter: each step's ceiling doubles (40, 80, 160, 320, 640, 640...).
    for (i, d) in delays.iter().enumerate() {
        let ceiling = (40u64 << i.min(4)).min(640);
        assert!(*d <= ceiling, "delay {i} = {d} above {ceiling}: {delays:?}");
    }
    assert!(
        delays[4..].iter().max() > delays[..2].iter().max(),
        "delays grow: {delays:?}"
    );
    let distinct: std::collections::HashSet<_> = delays.iter().collect();
    assert!(distinct.len() >= 3, "delays are jittered: {delays:?}");
    let st = status_json(&config).await.expect("status answers");
    assert_eq!(st["connected"], false);
    assert!(st["reconnects"].as_u64().unwrap() >= 6);
    assert!(st["last_error"].is_string(), "{st}");

    // The gateway appears: the agent connects by itself and `status` says so.
    let gw = GatewayProc::start(dir.path(), Some(&addrs)).await;
    gw.wait_connected(&id, Duration::from_secs(10)).await;
    wait_until(Duration::from_secs(5), "status connected", || async {
        status_json(&config)
            .await
            .is_some_and(|s| s["connected"] == true)
    })
    .await;
    let st = status_json(&config).await.unwrap();
    assert_eq!(st["registration_id"], id.as_str());
    assert_eq!(st["gateway"], format!("127.0.0.1:{}", addrs.ssh.port()));
    assert!(st["connected_since"].as_u64().unwrap() > 1_700_000_000);
    let human = agent_cli(&config, &["status"]).await;
    assert!(String::from_utf8_lossy(&human.stdout).contains("connected:     yes"));
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_resume_the_tunnel_and_sigterm_drains() {
    let app = Backend::start().await;
    let mut st = ProcStack::start(app.addr).await;
    let http = st.http();
    st.agent.kill().await; // SIGKILL, as a crash
    wait_until(
        Duration::from_secs(5),
        "gateway saw the agent go",
        || async { !st.gw.is_connected(&st.id).await },
    )
    .await;
    // The service manager starts it again.
    st.agent = start_agent(&st.agent_config, st.dir.path().join("agent-2.log"));
    st.gw.wait_connected(&st.id, Duration::from_secs(10)).await;
    let r = send(http, routed(Method::GET, &st.id, "/again", &st.key, "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        status_json(&st.agent_config).await.unwrap()["connected"],
        true
    );

    // SIGTERM with a request in flight: it completes, then the agent exits 0.
    let slow = tokio::spawn(send(
        http,
        routed(Method::GET, &st.id, "/slow/700", &st.key, ""),
    ));
    wait_until(Duration::from_secs(5), "request at the app", || {
        let seen = app.seen().iter().any(|s| s.uri == "/slow/700");
        async move { seen }
    })
    .await;
    st.agent.signal("TERM");
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"slow done");
    assert_eq!(st.agent.wait(Duration::from_secs(10)).await, Some(0));
    assert!(
        !agent_cli(&st.agent_config, &["status"])
            .await
            .status
            .success(),
        "status says the agent is not running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_files_rotate_at_the_size_and_never_exceed_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = GatewayProc::start(dir.path(), None).await;
    let (_, config) = register_agent(&gw, dir.path(), &["web=127.0.0.1:9"]).await;
    // Where `Proc::spawn` points G2C_LOG_DIR (which overrides `log.dir`).
    let logs = dir.path().join("logs");
    edit_config(&config, |c| {
        c.reconnect.initial_delay_ms = 5;
        c.reconnect.max_delay_ms = 10;
        c.log.dir = Some(logs.clone());
        c.log.max_bytes = 2048;
        c.log.max_files = 3;
    });
    gw.proc.signal("TERM"); // an absent gateway: the agent logs every retry
    assert_eq!(gw.proc.wait(Duration::from_secs(10)).await, Some(0));
    let mut cmd = Command::new(bin("g2c-agent"));
    cmd.arg("--config").arg(&config).arg("run");
    let mut agent = Proc::spawn(&mut cmd, dir.path().join("agent.log"));
    let rotated_twice_more = || {
        let n = std::fs::read_dir(&logs).map(|d| d.count()).unwrap_or(0);
        let last = std::fs::read_to_string(logs.join("agent.log.2")).unwrap_or_default();
        async move { n >= 3 && !last.is_empty() }
    };
    wait_until(
        Duration::from_secs(20),
        "three log files",
        rotated_twice_more,
    )
    .await;
    // Keep logging through several more rotations.
    let first_oldest = std::fs::read_to_string(logs.join("agent.log.2")).unwrap();
    wait_until(Duration::from_secs(20), "further rotations", || {
        let now = std::fs::read_to_string(logs.join("agent.log.2")).unwrap_or_default();
        let changed = now != first_oldest;
        async move { changed }
    })
    .await;
    agent.kill().await;
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["agent.log", "agent.log.1", "agent.log.2"]);
    for n in &names {
        let text = std::fs::read_to_string(logs.join(n)).unwrap();
        assert!(text.len() <= 2048, "{n}: {} bytes", text.len());
        assert!(
            text.lines().all(|l| l.starts_with("20") && l.len() > 30),
            "whole timestamped lines in {n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_tarballs_install_offline_and_run_the_agent() {
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("tarballs");
    let pack = Command::new(repo_root().join("scripts/npm-pack.sh"))
        .arg(&out_dir)
        .env("G2C_AGENT_BIN", bin("g2c-agent"))
        .output()
        .await
        .expect("npm-pack.sh");
    assert!(
        pack.status.success(),
        "{}",
        String::from_utf8_lossy(&pack.stderr)
    );
    let tarballs: Vec<String> = String::from_utf8_lossy(&pack.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(tarballs.len(), 2, "{tarballs:?}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(tarballs[0].ends_with(&format!("ground2cloud-agent-linux-x64-{version}.tgz")));
    assert!(tarballs[1].ends_with(&format!("ground2cloud-agent-{version}.tgz")));

    let cache = work.path().join("npm-cache");
    let npm_install = |prefix: PathBuf, pkgs: Vec<String>| npm_install(prefix, cache.clone(), pkgs);
    let shim = npm_install(work.path().join("prefix"), tarballs.clone()).await;
    let v = Command::new(&shim).arg("--version").output().await.unwrap();
    assert!(v.status.success());
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("g2c-agent {version}")
    );

    // `register` through the npm-installed command against a test gateway.
    let gw = TestGateway::start().await;
    let config = work.path().join("agent.toml");
    let out = Command::new(&shim)
        .arg("--config")
        .arg(&config)
        .args(["register", "--backchannel", &gw.backchannel_url()])
        .args([
            "--token",
            &gw.token().await,
            "--service",
            "web=127.0.0.1:8080",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = AgentConfig::load(&config).unwrap();
    assert!(gw.store.registration(&cfg.registration_id).await.is_ok());

    // Without the platform package, the shim says which platform is missing.
    let bare = npm_install(work.path().join("bare"), vec![tarballs[1].clone()]).await;
    let out = Command::new(&bare).arg("--version").output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux-x64") && err.contains("ground2cloud-agent-linux-x64"),
        "{err}"
    );
}

/// `npm install -g --offline` of `pkgs` into `prefix`: the installed `g2c-agent` command.
async fn npm_install(prefix: PathBuf, cache: PathBuf, pkgs: Vec<String>) -> PathBuf {
    let out = Command::new("npm")
        .args(["install", "-g", "--offline", "--no-audit", "--no-fund"])
        .arg("--prefix")
        .arg(&prefix)
        .arg("--cache")
        .arg(cache)
        .args(pkgs)
        .output()
        .await
        .expect("npm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    prefix.join("bin").join("g2c-agent")
}
