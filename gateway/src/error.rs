//! The gateway's errors: why it could not start ([`GatewayError`]), and why a request on any
//! of its listeners was refused ([`RequestError`], tagged by who failed), with the one place
//! those become HTTP responses (status, `G2C-Error` header, JSON body) for the front door, the
//! backchannel and the admin API alike.

use bytes::Bytes;
use g2c_proto::error_code as code;
use g2c_proto::registration::{ErrorBody, ErrorEnvelope};
use http::{HeaderValue, Response, StatusCode};

use g2c_proto::handshake::OpenError;
use g2c_proto::AckCode;

use crate::body::{full, ProxyBody};

/// Who is at fault, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The cloud caller sent something wrong.
    Caller,
    /// The agent or the tunnel failed.
    Agent,
    /// The application behind the agent failed.
    LocalApp,
    /// The gateway itself.
    Gateway,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The host key could not be loaded or created.
    #[error(transparent)]
    HostKey(#[from] g2c_proto::sshkeys::KeyFileError),
    /// A TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The audit log file could not be opened.
    #[error("cannot open the audit log: {0}")]
    Audit(std::io::Error),
    /// The admin token file could not be read or created.
    #[error(transparent)]
    AdminToken(#[from] crate::api::admin_gate::AdminTokenError),
    /// The configuration does not match the listeners given.
    #[error("{0}")]
    Listeners(&'static str),
    /// The worker runtimes could not be started.
    #[error("cannot start the worker runtimes: {0}")]
    Workers(std::io::Error),
}

/// A request that a gateway listener refused or could not carry through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// No or unknown API key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The key is for another registration.
    #[error("this API key may not call registration {0}")]
    Forbidden(String),
    /// The key is scoped to another service of the registration.
    #[error("this API key may call only the service {allowed:?} of registration {registration}")]
    ForbiddenService {
        /// Registration.
        registration: String,
        /// The one service the key may call.
        allowed: String,
    },
    /// The registration has no HTTP service by that name.
    #[error("registration {registration} has no HTTP service {service:?}")]
    UnknownService {
        /// Registration.
        registration: String,
        /// The name the caller asked for.
        service: String,
    },
    /// No live registration by that id.
    #[error("unknown registration {0}")]
    UnknownRegistration(String),
    /// Malformed request or no registration named.
    #[error("{0}")]
    BadRequest(String),
    /// The registration's agent is not connected.
    #[error("the agent for registration {0} is not connected")]
    AgentOffline(String),
    /// The agent could not reach its local service. Callers learn the service's name only:
    /// the detail (the app's internal address, the OS error) is logged, never sent.
    #[error("the local service {service:?} of registration {registration} is unavailable")]
    LocalServiceUnavailable {
        /// Registration.
        registration: String,
        /// The service's name as the agent announced it.
        service: String,
        /// What went wrong, for the gateway's log.
        detail: String,
    },
    /// The agent did not trust the local HTTPS origin's certificate. Callers learn the
    /// service's name; the detail (the verifier's reason) is logged.
    #[error(
        "the local service {service:?} of registration {registration} failed TLS verification"
    )]
    LocalTlsError {
        /// Registration.
        registration: String,
        /// The service's name.
        service: String,
        /// What the verifier said, for the gateway's log.
        detail: String,
    },
    /// The agent's health check reports the service down (only when the operator asked
    /// for such requests to be refused).
    #[error("the local service {service:?} of registration {registration} is unhealthy")]
    LocalServiceUnhealthy {
        /// Registration.
        registration: String,
        /// The service's name.
        service: String,
    },
    /// The local app did not answer in time.
    #[error("the local service of registration {0} did not answer in time")]
    UpstreamTimeout(String),
    /// The request body is over `limits.max_body_bytes`.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(u64),
    /// Capacity reached.
    #[error("overloaded, retry later")]
    Overloaded(Option<String>),
    /// The registration or the API key is over its request rate.
    #[error("too many requests for registration {registration}; retry in {retry_after_secs} s")]
    RateLimited {
        /// Registration.
        registration: String,
        /// Whole seconds until a request would be admitted.
        retry_after_secs: u64,
    },
    /// The admin API needs its bearer token for this endpoint.
    #[error("this admin endpoint needs the admin token (Authorization: Bearer ...)")]
    AdminTokenRequired,
    /// The admin listener does not answer to that Host name (DNS rebinding).
    #[error("this listener does not answer to that Host; add it to admin.allowed_hosts")]
    RefusedHost,
    /// A browser sent this on another site's behalf.
    #[error("cross-site requests are refused")]
    CrossSite,
    /// No such endpoint on an API listener.
    #[error("no such endpoint")]
    NoSuchEndpoint,
    /// The endpoint does not take this method; the value lists those it does.
    #[error("this endpoint takes {0} only")]
    MethodNotAllowed(&'static str),
    /// The admin API names an object (token, key, registration) that does not exist.
    #[error("no such {0}")]
    NoSuch(&'static str),
    /// The enrollment token was refused (unknown, used up, expired or revoked).
    #[error("enrollment {0}")]
    EnrollmentRefused(&'static str),
    /// The gateway's database is unreachable: writes wait for it (what is cached still works).
    #[error("the gateway's database is unreachable; retry later")]
    StoreUnavailable(String),
    /// A bug or resource failure in the gateway.
    #[error("internal gateway error")]
    Internal(String),
}

impl RequestError {
    /// Who failed when a data stream to `service` of `registration` could not be opened.
    pub fn from_open(err: OpenError, registration: &str, service: &str) -> Self {
        let reg = registration.to_owned();
        match err {
            OpenError::TooManyStreams => Self::Overloaded(Some(reg)),
            OpenError::TunnelClosed => Self::AgentOffline(reg),
            OpenError::Timeout => Self::UpstreamTimeout(reg),
            OpenError::Refused {
                code: AckCode::UnknownService,
                ..
            } => Self::UnknownService {
                registration: reg,
                service: service.to_owned(),
            },
            OpenError::Refused {
                code: AckCode::LocalTls,
                message,
            } => Self::LocalTlsError {
                registration: reg,
                service: service.to_owned(),
                detail: message,
            },
            OpenError::Refused { message, .. } => Self::LocalServiceUnavailable {
                registration: reg,
                service: service.to_owned(),
                detail: message,
            },
        }
    }
}

impl From<crate::store::StoreError> for RequestError {
    /// What an API caller is told when the store refuses or fails (the admin API, the
    /// backchannel): the caller's mistakes as 4xx, the store's own failure as a logged 500.
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound(what) => Self::NoSuch(what),
            StoreError::TokenRejected(why) => Self::EnrollmentRefused(why),
            StoreError::Invalid(why) => Self::BadRequest(why),
            StoreError::PortQuota(_) => Self::BadRequest(e.to_string()),
            StoreError::PortsExhausted => Self::Overloaded(None),
            StoreError::Unavailable(_) => Self::StoreUnavailable(e.to_string()),
            StoreError::Db(_) => Self::Internal(e.to_string()),
        }
    }
}

