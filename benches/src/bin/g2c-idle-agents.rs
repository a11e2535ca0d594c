//! Many idle agents in one process, for the gateway-memory benchmark: each registers with its
//! own fresh ed25519 key over the real backchannel and keeps a real SSH tunnel (the agent
//! library's `run`) open, idle. Prints `connected N` once all are up, then waits for Ctrl-C.
//!
//!   g2c-idle-agents --backchannel http://127.0.0.1:3014 --token T --count 1000 --dir D
#![forbid(unsafe_code)]

use g2c_benches::arg;

use std::sync::Arc;
use std::time::Duration;

use g2c_agent::config::{AgentConfig, ServiceConfig};
use g2c_agent::status::Status;
use g2c_proto::registration::RegisterRequest;
use g2c_proto::{sshkeys, ServiceKind};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backchannel = arg("--backchannel").ok_or("--backchannel URL")?;
    let token = arg("--token").ok_or("--token T")?;
    let count: usize = arg("--count").and_then(|c| c.parse().ok()).unwrap_or(1000);
    let dir = std::path::PathBuf::from(arg("--dir").ok_or("--dir D")?);
    std::fs::create_dir_all(&dir)?;
    let shutdown = CancellationToken::new();
    let mut statuses = Vec::with_capacity(count);
    for i in 0..count {
        let key_file = dir.join(format!("key{i}"));
        let key = sshkeys::load_or_generate(&key_file)?;
        let answer = g2c_agent::register::register(
            &backchannel,
            None,
            &RegisterRequest {
                name: Some(format!("idle-{i}")),
                public_key: sshkeys::public_openssh(key.public_key()),
                token: token.clone(),
            },
            g2c_agent::register::PlainHttp::LoopbackOnly,
        )
        .await?;
        let web = ServiceConfig {
            health_check: Some(false),
            ..ServiceConfig::new("web", ServiceKind::Http, "127.0.0.1:9")
        };
        let mut config = AgentConfig::for_registration(&answer, key_file, vec![web], None);
        config.local_api.listen = "127.0.0.1:0".parse()?;
        let status = Arc::new(Status::new(String::new(), config.registration_id.clone()));
        statuses.push(status.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = g2c_agent::run(config, status, shutdown).await;
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let up = statuses.iter().filter(|s| s.snapshot().connected).count();
        if up == count {
            println!("connected {up}");
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("only {up} of {count} agents connected").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::signal::ctrl_c().await?;
    shutdown.cancel();
    Ok(())
}
