//! `g2c-gateway`: parse flags and config, then either run the gateway or perform one admin
//! operation on the store (tokens, API keys, registrations).
#![forbid(unsafe_code)]

mod cli;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use g2c_gateway::config::GatewayConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "g2c-gateway", version, about = "Ground2Cloud gateway")]
struct Cli {
    /// Config file (TOML). Without it, embedded defaults are used.
    #[arg(long, short, global = true, env = "G2C_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run {
        /// Write the bound addresses as JSON to this file once listening (for scripts and
        /// tests that bind port 0).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        op: TokenOp,
    },
    /// Caller API keys.
    Key {
        #[command(subcommand)]
        op: KeyOp,
    },
    /// Registered agents.
    Registration {
        #[command(subcommand)]
        op: RegistrationOp,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        op: ConfigOp,
    },
}

#[derive(Subcommand)]
enum TokenOp {
    /// Create a token (printed once).
    Create {
        /// Registrations it may create (0 = unlimited).
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime, e.g. 30m, 24h, 7d (0 = never expires).
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// List tokens.
    List,
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: String,
    },
}

#[derive(Subcommand)]
enum KeyOp {
    /// Create an API key for one registration (printed once).
    Create {
        /// Registration the key may call.
        #[arg(long)]
        registration: String,
        /// Only this HTTP service of it (default: every service).
        #[arg(long)]
        service: Option<String>,
    },
    /// List keys.
    List {
        /// Only this registration's keys.
        #[arg(long)]
        registration: Option<String>,
    },
    /// Revoke a key.
    Revoke {
        /// Key id.
        id: String,
    },
}

#[derive(Subcommand)]
enum RegistrationOp {
    /// List registrations.
    List,
    /// Register a public key by hand, for a site that runs only OpenSSH (`ssh -N -R
    /// 0:HOST:PORT <id>@gateway`) instead of the agent; prints the line to run there.
    Create {
        /// The site's OpenSSH public key file (e.g. id_ed25519.pub).
        #[arg(long)]
        public_key: std::path::PathBuf,
        /// A name for operators.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show one registration.
    Show {
        /// Registration ID.
        id: String,
    },
    /// Revoke a registration (and its keys); its live tunnel closes.
    Revoke {
        /// Registration ID.
        id: String,
    },
    /// Set which source networks may reach one of its TCP services (replaces the list; no
    /// CIDR closes the port). Allocates the service's stable public port.
    Allow {
        /// Registration ID.
        id: String,
        /// TCP service name (as in the agent's config).
        service: String,
        /// Allowed source networks, e.g. 203.0.113.0/24.
        cidrs: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ConfigOp {
    /// Validate the config file and report the first bad field.
    Check,
}

fn parse_duration(text: &str) -> Result<Option<Duration>> {
    let text = text.trim();
    if text == "0" {
        return Ok(None);
    }
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid duration {text:?}"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("invalid duration unit in {text:?} (use s, m, h or d)"),
    };
    Ok(Some(Duration::from_secs(secs)))
}

fn load_config(path: Option<&PathBuf>) -> Result<GatewayConfig> {
    Ok(match path {
        Some(p) => GatewayConfig::load(p)?,
        None => {
            let c = GatewayConfig::default();
            c.validate()?;
            c
        }
    })
}

fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("G2C_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> Result<()> {
    runtime()?.block_on(async_main())
}

/// The control runtime: one thread for the listeners' accept loops, the admin API, the
/// backchannel, the store and the cluster's loops. Connections are served on the worker
/// runtimes the gateway starts (one per core, or `G2C_WORKER_THREADS=N`; see `workers.rs`).
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn async_main() -> Result<()> {
    let cli = Cli::parse();
    let config = load_config(cli.config.as_ref())?;
    let json = cli.json;
    match cli.command.unwrap_or(Command::Run { ready_file: None }) {
        Command::Run { ready_file } => {
            init_tracing();
            let listeners = g2c_gateway::Listeners::bind(&config).await?;
            if let Some(path) = ready_file {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec(&listeners.addrs()?)?)?;
                std::fs::rename(&tmp, &path)?;
            }
            let shutdown = CancellationToken::new();
            tokio::spawn(g2c_proto::signal::shutdown_signal(shutdown.clone()));
            g2c_gateway::run(listeners, config, shutdown).await?;
        }
        Command::Config {
            op: ConfigOp::Check,
        } => {
            println!("config ok");
        }
        Command::Token { op } => {
            cli::token(&*g2c_gateway::store::open(&config.store).await?, op, json).await?
        }
        Command::Key { op } => {
            cli::key(&*g2c_gateway::store::open(&config.store).await?, op, json).await?
        }
        Command::Registration { op } => {
            let store = g2c_gateway::store::open(&config.store).await?;
            cli::registration(&*store, op, json, &config).await?
        }
    }
    Ok(())
}