impl RequestError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => code::UNAUTHORIZED,
            Self::Forbidden(_) => code::FORBIDDEN,
            Self::UnknownRegistration(_) => code::UNKNOWN_REGISTRATION,
            Self::BadRequest(_) => code::BAD_REQUEST,
            Self::PayloadTooLarge(_) => code::PAYLOAD_TOO_LARGE,
            Self::AgentOffline(_) => code::AGENT_OFFLINE,
            Self::LocalServiceUnavailable { .. } => code::LOCAL_SERVICE_UNAVAILABLE,
            Self::ForbiddenService { .. } => code::FORBIDDEN,
            Self::UnknownService { .. } => code::UNKNOWN_SERVICE,
            Self::LocalTlsError { .. } => code::LOCAL_TLS_ERROR,
            Self::LocalServiceUnhealthy { .. } => code::LOCAL_SERVICE_UNHEALTHY,
            Self::UpstreamTimeout(_) => code::UPSTREAM_TIMEOUT,
            Self::Overloaded(_) => code::OVERLOADED,
            Self::RateLimited { .. } => code::RATE_LIMITED,
            Self::NoSuchEndpoint | Self::NoSuch(_) => code::NOT_FOUND,
            Self::MethodNotAllowed(_) => code::METHOD_NOT_ALLOWED,
            Self::AdminTokenRequired => code::UNAUTHORIZED,
            Self::RefusedHost | Self::CrossSite => code::FORBIDDEN,
            Self::EnrollmentRefused(_) => code::UNAUTHORIZED,
            Self::StoreUnavailable(_) => code::OVERLOADED,
            Self::Internal(_) => code::INTERNAL,
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::EnrollmentRefused(_) | Self::AdminTokenRequired => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden(_)
            | Self::ForbiddenService { .. }
            | Self::RefusedHost
            | Self::CrossSite => StatusCode::FORBIDDEN,
            Self::UnknownRegistration(_)
            | Self::UnknownService { .. }
            | Self::NoSuchEndpoint
            | Self::NoSuch(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::AgentOffline(_)
            | Self::LocalServiceUnavailable { .. }
            | Self::LocalTlsError { .. } => StatusCode::BAD_GATEWAY,
            Self::LocalServiceUnhealthy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Overloaded(_) | Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who failed.
    pub fn party(&self) -> Party {
        match self {
            Self::Unauthorized
            | Self::Forbidden(_)
            | Self::ForbiddenService { .. }
            | Self::UnknownService { .. }
            | Self::UnknownRegistration(_)
            | Self::BadRequest(_)
            | Self::PayloadTooLarge(_)
            | Self::NoSuchEndpoint
            | Self::MethodNotAllowed(_)
            | Self::NoSuch(_)
            | Self::AdminTokenRequired
            | Self::RefusedHost
            | Self::CrossSite
            | Self::EnrollmentRefused(_)
            | Self::RateLimited { .. } => Party::Caller,
            Self::AgentOffline(_) => Party::Agent,
            Self::LocalServiceUnavailable { .. }
            | Self::LocalTlsError { .. }
            | Self::LocalServiceUnhealthy { .. }
            | Self::UpstreamTimeout(_) => Party::LocalApp,
            Self::Overloaded(_) | Self::StoreUnavailable(_) | Self::Internal(_) => Party::Gateway,
        }
    }

    /// The registration the error names, if any.
    pub fn registration(&self) -> Option<&str> {
        match self {
            Self::Forbidden(r)
            | Self::UnknownRegistration(r)
            | Self::AgentOffline(r)
            | Self::UpstreamTimeout(r)
            | Self::LocalServiceUnavailable {
                registration: r, ..
            }
            | Self::ForbiddenService {
                registration: r, ..
            }
            | Self::UnknownService {
                registration: r, ..
            }
            | Self::LocalTlsError {
                registration: r, ..
            }
            | Self::LocalServiceUnhealthy {
                registration: r, ..
            }
            | Self::RateLimited {
                registration: r, ..
            } => Some(r),
            Self::Overloaded(r) => r.as_deref(),
            _ => None,
        }
    }

    /// The response the caller gets. Internal details are logged, not sent.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let message = match self {
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal gateway error".to_owned()
            }
            Self::StoreUnavailable(detail) => {
                tracing::warn!(%detail, "store unreachable");
                self.to_string()
            }
            Self::LocalServiceUnavailable {
                registration,
                service,
                detail,
            } => {
                tracing::info!(registration, service, %detail, "local service unavailable");
                self.to_string()
            }
            Self::LocalTlsError {
                registration,
                service,
                detail,
            } => {
                tracing::warn!(registration, service, %detail, "local origin failed TLS verification");
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut resp = error_response(self.status(), self.code(), message, self.registration());
        if matches!(self, Self::BadRequest(_) | Self::PayloadTooLarge(_)) {
            // The rest of the connection cannot be trusted to be framed as the caller meant:
            // answer and close, so nothing behind this request is read as another one.
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::MethodNotAllowed(allow) = self {
            resp.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Self::RateLimited {
            retry_after_secs, ..
        } = self
        {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(*retry_after_secs),
            );
        }
        resp
    }
}

/// Build the JSON error envelope response. Used by every API of the gateway so all errors look
/// the same.
pub fn error_response(
    status: StatusCode,
    code: &'static str,
    message: String,
    registration: Option<&str>,
) -> Response<ProxyBody> {
    let body = ErrorEnvelope {
        error: ErrorBody {
            code: code.to_owned(),
            message,
            registration: registration.map(str::to_owned),
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(full(Bytes::from(bytes)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(code::ERROR_HEADER, HeaderValue::from_static(code));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the agent's inspector shows for a refused stream is what the caller got.
    #[test]
    fn every_refusal_answers_what_the_protocol_says_it_does() {
        for code in [
            AckCode::UnknownService,
            AckCode::ConnectFailed,
            AckCode::ConnectTimeout,
            AckCode::UnsupportedVersion,
            AckCode::Overloaded,
            AckCode::LocalTls,
        ] {
            let refused = OpenError::Refused {
                code,
                message: "m".into(),
            };
            let e = RequestError::from_open(refused, "reg", "web");
            assert_eq!(
                (e.code(), e.status().as_u16()),
                code.caller_error(),
                "{code:?}"
            );
        }
    }
}
