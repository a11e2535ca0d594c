//! Find the registration's live tunnel (the one look-up of the request) and admit the request
//! under the registration's in-flight cap; the session rides on as a [`Tunnel`] extension and
//! the request is counted in flight until its response body is done. In a cluster, a
//! registration whose tunnel only another node holds goes on as [`Tunnel::Remote`]: that
//! node counts it in flight on its session.

use std::sync::Arc;

use http::Request;

use super::route::Target;
use super::Check;
use crate::core::registry::AgentSession;
use crate::core::remote::Remote;
use crate::core::Core;
use crate::error::RequestError;
use crate::front::record::Facts;

/// The tunnel a request goes through.
#[derive(Clone)]
pub enum Tunnel {
    /// This node's session.
    Local(Arc<AgentSession>),
    /// Another node's, over the peer link.
    Remote(Arc<dyn Remote>),
}

/// The session look-up and in-flight cap (`limits.registration_max_inflight`, 0 = none).
#[derive(Clone)]
pub struct SessionCheck {
    /// Where sessions are registered.
    pub core: Arc<Core>,
    /// Most requests in flight per registration.
    pub max_inflight: usize,
    /// Refuse requests to a service the agent reports unhealthy.
    pub refuse_unhealthy: bool,
    /// Other nodes' tunnels, in a cluster.
    pub remote: Option<Arc<dyn Remote>>,
}

impl Check for SessionCheck {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), RequestError> {
        let Some(target) = req.extensions().get::<Target>() else {
            return Err(RequestError::Internal("session layer before route".into()));
        };
        let reg = &target.registration;
        let Some(session) = self.core.registry.get(reg) else {
            return match &self.remote {
                Some(remote) if remote.holds(reg) => {
                    req.extensions_mut().insert(Tunnel::Remote(remote.clone()));
                    Ok(())
                }
                _ => Err(RequestError::AgentOffline(reg.clone())),
            };
        };
        let service = resolve_service(&session, target)?;
        if self.refuse_unhealthy && session.reported_unhealthy(&service) {
            return Err(RequestError::LocalServiceUnhealthy {
                registration: reg.clone(),
                service,
            });
        }
        if self.max_inflight > 0 && session.inflight() >= self.max_inflight {
            return Err(RequestError::Overloaded(Some(reg.clone())));
        }
        if let Some(facts) = req.extensions().get::<Arc<Facts>>() {
            facts.set_service(&service);
            facts.hold_inflight(session.begin_request());
        }
        if let Some(t) = req.extensions_mut().get_mut::<Target>() {
            t.service = Some(service);
        }
        req.extensions_mut().insert(Tunnel::Local(session));
        Ok(())
    }
}

/// The announced name of the HTTP service the request goes to (the one it named, else the
/// agent's default), or why there is none.
fn resolve_service(session: &AgentSession, target: &Target) -> Result<String, RequestError> {
    let asked = target.service.as_deref();
    match session.http_service_named(asked) {
        Some(name) => Ok(name.to_owned()),
        None => Err(match asked {
            Some(s) => RequestError::UnknownService {
                registration: target.registration.clone(),
                service: s.to_owned(),
            },
            None => RequestError::LocalServiceUnavailable {
                registration: target.registration.clone(),
                service: "http".into(),
                detail: "the agent offers no HTTP service".into(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::layers::testing::{fixture, request};

    #[tokio::test]
    async fn no_tunnel_is_agent_offline() {
        let f = fixture(|_| {}).await;
        let check = SessionCheck {
            core: f.core.clone(),
            max_inflight: 1,
            refuse_unhealthy: false,
            remote: None,
        };
        let mut req = request("/", &[]);
        req.extensions_mut().insert(Target {
            registration: f.reg.clone(),
            service: None,
            rewritten: None,
        });
        let err = check.check(&mut req).unwrap_err();
        assert_eq!(err.code(), "agent_offline");
        assert!(req.extensions().get::<Tunnel>().is_none());
    }
}
