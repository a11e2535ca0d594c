//! The GUI's operations: read and change the configuration (validated, backed up, written
//! atomically, applied live where possible), test a local service, and rotate the agent's key
//! by registering a new one.

use http::StatusCode;
use serde::Deserialize;

use super::{error, field_error, json, Resp};
use crate::config::{AgentConfig, ConfigError};
use crate::supervisor::Supervisor;

/// Body of `PUT /v1/config`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    /// The whole new configuration.
    pub config: AgentConfig,
}

/// Body of `POST /v1/rotate-key`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// A fresh enrollment token from the operator.
    pub token: String,
}

/// `GET /v1/config`: the file's configuration and where it lives.
pub fn get_config(control: &Supervisor) -> Resp {
    match control.file_config() {
        Ok(config) => json(
            StatusCode::OK,
            &serde_json::json!({
                "path": control.config_path(),
                "config": config,
                "live_sections": ["services", "gateway", "registration_id", "key_file", "reconnect", "log"],
                "restart_sections": ["local_api"],
            }),
        ),
        Err(e) => config_error(e),
    }
}

fn config_error(e: ConfigError) -> Resp {
    match e {
        ConfigError::Invalid { field, message } => field_error(&field, message),
        ConfigError::Parse { message, .. } => field_error("config", message),
        ConfigError::Io { path, source } => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io",
            format!("{}: {source}", path.display()),
        ),
    }
}

/// `PUT /v1/config`.
pub async fn put_config(control: &Supervisor, config: AgentConfig) -> Resp {
    match control.update_config(config).await {
        Ok(outcome) => json(StatusCode::OK, &outcome),
        Err(e) => {
            tracing::info!(error = %e, "configuration change refused");
            config_error(e)
        }
    }
}

/// `POST /v1/services/<name>/test`.
pub async fn test_service(control: &Supervisor, name: &str) -> Resp {
    let config = control.config();
    let Some(service) = config.services.iter().find(|s| s.name == name) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no service named {name:?}"),
        );
    };
    let result = crate::health::test_service(service).await;
    tracing::info!(service = %name, healthy = result.healthy, detail = %result.detail, latency_us = result.latency_us, "service tested");
    control.status().set_test(result.clone());
    json(StatusCode::OK, &result)
}

/// `POST /v1/rotate-key`: a new key pair, registered with a fresh token; the config then names
/// the new registration and the tunnel reconnects with it. The old key is deleted once the new
/// config is saved; the operator revokes the old registration.
pub async fn rotate_key(control: &Supervisor, request: RotateKey) -> Resp {
    let live = control.config();
    let Some(backchannel) = live.gateway.backchannel.clone() else {
        return error(
            StatusCode::CONFLICT,
            "no_backchannel",
            "the config has no gateway.backchannel URL to register with",
        );
    };
    let mut file_config = match control.file_config() {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    let key_path = live.key_file.clone();
    let with_suffix = |suffix: &str| {
        let mut p = key_path.clone().into_os_string();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    let (new_path, old_path) = (with_suffix(".new"), with_suffix(".old"));
    let _ = std::fs::remove_file(&new_path);
    let key = match g2c_proto::sshkeys::load_or_generate(&new_path) {
        Ok(k) => k,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()),
    };
    let register = g2c_proto::registration::RegisterRequest {
        name: Some(format!("{} (rotated)", live.registration_id)),
        public_key: g2c_proto::sshkeys::public_openssh(key.public_key()),
        token: request.token,
    };
    let answer = match crate::register::register(
        &backchannel,
        None,
        &register,
        crate::register::PlainHttp::LoopbackOnly,
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            let _ = std::fs::remove_file(&new_path);
            tracing::warn!(error = %e, "key rotation: registration failed");
            return error(
                StatusCode::BAD_GATEWAY,
                "registration_failed",
                e.to_string(),
            );
        }
    };
    let swap =
        std::fs::rename(&key_path, &old_path).and_then(|()| std::fs::rename(&new_path, &key_path));
    if let Err(e) = swap {
        let _ = std::fs::rename(&old_path, &key_path);
        return error(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string());
    }
    let old_id = file_config.registration_id.clone();
    file_config.registration_id = answer.registration_id.clone();
    file_config.gateway = crate::config::GatewayEndpoint::from_registration(
        &answer,
        file_config.gateway.backchannel.take(),
    );
    match control.update_config(file_config).await {
        Ok(_) => {
            let _ = std::fs::remove_file(&old_path);
            tracing::info!(old = %old_id, new = %answer.registration_id, "agent key rotated");
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "old_registration_id": old_id,
                    "registration_id": answer.registration_id,
                    "tunnel_port": answer.tunnel_port,
                    "note": "revoke the old registration on the gateway",
                }),
            )
        }
        Err(e) => {
            let _ = std::fs::rename(&key_path, &new_path);
            let _ = std::fs::rename(&old_path, &key_path);
            config_error(e)
        }
    }
}
