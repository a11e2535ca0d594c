//! `g2c-agent`: register with a gateway, run the tunnel, check a config.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use g2c_agent::config::{valid_host_port, AgentConfig, ServiceConfig};
use g2c_agent::status::Status;
use g2c_proto::registration::RegisterRequest;
use g2c_proto::{sshkeys, ServiceKind};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "g2c-agent", version, about = "Ground2Cloud agent")]
struct Cli {
    /// Config file (default: the per-OS service path).
    #[arg(long, short, global = true, env = "G2C_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register with a gateway and write the agent config.
    Register {
        /// Backchannel URL, e.g. https://gw.example.com:3014
        #[arg(long)]
        backchannel: String,
        /// Enrollment token from the operator.
        #[arg(long, env = "G2C_TOKEN", hide_env_values = true)]
        token: String,
        /// A friendly name for this agent.
        #[arg(long)]
        name: Option<String>,
        /// Private key file (default: agent_key next to the config).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Extra CA certificate (PEM) to trust for the backchannel.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// Allow a plain http:// backchannel that is not on this machine. The answer pins the
        /// gateway's SSH host key: anyone on the path could substitute theirs.
        #[arg(long)]
        insecure_plain_http: bool,
        /// HTTP service, NAME=HOST:PORT (repeatable).
        #[arg(long = "service", value_name = "NAME=HOST:PORT")]
        services: Vec<String>,
        /// TCP service, NAME=HOST:PORT (repeatable).
        #[arg(long = "tcp-service", value_name = "NAME=HOST:PORT")]
        tcp_services: Vec<String>,
    },
    /// Run the tunnel (what the service runs).
    Run {
        /// Started by the Windows service control manager.
        #[arg(long, hide = true)]
        windows_service: bool,
    },
    /// Ask the running agent whether its tunnel is up (and since when, to which gateway, the
    /// last error).
    Status,
    /// Show the requests the running agent carried lately (what the GUI's Requests page shows).
    Requests {
        /// Keep printing requests as they end.
        #[arg(long)]
        follow: bool,
        /// How many recent requests to print first.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// Only this service's requests.
        #[arg(long)]
        service: Option<String>,
    },
    /// Open the local GUI in the default browser (or print its address where there is none).
    Gui {
        /// Print the login secret (kept beside the config, mode 0600) and exit.
        #[arg(long)]
        show_secret: bool,
        /// Print the address only; do not start a browser.
        #[arg(long)]
        no_open: bool,
    },
    /// Install and control the agent as an OS service (systemd, launchd, Windows).
    Service {
        #[command(subcommand)]
        op: ServiceOp,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        op: ConfigOp,
    },
}

#[derive(Subcommand)]
enum ServiceOp {
    /// Install the service for the config given with --config (default: the per-OS path).
    Install {
        /// Print what would be written and run; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Agent executable the service runs (default: this one).
        #[arg(long)]
        exe: Option<PathBuf>,
    },
    /// Remove the service.
    Uninstall,
    /// Start the installed service.
    Start,
    /// Stop the installed service.
    Stop,
    /// Whether the service is installed and running.
    Status,
}

#[derive(Subcommand)]
enum ConfigOp {
    /// Validate the config file and name the first bad field.
    Check,
}

fn parse_service(spec: &str, kind: ServiceKind) -> Result<ServiceConfig> {
    let (name, local) = spec
        .split_once('=')
        .with_context(|| format!("service {spec:?} must be NAME=HOST:PORT"))?;
    if !valid_host_port(local) {
        bail!("service {spec:?}: {local:?} is not HOST:PORT");
    }
    Ok(ServiceConfig::new(name, kind, local))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Run {
        windows_service: true,
    } = cli.command
    {
        return run_windows_service(cli);
    }
    runtime()?.block_on(async_main(cli))
}

#[cfg(windows)]
fn run_windows_service(cli: Cli) -> Result<()> {
    g2c_agent::winsvc::run_as_service(Box::new(move |token| {
        let rt = runtime().map_err(|e| e.to_string())?;
        rt.block_on(run_agent(cli.config_path(), Some(token)))
            .map_err(|e| e.to_string())
    }))?;
    Ok(())
}

#[cfg(not(windows))]
fn run_windows_service(_cli: Cli) -> Result<()> {
    bail!("--windows-service is only meaningful on Windows")
}

impl Cli {
    fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(AgentConfig::default_path)
    }
}

