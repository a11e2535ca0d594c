//! `g2c-agent`: register with a gateway, run the tunnel, check a config.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use g2c_agent::config::{
    valid_host_port, AgentConfig, GatewayEndpoint, ReconnectConfig, ServiceConfig,
};
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
        /// HTTP service, NAME=HOST:PORT (repeatable).
        #[arg(long = "service", value_name = "NAME=HOST:PORT")]
        services: Vec<String>,
        /// TCP service, NAME=HOST:PORT (repeatable).
        #[arg(long = "tcp-service", value_name = "NAME=HOST:PORT")]
        tcp_services: Vec<String>,
    },
    /// Run the tunnel (what the service runs).
    Run,
    /// Configuration.
    Config {
        #[command(subcommand)]
        op: ConfigOp,
    },
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
    Ok(ServiceConfig {
        name: name.to_owned(),
        kind,
        local: local.to_owned(),
        health_check: None,
    })
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("G2C_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
    token.cancel();
}

fn main() -> Result<()> {
    runtime()?.block_on(async_main())
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

async fn async_main() -> Result<()> {
    let cli = Cli::parse();
    let config_path = cli.config.clone().unwrap_or_else(AgentConfig::default_path);
    match cli.command {
        Command::Register {
            backchannel,
            token,
            name,
            key,
            ca_cert,
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
            let answer =
                g2c_agent::register::register(&backchannel, ca_cert.as_deref(), &request).await?;
            let config = AgentConfig {
                registration_id: answer.registration_id.clone(),
                key_file: std::path::absolute(&key_path)?,
                gateway: GatewayEndpoint {
                    ssh_host: answer.ssh_host.clone(),
                    ssh_port: answer.ssh_port,
                    host_key: answer.gateway_host_key.clone(),
                    tunnel_port: answer.tunnel_port,
                    backchannel: Some(backchannel),
                },
                services: svcs,
                reconnect: ReconnectConfig::default(),
            };
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
        Command::Run => {
            init_tracing();
            let config = AgentConfig::load(&config_path)?;
            let status = Arc::new(Status::new(
                format!("{}:{}", config.gateway.ssh_host, config.gateway.ssh_port),
                config.registration_id.clone(),
            ));
            let shutdown = CancellationToken::new();
            tokio::spawn(shutdown_signal(shutdown.clone()));
            tracing::info!(config = %config_path.display(), registration = %config.registration_id, "agent starting");
            g2c_agent::run(config, status, shutdown).await?;
            tracing::info!("agent stopped");
        }
        Command::Config {
            op: ConfigOp::Check,
        } => {
            AgentConfig::load(&config_path)?;
            println!("config ok: {}", config_path.display());
        }
    }
    Ok(())
}
