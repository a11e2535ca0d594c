//! The real binaries as processes: gateway (config file, `--ready-file` for its bound ports) and
//! agent (config written by the real `g2c-agent register`), with signals and RSS readings.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use g2c_gateway::BoundAddrs;
use tokio::process::{Child, Command};

use crate::wait_until;

/// Path of a workspace binary next to the test executable (`target/<profile>/NAME`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --release --bins), as scripts/test.sh does",
        path.display()
    );
    path
}

/// A child process with its log file.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Combined stdout/stderr log.
    pub log: PathBuf,
}

impl Proc {
    /// Start `cmd` with stdout and stderr going to `log`.
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .env("G2C_LOG", "info")
            .env("NO_COLOR", "1")
            // Agents' log files go beside the test's other files, never to /var/log.
            .env(
                "G2C_LOG_DIR",
                log.parent().unwrap_or(Path::new(".")).join("logs"),
            )
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("process running")
    }

    /// Send a signal by name (`KILL`, `TERM`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Wait for exit with a limit; returns the exit code.
    pub async fn wait(&mut self, limit: Duration) -> Option<i32> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("process exits in time")
            .unwrap()
            .code()
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Resident set size now, KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Open file descriptors now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    /// A failing test shows the tail of each process's log (its files are deleted with the
    /// test's temporary directory).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// What a gateway process is started with; the default is a single node on 127.0.0.1 with
/// fresh ports and an embedded store.
#[derive(Default, Clone, Copy)]
pub struct GatewaySpec<'a> {
    /// The address every listener binds (a node of a cluster has its own loopback address).
    pub ip: Option<std::net::IpAddr>,
    /// The ports of a previous run, to restart on (fresh ones if `None`).
    pub addrs: Option<&'a BoundAddrs>,
    /// Extra `key = value` lines in `[limits]`.
    pub limits: &'a str,
    /// A PostgreSQL store instead of the embedded one.
    pub store_url: Option<&'a str>,
    /// The public TCP port range (every node of a cluster has the same one); a fresh block if
    /// `None`.
    pub ports: Option<(u16, u16)>,
    /// The SSH address registration answers name (a load balancer's).
    pub ssh_public: Option<std::net::SocketAddr>,
    /// A `[cluster]` section: the peer link's certificates.
    pub cluster: Option<&'a crate::cluster::PeerCerts>,
}

/// The gateway binary, running.
pub struct GatewayProc {
    /// The process.
    pub proc: Proc,
    /// Bound addresses (from `--ready-file`).
    pub addrs: BoundAddrs,
    /// Config file path.
    pub config: PathBuf,
    /// Its public TCP ports, held for as long as it runs.
    _ports: crate::PortBlock,
}

impl GatewayProc {
    /// Start `g2c-gateway run` with its files in `dir`, on `addrs` or fresh ports.
    pub async fn start(dir: &Path, addrs: Option<&BoundAddrs>) -> Self {
        Self::start_with_limits(dir, addrs, "").await
    }

    /// [`GatewayProc::start`] with extra `key = value` lines in its `[limits]` section.
    pub async fn start_with_limits(dir: &Path, addrs: Option<&BoundAddrs>, limits: &str) -> Self {
        Self::start_on(dir, addrs, limits, None).await
    }

    /// [`GatewayProc::start_with_limits`], its store in the PostgreSQL database `store_url`
    /// when given (a node of a cluster).
    pub async fn start_on(
        dir: &Path,
        addrs: Option<&BoundAddrs>,
        limits: &str,
        store_url: Option<&str>,
    ) -> Self {
        Self::start_spec(
            dir,
            &GatewaySpec {
                addrs,
                limits,
                store_url,
                ..Default::default()
            },
        )
        .await
    }

