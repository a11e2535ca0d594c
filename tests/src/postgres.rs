//! A real PostgreSQL server for tests: `initdb` into a temporary directory, then `postgres` on
//! a free loopback port (`fsync=off`: test data need not survive a power cut), stopped and
//! removed on drop. Run as the `postgres` user when the tests run as root (initdb refuses
//! root). No system service is used; `scripts/test.sh` installs the `postgresql` package.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The superuser the harness creates (trust authentication, loopback only).
pub const USER: &str = "g2c";

/// A running PostgreSQL server.
pub struct Postgres {
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    bin: PathBuf,
    child: Option<Child>,
    databases: AtomicUsize,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL server binaries not found: install postgresql (scripts/test.sh does)")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `program args...`, as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Postgres {
    /// Initialise a cluster and start the server.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the data directory to postgres");
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            bin,
            child: None,
            databases: AtomicUsize::new(0),
        };
        pg.boot();
        pg
    }

    /// Start the server on a free port (retrying if another process takes it first).
    fn boot(&mut self) {
        for _attempt in 0..5 {
            let port = if self.addr.port() == 0 {
                free_port()
            } else {
                self.addr.port()
            };
            let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
            let mut child = as_postgres(&self.bin.join("postgres"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-p", &port.to_string(), "-k"])
                .arg(self.dir.path())
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=200"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if self.ready(port) {
                    self.addr = addr;
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            self.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        panic!("PostgreSQL did not start: {}", self.log());
    }

    fn ready(&self, port: u16) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER, "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("g2c_{n}");
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.addr.port().to_string(),
                "-U",
                USER,
            ])
            .arg(&name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@{}/{name}", self.addr)
    }

    /// Stop (fast shutdown: clients are disconnected) and wait for the process.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The postmaster's own pid (the child may be `runuser`, which need not forward
            // signals).
            let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
                .ok()
                .and_then(|t| t.lines().next().map(str::to_owned))
                .unwrap_or_else(|| child.id().to_string());
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let _ = child.wait();
            // Wait for the postmaster itself, not only its wrapper.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stop and start again on the same port, as `pg_ctl restart -m fast` does.
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
