//! Caller-facing error codes, shared so that clients (and tests) match on the same strings the
//! gateway sends in the `G2C-Error` header and the JSON body.

/// No or unknown API key.
pub const UNAUTHORIZED: &str = "unauthorized";
/// The API key belongs to another registration.
pub const FORBIDDEN: &str = "forbidden";
/// No such registration (or revoked).
pub const UNKNOWN_REGISTRATION: &str = "unknown_registration";
/// The registration's agent has no live tunnel.
pub const AGENT_OFFLINE: &str = "agent_offline";
/// The agent is up but the local application refused or is unreachable.
pub const LOCAL_SERVICE_UNAVAILABLE: &str = "local_service_unavailable";
/// The registration has no HTTP service by the name the request gave.
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// The agent reached the local HTTPS origin but did not trust its certificate (wrong CA or
/// wrong name): never downgraded to plain HTTP.
pub const LOCAL_TLS_ERROR: &str = "local_tls_error";
/// The agent's health check says the local service is down, and the operator asked callers
/// to be told so rather than sent to it.
pub const LOCAL_SERVICE_UNHEALTHY: &str = "local_service_unhealthy";
/// The local application did not answer in time.
pub const UPSTREAM_TIMEOUT: &str = "upstream_timeout";
/// The gateway or the tunnel is at capacity.
pub const OVERLOADED: &str = "overloaded";
/// The registration or API key is over its request rate; retry after `Retry-After` seconds.
pub const RATE_LIMITED: &str = "rate_limited";
/// The request body is larger than the gateway accepts.
pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
/// The request is malformed or names no registration.
pub const BAD_REQUEST: &str = "bad_request";
/// No such endpoint on an API listener.
pub const NOT_FOUND: &str = "not_found";
/// The endpoint exists but not for that method (the `Allow` header lists the methods).
pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
/// Something failed inside the gateway itself.
pub const INTERNAL: &str = "internal";

/// Header carrying the error code on every error response.
pub const ERROR_HEADER: &str = "g2c-error";