    /// Start the gateway `spec` describes, with its files in `dir`.
    pub async fn start_spec(dir: &Path, spec: &GatewaySpec<'_>) -> Self {
        let ip = spec.ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        let addrs = spec.addrs;
        let listen = |a: Option<std::net::SocketAddr>| {
            a.map(|a| a.to_string())
                .unwrap_or_else(|| std::net::SocketAddr::new(ip, 0).to_string())
        };
        let config = dir.join("gateway.toml");
        let ports = crate::port_block();
        let (port_start, port_end) = spec.ports.unwrap_or((ports.start, ports.end));
        let public_ssh = spec.ssh_public.map_or(String::new(), |a| {
            format!("public_host = \"{}\"\npublic_port = {}\n", a.ip(), a.port())
        });
        let cluster = spec.cluster.map_or(String::new(), |c| {
            format!(
                "[cluster]\npeer_listen = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
                 drain_announce_ms = {}\n",
                listen(addrs.and_then(|a| a.peer)),
                c.ca.display(),
                c.cert.display(),
                c.key.display(),
                c.drain_announce_ms,
            )
        });
        let text = format!(
            "base_domain = \"g2c.test\"\n\
             [store]\npath = \"gateway.db\"\n{}\
             [http]\nlisten = \"{}\"\n\
             [ssh]\nlisten = \"{}\"\nhost_key = \"host_key\"\n{}\
             [backchannel]\nlisten = \"{}\"\n\
             [admin]\nlisten = \"{}\"\n\
             [tcp]\nbind = \"{}\"\n\
             [limits]\nshutdown_grace_secs = 2\nport_range_start = {}\nport_range_end = {}\n{}\n{}",
            spec.store_url
                .map_or(String::new(), |u| format!("url = \"{u}\"\n")),
            listen(addrs.and_then(|a| a.http)),
            listen(addrs.map(|a| a.ssh)),
            public_ssh,
            listen(addrs.map(|a| a.backchannel)),
            listen(addrs.map(|a| a.admin)),
            ip,
            port_start,
            port_end,
            spec.limits,
            cluster,
        );
        std::fs::write(&config, text).unwrap();
        let ready = dir.join("gateway.ready");
        let _ = std::fs::remove_file(&ready);
        let mut attempts = 0;
        loop {
            let proc = Proc::spawn(
                Command::new(bin("g2c-gateway"))
                    .arg("--config")
                    .arg(&config)
                    .arg("run")
                    .arg("--ready-file")
                    .arg(&ready),
                dir.join(format!("gateway-{}.log", attempts)),
            );
            let mut proc = proc;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(text) = std::fs::read(&ready) {
                    let addrs: BoundAddrs = serde_json::from_slice(&text).unwrap();
                    return Self {
                        proc,
                        addrs,
                        config,
                        _ports: ports,
                    };
                }
                if let Ok(Some(_)) = proc.child.try_wait() {
                    break; // failed to bind (port still held on restart): retry
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "gateway did not start: {}",
                    proc.log_text()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            attempts += 1;
            assert!(
                attempts < 50,
                "gateway keeps failing to start: {}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Run a `g2c-gateway` admin subcommand against this gateway's store; returns stdout.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(bin("g2c-gateway"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "g2c-gateway {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Whether the admin API shows `registration` connected.
    pub async fn is_connected(&self, registration: &str) -> bool {
        let token = self.config.with_file_name("admin_token");
        let req = crate::client::admin_request(http::Method::GET, "/v1/registrations", &token);
        let reply = crate::client::send(self.addrs.admin, req).await;
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .any(|r| r["id"] == registration && r["connected"] == true)
            })
            .unwrap_or(false)
    }

    /// Wait until `registration` is connected.
    pub async fn wait_connected(&self, registration: &str, limit: Duration) {
        wait_until(limit, "agent connected (admin API)", || {
            self.is_connected(registration)
        })
        .await;
    }
}

/// Register an agent with the real `g2c-agent register` into `dir/agent.toml`; returns the
/// registration ID and the config path.
pub async fn register_agent(gw: &GatewayProc, dir: &Path, services: &[&str]) -> (String, PathBuf) {
    register_agent_with(gw, dir, services, &[]).await
}

/// [`register_agent`] with more arguments for `g2c-agent register` (`--tcp-service ...`).
pub async fn register_agent_with(
    gw: &GatewayProc,
    dir: &Path,
    services: &[&str],
    extra: &[&str],
) -> (String, PathBuf) {
    let token = gw.cli(&["token", "create"]).await;
    let config = dir.join("agent.toml");
    let mut cmd = Command::new(bin("g2c-agent"));
    cmd.arg("--config")
        .arg(&config)
        .arg("register")
        .arg("--backchannel")
        .arg(format!("http://{}", gw.addrs.backchannel))
        .arg("--token")
        .arg(&token);
    for s in services {
        cmd.arg("--service").arg(s);
    }
    cmd.args(extra);
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "register failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("registration_id = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    (id, config)
}

/// Start `g2c-agent run` with `config`.
pub fn start_agent(config: &Path, log: PathBuf) -> Proc {
    Proc::spawn(
        Command::new(bin("g2c-agent"))
            .arg("--config")
            .arg(config)
            .arg("run"),
        log,
    )
}

/// A whole stack as processes: the gateway binary, one agent binary registered with the real
/// `g2c-agent register` in front of an HTTP app, connected, and an API key for it.
pub struct ProcStack {
    /// The gateway.
    pub gw: GatewayProc,
    /// The agent.
    pub agent: Proc,
    /// The agent's config file.
    pub agent_config: PathBuf,
    /// Registration ID.
    pub id: String,
    /// API key for the registration.
    pub key: String,
    /// Holds every file (store, keys, configs, logs). Declared last so that it is deleted
    /// only after the processes are gone. Moving the others out of the stack (a `let`
    /// pattern with `..`) drops it at once: bind it.
    pub dir: tempfile::TempDir,
}

impl ProcStack {
    /// Start everything with `app` as the agent's `web` service and wait until it is connected.
    pub async fn start(app: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let gw = GatewayProc::start(dir.path(), None).await;
        let (id, agent_config) = register_agent(&gw, dir.path(), &[&format!("web={app}")]).await;
        let agent = start_agent(&agent_config, dir.path().join("agent.log"));
        gw.wait_connected(&id, Duration::from_secs(15)).await;
        let key = gw.cli(&["key", "create", "--registration", &id]).await;
        Self {
            dir,
            gw,
            agent,
            agent_config,
            id,
            key,
        }
    }

    /// The gateway's plain-HTTP front door.
    pub fn http(&self) -> std::net::SocketAddr {
        self.gw.addrs.http.unwrap()
    }
}