/// `g2c-agent run`: load the config (a bad field is fatal and named), log to stderr and the
/// rotating files, serve the local API and GUI, run the tunnel until SIGTERM / Ctrl-C / `stop`.
/// A restart asked for in the GUI reloads the config file and runs again in this process.
async fn run_agent(config_path: PathBuf, stop: Option<CancellationToken>) -> Result<()> {
    let mut config = AgentConfig::load(&config_path)?;
    let log_dir_override = std::env::var_os("G2C_LOG_DIR").map(PathBuf::from);
    if log_dir_override.is_some() {
        config.log.dir = log_dir_override.clone();
    }
    let log_file = g2c_agent::logging::init(Some(&config.log));
    let status = Arc::new(Status::new(
        format!("{}:{}", config.gateway.ssh_host, config.gateway.ssh_port),
        config.registration_id.clone(),
    ));
    let shutdown = stop.unwrap_or_default();
    tokio::spawn(g2c_proto::signal::shutdown_signal(shutdown.clone()));
    tracing::info!(
        config = %config_path.display(),
        registration = %config.registration_id,
        log_file = ?log_file,
        "agent starting"
    );
    let secret_file = g2c_agent::gui::auth::secret_file(&config_path);
    let auth = g2c_agent::gui::auth::GuiAuth::from_file(&secret_file)
        .with_context(|| format!("GUI secret file {}", secret_file.display()))?;
    let auth = std::sync::Arc::new(auth);
    let control = g2c_agent::supervisor::Supervisor::new(
        config,
        status,
        Some(config_path.clone()),
        log_dir_override,
    );
    let api_file = g2c_agent::local_api::addr_file(&config_path);
    while g2c_agent::run_with(
        control.clone(),
        auth.clone(),
        shutdown.clone(),
        Some(api_file.clone()),
    )
    .await?
        == g2c_agent::Exit::Restart
    {
        match control.reload_from_file() {
            Ok(()) => tracing::info!("agent restarting with the config file"),
            Err(e) => {
                tracing::error!(error = %e, "config file unusable; restarting with the previous config")
            }
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// Where the running agent's API listens: the address it recorded, else the configured one.
fn api_addr(config_path: &std::path::Path) -> Result<std::net::SocketAddr> {
    let recorded = std::fs::read_to_string(g2c_agent::local_api::addr_file(config_path))
        .ok()
        .and_then(|t| t.trim().parse().ok());
    Ok(match recorded {
        Some(a) => a,
        None => AgentConfig::load(config_path)?.local_api.listen,
    })
}

/// The GUI secret beside the config (readable by the agent's own user only).
fn read_secret(config_path: &std::path::Path) -> Result<String> {
    let path = g2c_agent::gui::auth::secret_file(config_path);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the GUI secret {} (run as the agent's user or an administrator; the agent creates it at first start)",
            path.display()
        )
    })?;
    Ok(text.trim().to_owned())
}

/// `g2c-agent gui`: print the secret, or open (print) the page.
fn gui(config_path: &std::path::Path, show_secret: bool, no_open: bool) -> Result<()> {
    if show_secret {
        println!("{}", read_secret(config_path)?);
        return Ok(());
    }
    let url = g2c_agent::gui::url(api_addr(config_path)?);
    println!("Ground2Cloud agent GUI: {url}");
    println!("log in with the secret from: g2c-agent gui --show-secret");
    // The page logs itself in from the fragment (never sent to the server, stripped at once).
    let with_login = match read_secret(config_path) {
        Ok(secret) => format!("{url}#secret={secret}"),
        Err(_) => url.clone(),
    };
    if !no_open && !open_browser(&with_login) {
        println!("(no browser could be started here; open the address above on this machine)");
    }
    Ok(())
}

/// Start the desktop's browser on `url`; false when there is no desktop or no opener.
fn open_browser(url: &str) -> bool {
    let mut cmd = if cfg!(windows) {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", "", url]);
        c
    } else if cfg!(target_os = "macos") {
        let mut c = std::process::Command::new("open");
        c.arg(url);
        c
    } else {
        if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
            return false;
        }
        let mut c = std::process::Command::new("xdg-open");
        c.arg(url);
        c
    };
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `g2c-agent status`: what the running agent says about itself.
async fn print_status(config_path: &std::path::Path, json: bool) -> Result<()> {
    let addr = api_addr(config_path)?;
    let s = g2c_agent::local_api::fetch_status(addr, &read_secret(config_path)?).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    match (s.connected, s.connected_since) {
        (true, Some(since)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(since);
            println!("connected:     yes, for {} s", now.saturating_sub(since));
        }
        _ => println!("connected:     no"),
    }
    println!("gateway:       {}", s.gateway);
    println!("registration:  {}", s.registration_id);
    println!("reconnects:    {}", s.reconnects);
    println!(
        "last error:    {}",
        s.last_error.as_deref().unwrap_or("none")
    );
    if let Some(rtt) = s.rtt_us {
        println!("control rtt:   {:.2} ms", rtt as f64 / 1000.0);
    }
    println!(
        "streams:       {} active; {} B in, {} B out",
        s.active_streams, s.bytes_in, s.bytes_out
    );
    for h in &s.services {
        println!(
            "service {:<12} {} ({:.1} ms)",
            h.name,
            if h.healthy { "up" } else { "DOWN" },
            h.latency_us as f64 / 1000.0
        );
    }
    println!("agent:         version {} (pid {})", s.version, s.pid);
    Ok(())
}

fn service_op(op: ServiceOp, config_path: &std::path::Path, json: bool) -> Result<()> {
    use g2c_agent::service;
    match op {
        ServiceOp::Install { dry_run, exe } => {
            let exe = match exe {
                Some(e) => std::path::absolute(e)?,
                None => std::env::current_exe()?,
            };
            let config = std::path::absolute(config_path)?;
            let plan = service::install(&exe, &config, dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
                return Ok(());
            }
            let verb = if dry_run { "would write" } else { "wrote" };
            if let Some((path, text)) = &plan.file {
                println!("# {verb} {}\n{text}", path.display());
            }
            let verb = if dry_run { "would run" } else { "ran" };
            for cmd in &plan.commands {
                println!("# {verb}: {}", cmd.join(" "));
            }
            if !dry_run {
                println!("installed the {} service {}", plan.manager, service::LABEL);
            }
        }
        ServiceOp::Uninstall => {
            service::uninstall()?;
            println!("uninstalled {}", service::LABEL);
        }
        ServiceOp::Start => {
            service::start()?;
            println!("started {}", service::LABEL);
        }
        ServiceOp::Stop => {
            service::stop()?;
            println!("stopped {}", service::LABEL);
        }
        ServiceOp::Status => println!("{}: {}", service::LABEL, service::status()?),
    }
    Ok(())
}

/// The tokio runtime: single-threaded by default (one tunnel: measured cheaper per request than
/// a work-stealing pool on small machines); `G2C_WORKER_THREADS=N` (N > 1) for a pool.
fn runtime() -> Result<tokio::runtime::Runtime> {
    let threads: usize = std::env::var("G2C_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    Ok(builder.enable_all().build()?)
}

async fn async_main(cli: Cli) -> Result<()> {
    let config_path = cli.config_path();
    match cli.command {
        Command::Register {
            backchannel,
            token,
            name,
            key,
            ca_cert,
            insecure_plain_http,
            services,
            tcp_services,
        } => {
            let mut svcs = Vec::new();
            for s in &services {
                svcs.push(parse_service(s, ServiceKind::Http)?);
            }
            for s in &tcp_services {
                svcs.push(parse_service(s, ServiceKind::Tcp)?);
            }
            let key_path = key.unwrap_or_else(|| {
                config_path
                    .parent()
                    .map(|d| d.join("agent_key"))
                    .unwrap_or_else(|| "agent_key".into())
            });
            let private = sshkeys::load_or_generate(&key_path)?;
            let request = RegisterRequest {
                name,
                public_key: sshkeys::public_openssh(private.public_key()),
                token,
            };
            let plain_http = if insecure_plain_http {
                g2c_agent::register::PlainHttp::Anywhere
            } else {
                g2c_agent::register::PlainHttp::LoopbackOnly
            };
            let answer = g2c_agent::register::register(
                &backchannel,
                ca_cert.as_deref(),
                &request,
                plain_http,
            )
            .await?;
            let config = AgentConfig::for_registration(
                &answer,
                std::path::absolute(&key_path)?,
                svcs,
                Some(backchannel),
            );
            config.save(&config_path)?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!(
                    "registered as {} (tunnel port {}); config written to {}",
                    answer.registration_id,
                    answer.tunnel_port,
                    config_path.display()
                );
                if config.services.is_empty() {
                    println!("add at least one [[services]] entry before running the agent");
                }
            }
        }
        Command::Run { .. } => run_agent(config_path, None).await?,
        Command::Status => print_status(&config_path, cli.json).await?,
        Command::Requests {
            follow,
            last,
            service,
        } => {
            let ask = g2c_agent::inspect::cli::Ask {
                follow,
                json: cli.json,
                last,
                service,
            };
            let (addr, secret) = (api_addr(&config_path)?, read_secret(&config_path)?);
            let mut out = std::io::stdout().lock();
            match g2c_agent::inspect::cli::run(addr, &secret, &ask, &mut out).await {
                Err(g2c_agent::inspect::cli::RequestsError::Io(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
        Command::Gui {
            show_secret,
            no_open,
        } => gui(&config_path, show_secret, no_open)?,
        Command::Service { op } => service_op(op, &config_path, cli.json)?,
        Command::Config {
            op: ConfigOp::Check,
        } => {
            AgentConfig::load(&config_path)?;
            println!("config ok: {}", config_path.display());
        }
    }
    Ok(())
}
