//! A whole cluster for tests, every part real: PostgreSQL, three gateway nodes (the real
//! binary) each on its own loopback address (127.0.0.11, .12, .13, as if on separate hosts)
//! sharing one SSH host key and a peer-link CA made here, HAProxy in front of their HTTP and
//! SSH ports (health checks on `/readyz`), and an agent registered by the real `g2c-agent
//! register`, keeping its tunnels on two of the nodes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use g2c_gateway::BoundAddrs;

use crate::postgres::Postgres;
use crate::procs::{register_agent_with, start_agent, GatewayProc, GatewaySpec, Proc};
use crate::wait_until;

/// The name every node's peer certificate carries (the gateway's default `server_name`).
pub const NODE_NAME: &str = "g2c-node";

/// A cluster CA and one node certificate it issued, as PEM files.
pub struct PeerCerts {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The node certificate.
    pub cert: PathBuf,
    /// The node's private key.
    pub key: PathBuf,
    /// How long a draining node announces it before it stops accepting (ms).
    pub drain_announce_ms: u64,
    _dir: tempfile::TempDir,
}

impl PeerCerts {
    /// A fresh CA and a certificate for [`NODE_NAME`] (server and client use); a second call
    /// makes a stranger's: same name, another CA.
    pub fn generate() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let node_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![NODE_NAME.to_owned()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&node_key, &issuer).unwrap();
        let path = |name: &str, pem: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        Self {
            ca: path("ca.pem", ca_cert.pem()),
            cert: path("node.pem", cert.pem()),
            key: path("node.key", node_key.serialize_pem()),
            drain_announce_ms: 1500,
            _dir: dir,
        }
    }
}

/// One node's addresses, for the load balancer.
#[derive(Clone, Copy, Debug)]
pub struct NodePorts {
    /// Plain-HTTP front door.
    pub http: SocketAddr,
    /// SSH listener.
    pub ssh: SocketAddr,
    /// Admin listener (`/readyz`).
    pub admin: SocketAddr,
}

/// HAProxy in front of the nodes: an HTTP frontend (mode http, retrying a request whose
/// connection failed on another node) and an SSH frontend (mode tcp), each backend checked
/// with `GET /readyz` on the node's admin port every 200 ms.
pub struct Haproxy {
    /// The HTTP frontend.
    pub http: SocketAddr,
    /// The SSH frontend.
    pub ssh: SocketAddr,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The HAProxy configuration for `nodes` behind `http` and `ssh` (also shipped, with real
/// addresses, as `deploy/cluster/haproxy.cfg`). The check timeout is 1 s here, not the shipped
/// 500 ms: with `fall 1`, one `/readyz` answer slowed past 500 ms on a loaded 2-core test machine
/// took every node out at once (a full run saw 3,357 HAProxy 503s after a kill); a hung node is
/// still out within 1.2 s.
pub fn haproxy_config(
    http: SocketAddr,
    ssh: SocketAddr,
    nodes: &[NodePorts],
    stats: &Path,
) -> String {
    let mut text = format!(
        "global\n  maxconn 4096\n  stats socket {}\n\
         defaults\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n  \
         timeout check 1s\n  retries 3\n  option redispatch 1\n\n",
        stats.display()
    );
    text += &format!(
        "frontend http\n  mode http\n  bind {http}\n  default_backend nodes_http\n\
         backend nodes_http\n  mode http\n  balance roundrobin\n  \
         option httpchk GET /readyz\n  http-check expect status 200\n  \
         retry-on conn-failure empty-response response-timeout\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        text += &format!(
            "  server n{i} {} check port {} inter 200ms fall 1 rise 2\n",
            n.http,
            n.admin.port()
        );
    }
    text += &format!(
        "\nfrontend ssh\n  mode tcp\n  bind {ssh}\n  default_backend nodes_ssh\n\
         backend nodes_ssh\n  mode tcp\n  balance leastconn\n  \
         option httpchk GET /readyz\n  http-check expect status 200\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        text += &format!(
            "  server n{i} {} check port {} inter 200ms fall 1 rise 2\n",
            n.ssh,
            n.admin.port()
        );
    }
    text
}

