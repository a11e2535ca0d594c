//! The gateway's one-shot admin subcommands on the store: tokens, API keys, registrations.
//! Each prints a line of text, or JSON with `--json`.

use anyhow::{Context, Result};
use g2c_gateway::config::GatewayConfig;
use g2c_gateway::store::Store;

use crate::{parse_duration, print, KeyOp, RegistrationOp, TokenOp};

fn state(revoked: bool) -> &'static str {
    if revoked {
        "revoked"
    } else {
        "active"
    }
}

/// `token create|list|revoke`.
pub async fn token(store: &dyn Store, op: TokenOp, json: bool) -> Result<()> {
    match op {
        TokenOp::Create { uses, ttl } => {
            let uses = (uses > 0).then_some(uses);
            let created = store.create_token(uses, parse_duration(&ttl)?).await?;
            print(json, &created, |c| c.secret.clone())?;
        }
        TokenOp::List => print(json, &store.list_tokens().await?, |ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{}\tuses_left={}\texpires_at={}\t{}",
                        t.id,
                        t.uses_left.map_or("unlimited".into(), |n| n.to_string()),
                        t.expires_at.map_or("never".into(), |n| n.to_string()),
                        state(t.revoked_at.is_some())
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })?,
        TokenOp::Revoke { id } => {
            store.revoke_token(&id).await?;
            print(json, &serde_json::json!({"revoked": id}), |_| {
                format!("token {id} revoked")
            })?;
        }
    }
    Ok(())
}

/// `key create|list|revoke`.
pub async fn key(store: &dyn Store, op: KeyOp, json: bool) -> Result<()> {
    match op {
        KeyOp::Create {
            registration,
            service,
        } => {
            let created = store
                .create_scoped_key(&registration, service.as_deref())
                .await?;
            print(json, &created, |c| c.secret.clone())?;
        }
        KeyOp::List { registration } => print(
            json,
            &store.list_keys(registration.as_deref()).await?,
            |ks| {
                ks.iter()
                    .map(|k| {
                        format!(
                            "{}\tregistration={}\tservice={}\t{}",
                            k.id,
                            k.registration_id,
                            k.service.as_deref().unwrap_or("*"),
                            state(k.revoked_at.is_some())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        )?,
        KeyOp::Revoke { id } => {
            store.revoke_key(&id).await?;
            print(json, &serde_json::json!({"revoked": id}), |_| {
                format!("key {id} revoked")
            })?;
        }
    }
    Ok(())
}

/// `registration list|show|allow|revoke`.
pub async fn registration(
    store: &dyn Store,
    op: RegistrationOp,
    json: bool,
    config: &GatewayConfig,
) -> Result<()> {
    match op {
        RegistrationOp::List => print(json, &store.list_registrations().await?, |rs| {
            rs.iter()
                .map(|r| {
                    format!(
                        "{}\tname={}\tport={}\t{}",
                        r.id,
                        r.name.as_deref().unwrap_or("-"),
                        r.tunnel_port,
                        state(r.revoked_at.is_some())
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })?,
        RegistrationOp::Show { id } => {
            let r = store.registration(&id).await?;
            let tcp = store.tcp_services(Some(&id)).await?;
            let mut view = serde_json::to_value(&r)?;
            view["tcp_services"] = serde_json::to_value(&tcp)?;
            print(json, &view, |_| {
                let mut text = format!(
                    "id:          {}\nname:        {}\ntunnel_port: {}\npublic_key:  {}\ncreated_at:  {}\nrevoked_at:  {}",
                    r.id,
                    r.name.as_deref().unwrap_or("-"),
                    r.tunnel_port,
                    r.public_key,
                    r.created_at,
                    r.revoked_at.map_or("-".into(), |t| t.to_string())
                );
                for t in &tcp {
                    text.push_str(&format!(
                        "\ntcp service: {} port={} allow={}",
                        t.service,
                        t.port,
                        if t.allow.is_empty() {
                            "(closed)".into()
                        } else {
                            t.allow.join(",")
                        }
                    ));
                }
                text
            })?
        }
        RegistrationOp::Allow { id, service, cidrs } => {
            let t = store
                .set_tcp_allow(&id, &service, &cidrs, config.limits.ports())
                .await?;
            print(json, &t, |t| {
                format!(
                    "{}/{} on port {}: {}",
                    t.registration_id,
                    t.service,
                    t.port,
                    if t.allow.is_empty() {
                        "closed".into()
                    } else {
                        format!("allow {}", t.allow.join(","))
                    }
                )
            })?
        }
        RegistrationOp::Create { public_key, name } => {
            let text = std::fs::read_to_string(&public_key)
                .with_context(|| format!("reading {}", public_key.display()))?;
            let reg = g2c_gateway::store::register_by_hand(
                store,
                name.as_deref(),
                &text,
                config.limits.ports(),
            )
            .await?;
            let ssh_port = config.ssh.public_port.unwrap_or(config.ssh.listen.port());
            let host = &config.ssh.public_host;
            let known = g2c_gateway::hostkey::load_or_generate(&config.ssh.host_key)
                .map(|k| g2c_proto::sshkeys::public_openssh(k.public_key()))
                .unwrap_or_default();
            let command = format!(
                "ssh -N -o ExitOnForwardFailure=yes -o ServerAliveInterval=15 -R 0:127.0.0.1:8080 {}@{host} -p {ssh_port}",
                reg.id
            );
            let mut view = serde_json::to_value(&reg)?;
            view["ssh_command"] = command.clone().into();
            view["known_hosts"] = format!("[{host}]:{ssh_port} {known}").into();
            print(json, &view, |_| {
                format!(
                    "registration {} (port {})\n\nOn the site, trust the gateway:\n  echo '[{host}]:{ssh_port} {known}' >> ~/.ssh/known_hosts\nthen hold the tunnel (127.0.0.1:8080 being the app):\n  {command}",
                    reg.id, reg.tunnel_port
                )
            })?;
        }
        RegistrationOp::Revoke { id } => {
            store.revoke_registration(&id).await?;
            print(json, &serde_json::json!({"revoked": id}), |_| {
                format!("registration {id} revoked")
            })?;
        }
    }
    Ok(())
}
