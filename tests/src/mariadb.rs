//! A real MariaDB server for tests: `mariadb-install-db` into a temporary data directory, then
//! `mariadbd` on a free loopback port, stopped (and its files removed) on drop. No system
//! service is used. `scripts/test.sh` installs `mariadb-server` when missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// User and password the harness creates (all privileges).
pub const USER: &str = "g2c";
/// Password of [`USER`].
pub const PASSWORD: &str = "g2c-test-password";
/// Database the harness creates.
pub const DATABASE: &str = "g2c";

/// A running MariaDB server.
pub struct MariaDb {
    /// Where it listens (127.0.0.1 unless asked otherwise).
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: std::process::Child,
    options: MariaDbOptions,
}

/// How [`MariaDb::start_with`] runs the server.
#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    /// Address to listen on (loopback).
    pub bind: std::net::IpAddr,
    /// Resolve client addresses (off: `--skip-name-resolve`). MariaDB keeps its host cache,
    /// and so enforces `max_connect_errors`, only when it resolves names, and never for
    /// 127.0.0.1 or ::1.
    pub resolve_names: bool,
    /// Further `mariadbd` arguments.
    pub extra: Vec<String>,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        Self {
            bind: std::net::IpAddr::from([127, 0, 0, 1]),
            resolve_names: false,
            extra: Vec::new(),
        }
    }
}

fn free_port() -> u16 {
    // MariaDB cannot bind port 0 and report it: take a free port from the kernel and hand it on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn which(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: install mariadb-server (scripts/test.sh does)");
}

impl MariaDb {
    /// Install a fresh data directory and start the server.
    pub fn start() -> Self {
        Self::start_with(MariaDbOptions::default())
    }

    /// As [`Self::start`], run as `options` say.
    pub fn start_with(options: MariaDbOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Each server gets its own tmpdir: concurrent bootstraps sharing /tmp collide on
        // temporary-table file names.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        install(&data, &tmp);
        let sock = dir.path().join("mysqld.sock");
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = spawn_server(dir.path(), &data, &tmp, port, &options);
            let addr = SocketAddr::new(options.bind, port);
            if wait_up(&mut child, &sock, addr) {
                let db = Self {
                    addr,
                    dir,
                    child,
                    options,
                };
                db.sql_socket(&format!(
                    "CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
                     GRANT ALL ON *.* TO '{USER}'@'%'; CREATE DATABASE {DATABASE};"
                ));
                return db;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "mariadbd did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
    }

    fn sql_socket(&self, sql: &str) {
        let out = Command::new(which("mariadb"))
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("mysqld.sock").display()
            ))
            .args(["-uroot", "-e", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start the server again on the same port and data (after [`Self::kill`]); waits until
    /// it accepts connections.
    pub fn restart(&mut self) {
        let data = self.dir.path().join("data");
        let tmp = self.dir.path().join("tmp");
        let sock = self.dir.path().join("mysqld.sock");
        let _ = std::fs::remove_file(&sock);
        for _attempt in 0..50 {
            let mut child = spawn_server(
                self.dir.path(),
                &data,
                &tmp,
                self.addr.port(),
                &self.options,
            );
            if wait_up(&mut child, &sock, self.addr) {
                self.child = child;
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100)); // the port may linger a moment
        }
        panic!("mariadbd did not restart: {}", self.error_log());
    }

    /// The server's error log, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Kill the server at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A `mysql://` URL for `addr` (the server itself or a tunnel port in front of it).
    pub fn url_via(addr: SocketAddr) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@{}:{}/{DATABASE}",
            addr.ip(),
            addr.port()
        )
    }

    /// Run the `mariadb` command-line client against `addr` with `sql` on stdin; returns stdout.
    pub fn cli(addr: SocketAddr, sql: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = Command::new(which("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--host={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--user={USER}"))
            .arg(format!("--password={PASSWORD}"))
            .args(["--protocol=TCP", "--batch", "--skip-column-names", DATABASE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh data directory at `data`.
fn install(data: &Path, tmp: &Path) {
    let out = Command::new(which("mariadb-install-db"))
        .args([
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
        ])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .env("TMPDIR", tmp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `child` came up (its socket and `addr` answer) within 30 s; `false` if it exited.
fn wait_up(child: &mut std::process::Child, sock: &Path, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // exited (the port was taken meanwhile)
        }
        if sock.exists() && std::net::TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `mariadbd` on `data`, listening on loopback `port`, its socket, pid and log in `dir`.
fn spawn_server(
    dir: &Path,
    data: &Path,
    tmp: &Path,
    port: u16,
    options: &MariaDbOptions,
) -> std::process::Child {
    let mut cmd = Command::new(which("mariadbd"));
    // --no-defaults is only honoured as the first argument.
    cmd.arg("--no-defaults");
    if !options.resolve_names {
        cmd.arg("--skip-name-resolve");
    }
    cmd.args(&options.extra)
        .arg(format!("--bind-address={}", options.bind))
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg(format!("--port={port}"))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .args([
            "--user=root",
            "--max-allowed-packet=64M",
            "--innodb-buffer-pool-size=64M",
            "--max-connections=500",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
