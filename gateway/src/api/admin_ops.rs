//! The admin API's store operations, the same the CLI has (`token`, `key`, `registration
//! revoke|allow`): each changes or reads the store, then reloads the credential cache so a
//! change holds on this node at once (other nodes follow the store's version).

use std::time::Duration;

use g2c_proto::handshake::MAX_SERVICE_NAME;
use http::{Request, Response, StatusCode};
use serde::Deserialize;

use super::read_json;
use crate::body::{json, ProxyBody};
use crate::core::Core;
use crate::error::RequestError;

type Answer = Result<Response<ProxyBody>, RequestError>;

/// Largest request body an admin operation reads.
const MAX_BODY: usize = 16 * 1024;
/// Longest an enrollment token may live (ten years).
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// Registrations it may create; 0 or absent: unlimited.
    #[serde(default, deserialize_with = "whole::u32")]
    uses: u32,
    /// Seconds it stays valid; absent or null: no expiry.
    #[serde(default, deserialize_with = "whole::opt_u64")]
    ttl_secs: Option<u64>,
}

/// `POST /v1/registrations/{id}/keys` (the body may be empty).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    /// The one HTTP service the key may call; absent or null: every service.
    #[serde(default)]
    service: Option<String>,
}

/// JSON numbers as JSON Schema's `integer` means them: `3` and `3.0` alike.
mod whole {
    use serde::{de::Error, Deserialize, Deserializer};

    fn number<'de, D: Deserializer<'de>>(n: serde_json::Number) -> Result<u64, D::Error> {
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
                    .map(|f| f as u64)
            })
            .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number of 0 or more")))
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let n = number::<D>(serde_json::Number::deserialize(d)?)?;
        n.try_into()
            .map_err(|_| D::Error::custom(format!("{n} is over {}", u32::MAX)))
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(number::<D>)
            .transpose()
    }
}

/// `POST /v1/registrations`: a key registered by hand (a site with only OpenSSH).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRegistration {
    /// The site's OpenSSH public key (one line).
    public_key: String,
    /// A name for operators.
    #[serde(default)]
    name: Option<String>,
}

/// `PUT /v1/registrations/{id}/tcp/{service}/allow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Allow {
    /// Source networks (CIDR or single addresses); empty closes the port.
    allow: Vec<String>,
}

/// Reload the credential cache after a change (a failure is logged: the poll catches up).
async fn changed(core: &Core) {
    if let Err(e) = core.auth.refresh().await {
        tracing::warn!(error = %e, "auth cache refresh failed");
    }
}

fn revoked(what: &str, id: &str) -> Response<ProxyBody> {
    tracing::info!(what, id, "revoked through the admin API");
    json(StatusCode::OK, &serde_json::json!({ "revoked": id }))
}

/// `GET /v1/tokens`.
pub async fn list_tokens(core: &Core) -> Answer {
    Ok(json(StatusCode::OK, &core.store.list_tokens().await?))
}

/// `GET /v1/tokens/{id}`.
pub async fn token(core: &Core, id: &str) -> Answer {
    let tokens = core.store.list_tokens().await?;
    let t = tokens
        .iter()
        .find(|t| t.id == id)
        .ok_or(RequestError::NoSuch("token"))?;
    Ok(json(StatusCode::OK, t))
}

/// `POST /v1/tokens`: the secret is in this answer only.
pub async fn create_token<B>(core: &Core, req: Request<B>) -> Answer
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let asked: NewToken = read_json(req, MAX_BODY).await?;
    let ttl = match asked.ttl_secs {
        Some(s) if !(1..=MAX_TTL_SECS).contains(&s) => {
            return Err(RequestError::BadRequest(format!(
                "ttl_secs must be between 1 and {MAX_TTL_SECS}"
            )))
        }
        s => s.map(Duration::from_secs),
    };
    let uses = (asked.uses > 0).then_some(asked.uses);
    let created = core.store.create_token(uses, ttl).await?;
    tracing::info!(token = %created.info.id, "enrollment token created through the admin API");
    Ok(json(StatusCode::CREATED, &created))
}

/// `POST /v1/registrations`: register a site's key by hand; it holds its tunnel with stock
/// `ssh -N -R 0:HOST:PORT <id>@gateway`.
pub async fn create_registration<B>(core: &Core, req: Request<B>) -> Answer
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let asked: NewRegistration = read_json(req, MAX_BODY).await?;
    let reg = crate::store::register_by_hand(
        core.store.as_ref(),
        asked.name.as_deref(),
        &asked.public_key,
        core.config.limits.ports(),
    )
    .await?;
    tracing::info!(registration = %reg.id, name = ?reg.name, "registered by hand through the admin API");
    changed(core).await;
    Ok(json(StatusCode::CREATED, &reg))
}

/// `POST /v1/tokens/{id}/revoke` (idempotent; the token stays listed, revoked).
pub async fn revoke_token(core: &Core, id: &str) -> Answer {
    core.store.revoke_token(id).await?;
    Ok(revoked("token", id))
}

/// `GET /v1/keys` and `GET /v1/registrations/{id}/keys`.
pub async fn list_keys(core: &Core, registration: Option<&str>) -> Answer {
    if let Some(id) = registration {
        core.store.registration(id).await?;
    }
    Ok(json(
        StatusCode::OK,
        &core.store.list_keys(registration).await?,
    ))
}

/// `GET /v1/keys/{id}`.
pub async fn key(core: &Core, id: &str) -> Answer {
    let keys = core.store.list_keys(None).await?;
    let k = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or(RequestError::NoSuch("key"))?;
    Ok(json(StatusCode::OK, k))
}

/// `POST /v1/registrations/{id}/keys`: the secret is in this answer only.
pub async fn create_key<B>(core: &Core, registration: &str, req: Request<B>) -> Answer
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let asked: NewKey = read_json(req, MAX_BODY).await?;
    let created = core
        .store
        .create_scoped_key(registration, asked.service.as_deref())
        .await?;
    tracing::info!(key = %created.info.id, registration, service = ?created.info.service, "API key created through the admin API");
    changed(core).await;
    Ok(json(StatusCode::CREATED, &created))
}

/// `POST /v1/keys/{id}/revoke`: the key's open streams end with it.
pub async fn revoke_key(core: &Core, id: &str) -> Answer {
    core.store.revoke_key(id).await?;
    changed(core).await;
    Ok(revoked("key", id))
}

/// `POST /v1/registrations/{id}/revoke`: its keys go too, and its tunnel is closed.
pub async fn revoke_registration(core: &Core, id: &str) -> Answer {
    core.store.revoke_registration(id).await?;
    changed(core).await;
    core.registry.disconnect(id);
    Ok(revoked("registration", id))
}

/// `PUT /v1/registrations/{id}/tcp/{service}/allow`: opens (allocating its public port the
/// first time) or closes a TCP service.
pub async fn set_tcp_allow<B>(core: &Core, id: &str, service: &str, req: Request<B>) -> Answer
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if service.len() > MAX_SERVICE_NAME || service.chars().any(char::is_control) {
        return Err(RequestError::BadRequest(format!(
            "a service name has 1 to {MAX_SERVICE_NAME} printable characters"
        )));
    }
    let asked: Allow = read_json(req, MAX_BODY).await?;
    core.store.registration(id).await?;
    let ports = core.config.limits.ports();
    let t = core
        .store
        .set_tcp_allow(id, service, &asked.allow, ports)
        .await?;
    tracing::info!(registration = id, service, port = t.port, allow = ?t.allow, "TCP allowlist set through the admin API");
    changed(core).await;
    Ok(json(StatusCode::OK, &t))
}