impl Haproxy {
    /// Start HAProxy on `http` and `ssh` in front of `nodes`; waits until it listens.
    pub fn start(http: SocketAddr, ssh: SocketAddr, nodes: &[NodePorts]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        let stats = dir.path().join("stats.sock");
        std::fs::write(&cfg, haproxy_config(http, ssh, nodes, &stats)).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = std::process::Command::new(haproxy_bin())
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lb = Self {
            http,
            ssh,
            child,
            dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(http).is_err() {
            if let Ok(Some(_)) = lb.child.try_wait() {
                panic!("haproxy exited: {}", lb.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "haproxy did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        lb
    }

    /// Whether HAProxy has node `i` up in both backends (its health checks passed).
    pub fn node_up(&self, i: usize) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.dir.path().join("stats.sock"))
        else {
            return false;
        };
        let mut csv = String::new();
        if s.write_all(b"show stat\n").is_err() || s.read_to_string(&mut csv).is_err() {
            return false;
        }
        let name = format!("n{i}");
        let up: Vec<bool> = csv
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > 17 && f[1] == name)
            .map(|f| f[17] == "UP")
            .collect();
        up.len() == 2 && up.iter().all(|u| *u)
    }

    /// HAProxy's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

fn haproxy_bin() -> PathBuf {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("haproxy not found: install haproxy (scripts/test.sh does)")
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- haproxy log ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node's slot in the cluster: its directory and address stay across restarts.
pub struct Node {
    /// The process, while it runs.
    pub gw: Option<GatewayProc>,
    /// Its own loopback address.
    pub ip: IpAddr,
    /// Its addresses from the first start (a restart binds the same).
    pub addrs: BoundAddrs,
    /// Its files (config, admin token, logs).
    pub dir: tempfile::TempDir,
}

/// PostgreSQL, the nodes and HAProxy.
pub struct Cluster {
    /// The nodes, in address order.
    pub nodes: Vec<Node>,
    /// The load balancer.
    pub lb: Haproxy,
    /// The shared store's URL.
    pub url: String,
    /// The peer-link certificates every node uses.
    pub certs: PeerCerts,
    ports: crate::PortBlock,
    /// The database (dropped last of the servers).
    pub pg: Postgres,
}

/// The loopback address of node `i`.
pub fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11 + i as u8))
}

