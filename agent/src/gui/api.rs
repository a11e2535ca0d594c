//! The `/v1/*` JSON API behind the GUI (and `g2c-agent status`): the auth and CSRF gate, then
//! one route table. Read-only calls are GETs; everything that changes state is a POST or PUT
//! and needs a same-origin request with the session's CSRF token (or the bearer secret).

use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{error, json, ops, requests, Gate, Resp};
use crate::supervisor::Supervisor;

/// Largest request body the API reads.
const MAX_BODY: usize = 256 * 1024;

/// How the caller proved who it is.
enum Caller {
    /// A browser session: state changes need its CSRF token.
    Session { token: String, csrf: String },
    /// The secret as a bearer token (a tool, not a browser).
    Bearer,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn authenticate(gate: &Gate, headers: &HeaderMap) -> Option<Caller> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return gate.auth.is_secret(bearer.trim()).then_some(Caller::Bearer);
    }
    let token = cookie(headers, &gate.cookie_name())?;
    let csrf = gate.auth.session(&token)?;
    Some(Caller::Session { token, csrf })
}

/// A browser request from another site: refused for anything that changes state.
fn cross_site(headers: &HeaderMap, host: &str) -> bool {
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|o| o == format!("http://{host}") || o == format!("https://{host}"));
    let fetch_site_ok = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|s| s == "same-origin" || s == "none");
    !(origin_ok && fetch_site_ok)
}

async fn body_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Resp> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large"))?
        .to_bytes();
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        if let Some(field) = path.strip_prefix("config.") {
            super::field_error(field, message)
        } else {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{path}: {message}"),
            )
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    secret: String,
}

/// Route one API request.
pub async fn handle(control: &Supervisor, gate: Gate, host: &str, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let changes_state = method != Method::GET && method != Method::HEAD;
    if changes_state && cross_site(req.headers(), host) {
        tracing::warn!(%path, "cross-site request refused");
        return error(
            StatusCode::FORBIDDEN,
            "cross_site",
            "cross-site request refused",
        );
    }
    if (method.clone(), path.as_str()) == (Method::POST, "/v1/login") {
        return login(&gate, req).await;
    }
    let Some(caller) = authenticate(&gate, req.headers()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in with the agent's GUI secret (g2c-agent gui --show-secret)",
        );
    };
    if let (true, Caller::Session { csrf, .. }) = (changes_state, &caller) {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        if sent != Some(csrf.as_str()) {
            tracing::warn!(%path, "request without a valid CSRF token refused");
            return error(StatusCode::FORBIDDEN, "csrf", "missing or wrong CSRF token");
        }
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    let query = query.as_str();
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["session"]) => match &caller {
            Caller::Session { csrf, .. } => {
                json(StatusCode::OK, &serde_json::json!({"csrf": csrf}))
            }
            Caller::Bearer => json(StatusCode::OK, &serde_json::json!({"csrf": null})),
        },
        (&Method::POST, ["logout"]) => {
            if let Caller::Session { token, .. } = &caller {
                gate.auth.logout(token);
            }
            let mut r = json(StatusCode::OK, &serde_json::json!({"ok": true}));
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict",
                gate.cookie_name()
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        (&Method::GET, ["status"]) => json(StatusCode::OK, &control.status().snapshot()),
        (&Method::GET, ["logs", "files"]) => super::logs::files(control),
        (&Method::GET, ["logs"]) => super::logs::query(control, req.uri().query().unwrap_or("")),
        (&Method::GET, ["config"]) => ops::get_config(control),
        (&Method::PUT, ["config"]) => match body_json::<ops::ConfigUpdate>(req).await {
            Ok(update) => ops::put_config(control, update.config).await,
            Err(r) => r,
        },
        (&Method::POST, ["reconnect"]) => {
            tracing::info!("reconnect requested from the GUI");
            control.request_reconnect();
            json(StatusCode::ACCEPTED, &serde_json::json!({"ok": true}))
        }
        (&Method::POST, ["restart"]) => {
            tracing::info!("restart requested from the GUI");
            control.request_restart();
            json(StatusCode::ACCEPTED, &serde_json::json!({"ok": true}))
        }
        (&Method::POST, ["services", name, "test"]) => ops::test_service(control, name).await,
        (&Method::POST, ["rotate-key"]) => match body_json::<ops::RotateKey>(req).await {
            Ok(r) => ops::rotate_key(control, r).await,
            Err(r) => r,
        },
        (&Method::GET, ["diagnostics"]) => super::diagnostics::bundle(control, &gate.auth),
        (&Method::GET, ["requests"]) => requests::list(control, query),
        (&Method::GET, ["requests", "stream"]) => requests::stream(
            control,
            query,
            req.headers().get("last-event-id"),
            gate.shutdown.clone(),
        ),
        (&Method::GET, ["requests", seq]) => requests::detail(control, seq),
        (&Method::POST, ["requests", seq, "replay"]) => {
            let empty = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
            let ask = if empty {
                Ok(requests::ReplayAsk::default())
            } else {
                body_json::<requests::ReplayAsk>(req).await
            };
            match ask {
                Ok(ask) => requests::replay(control, seq, ask).await,
                Err(r) => r,
            }
        }
        (&Method::GET, ["metrics", "series"]) => requests::series(control, query),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

async fn login(gate: &Gate, req: Request<Incoming>) -> Resp {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_request",
            "send the secret as JSON",
        );
    }
    let login: Login = match body_json(req).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    match gate.auth.login(&login.secret) {
        Ok((token, csrf)) => {
            tracing::info!("GUI login");
            let mut r = json(StatusCode::OK, &serde_json::json!({"csrf": csrf}));
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{}={token}; Path=/; HttpOnly; SameSite=Strict",
                gate.cookie_name()
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "GUI login refused");
            let code = match e {
                super::auth::LoginError::WrongSecret => StatusCode::UNAUTHORIZED,
                super::auth::LoginError::Throttled => StatusCode::TOO_MANY_REQUESTS,
            };
            error(code, "unauthorized", e.to_string())
        }
    }
}