impl Cluster {
    /// Start PostgreSQL, `n` nodes (sharing one SSH host key the harness writes) and
    /// HAProxy; returns once every node sees all `n`.
    pub async fn start(n: usize) -> Self {
        let pg = Postgres::start();
        let url = pg.create_database();
        let certs = PeerCerts::generate();
        let ports = crate::port_block();
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let ssh = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // One SSH host key for every node, written before any starts: a node writes its ready
        // file once its listeners are bound, before it loads or generates the key, so copying
        // the first node's key file raced its start.
        let host_key = g2c_proto::sshkeys::generate_ed25519();
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            g2c_proto::sshkeys::write_private_key(&dir.path().join("host_key"), &host_key)
                .expect("write the shared host key");
            let gw = Self::spawn(dir.path(), node_ip(i), None, &url, &certs, &ports, ssh).await;
            nodes.push(Node {
                ip: node_ip(i),
                addrs: gw.addrs.clone(),
                gw: Some(gw),
                dir,
            });
        }
        let backends: Vec<NodePorts> = nodes
            .iter()
            .map(|n| NodePorts {
                http: n.addrs.http.unwrap(),
                ssh: n.addrs.ssh,
                admin: n.addrs.admin,
            })
            .collect();
        let lb = Haproxy::start(http, ssh, &backends);
        let cluster = Self {
            nodes,
            lb,
            url,
            certs,
            ports,
            pg,
        };
        for i in 0..n {
            cluster.wait_nodes_alive(i, n).await;
        }
        cluster
    }

    async fn spawn(
        dir: &Path,
        ip: IpAddr,
        addrs: Option<&BoundAddrs>,
        url: &str,
        certs: &PeerCerts,
        ports: &crate::PortBlock,
        ssh_public: SocketAddr,
    ) -> GatewayProc {
        GatewayProc::start_spec(
            dir,
            &GatewaySpec {
                ip: Some(ip),
                addrs,
                store_url: Some(url),
                ports: Some((ports.start, ports.end)),
                ssh_public: Some(ssh_public),
                cluster: Some(certs),
                ..Default::default()
            },
        )
        .await
    }

    /// The running node `i`.
    pub fn node(&self, i: usize) -> &GatewayProc {
        self.nodes[i].gw.as_ref().expect("node running")
    }

    /// Mutable access to node `i`'s process (signals, kill).
    pub fn node_mut(&mut self, i: usize) -> &mut GatewayProc {
        self.nodes[i].gw.as_mut().expect("node running")
    }

    /// Start node `i` again on its old addresses.
    pub async fn start_node(&mut self, i: usize) {
        let node = &self.nodes[i];
        let gw = Self::spawn(
            node.dir.path(),
            node.ip,
            Some(&node.addrs),
            &self.url,
            &self.certs,
            &self.ports,
            self.lb.ssh,
        )
        .await;
        self.nodes[i].gw = Some(gw);
    }

    /// Wait until the load balancer sends node `i` traffic again.
    pub async fn wait_balanced(&self, i: usize) {
        wait_until(
            Duration::from_secs(10),
            "HAProxy has the node up",
            || async { self.lb.node_up(i) },
        )
        .await;
    }

    /// SIGTERM node `i` and wait for it to exit (drained) within `limit`.
    pub async fn stop_node(&mut self, i: usize, limit: Duration) {
        let mut gw = self.nodes[i].gw.take().expect("node running");
        gw.proc.signal("TERM");
        let code = gw.proc.wait(limit).await;
        assert_eq!(code, Some(0), "node {i} exits cleanly after a drain");
    }

    /// SIGKILL node `i`.
    pub async fn kill_node(&mut self, i: usize) {
        let mut gw = self.nodes[i].gw.take().expect("node running");
        gw.proc.kill().await;
    }

    /// Wait until node `i` counts `n` nodes alive.
    pub async fn wait_nodes_alive(&self, i: usize, n: usize) {
        let admin = self.node(i).addrs.admin;
        wait_until(
            Duration::from_secs(15),
            "nodes see each other",
            || async move {
                crate::prom::scrape(admin)
                    .await
                    .get("g2c_cluster_nodes_alive", &[])
                    == Some(n as f64)
            },
        )
        .await;
    }

    /// The running nodes that hold a tunnel of `registration` themselves.
    pub async fn holders(&self, registration: &str) -> Vec<usize> {
        let mut held = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(gw) = &n.gw {
                if gw.is_connected(registration).await {
                    held.push(i);
                }
            }
        }
        held
    }

    /// Wait until `count` running nodes hold a tunnel of `registration`.
    pub async fn wait_holders(&self, registration: &str, count: usize, limit: Duration) {
        wait_until(limit, "the agent's tunnels are up", || async {
            self.holders(registration).await.len() == count
        })
        .await;
    }

    /// Wait until every running node without a tunnel of its own knows one held elsewhere
    /// (presence is polled).
    pub async fn wait_known_everywhere(&self) {
        wait_until(
            Duration::from_secs(10),
            "every node knows the tunnels",
            || async {
                for n in self.nodes.iter().filter_map(|n| n.gw.as_ref()) {
                    let m = crate::prom::scrape(n.addrs.admin).await;
                    let here = m.get("g2c_cluster_tunnels_held", &[]).unwrap_or(0.0);
                    let there = m.get("g2c_cluster_remote_tunnels", &[]).unwrap_or(0.0);
                    if here + there < 1.0 {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    /// Register an agent through node 0 with `http` and `tcp` services
    /// (`NAME=HOST:PORT`), start it (it dials the load balancer, then a second node) and wait
    /// until two nodes hold its tunnels; returns the registration, an API key and the agent.
    pub async fn agent(&self, dir: &Path, http: &[&str], tcp: &[&str]) -> ClusterAgent {
        let mut args: Vec<&str> = Vec::new();
        for t in tcp {
            args.extend(["--tcp-service", t]);
        }
        let (id, config) = register_agent_with(self.node(0), dir, http, &args).await;
        let proc = start_agent(&config, dir.join("agent.log"));
        self.wait_holders(&id, 2, Duration::from_secs(20)).await;
        self.wait_known_everywhere().await;
        let key = self
            .node(0)
            .cli(&["key", "create", "--registration", &id])
            .await;
        ClusterAgent {
            id,
            key,
            proc,
            config,
        }
    }
}

/// An agent of the cluster.
pub struct ClusterAgent {
    /// Registration ID.
    pub id: String,
    /// An API key for it.
    pub key: String,
    /// The agent process.
    pub proc: Proc,
    /// Its config file.
    pub config: PathBuf,
}
