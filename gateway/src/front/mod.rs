//! The front door wing: the caller-facing HTTP path. It owns its state (the per-session
//! upstream connection pools and the rate limiters) and builds its tower stack in one
//! function, [`stack`]: the layers in [`layers`], then the [`proxy`] service.

pub mod body;
pub mod framing;
pub mod headers;
pub mod layers;
mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod record;
pub mod revoke;
pub mod route;
pub mod steer;

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::core::registry::SessionEvent;
use crate::core::remote::Remote;
use crate::core::Core;
pub use crate::http_serve::ConnInfo;
use crate::http_serve::ConnService;
use crate::shutdown::Phase;
use layers::api_key::ApiKeyLayer;
use layers::body_limit::BodyLimit;
use layers::framing::FramingCheck;
use layers::rate_limit::RateLimit;
use layers::record::RecordLayer;
use layers::route::RouteCheck;
use layers::session::SessionCheck;
use layers::timeout::TimeoutLayer;
use layers::CheckLayer;
use ratelimit::RateLimiter;

/// The front door's own state.
pub struct Front {
    core: Arc<Core>,
    remote: Option<Arc<dyn Remote>>,
    pools: pool::Pools,
    rate: RateLimit,
    base_domain: Arc<str>,
}

impl Front {
    /// The front door of `core` (and of the tunnels other nodes hold, through `remote`);
    /// follows the registry to drop the pools of ended sessions.
    pub fn new(core: Arc<Core>, remote: Option<Arc<dyn Remote>>) -> Arc<Self> {
        let limits = &core.config.limits;
        let front = Arc::new(Self {
            pools: pool::Pools::new(limits.upstream_pool_idle_per_agent),
            rate: RateLimit {
                per_registration: Arc::new(RateLimiter::new(
                    f64::from(limits.registration_rate_per_sec),
                    limits.registration_burst,
                )),
                per_key: Arc::new(RateLimiter::new(
                    f64::from(limits.key_rate_per_sec),
                    limits.key_burst,
                )),
            },
            base_domain: core.config.base_domain.as_str().into(),
            core: core.clone(),
            remote,
        });
        let events = core.registry.subscribe();
        let weak = Arc::downgrade(&front);
        core.spawn(
            tracing::info_span!("front_pools"),
            forget_ended(weak, events, core.clone()),
        );
        front
    }
}

/// Drop the pool of every session that went away.
async fn forget_ended(
    front: std::sync::Weak<Front>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<SessionEvent>,
    core: Arc<Core>,
) {
    let stop = core.shutdown.reached(Phase::Aborting);
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = &mut stop => return,
        };
        let (Some(event), Some(front)) = (event, front.upgrade()) else {
            return;
        };
        if let SessionEvent::Down {
            registration,
            session,
        } = event
        {
            front.pools.forget(&registration, session);
        }
    }
}

/// The front door's tower stack for one caller connection, outermost layer first.
pub fn stack(front: &Arc<Front>, conn: ConnInfo) -> impl ConnService {
    let core = &front.core;
    let limits = &core.config.limits;
    ServiceBuilder::new()
        .layer(RecordLayer {
            core: core.clone(),
            conn,
        })
        .layer(CheckLayer(FramingCheck))
        .layer(CheckLayer(BodyLimit {
            max: limits.max_body_bytes,
        }))
        .layer(CheckLayer(RouteCheck {
            base_domain: front.base_domain.clone(),
        }))
        .layer(ApiKeyLayer { core: core.clone() })
        .layer(CheckLayer(front.rate.clone()))
        .layer(CheckLayer(SessionCheck {
            core: core.clone(),
            max_inflight: limits.registration_max_inflight,
            refuse_unhealthy: limits.refuse_unhealthy_services,
            remote: front.remote.clone(),
        }))
        .layer(TimeoutLayer {
            limit: limits.upstream_timeout(),
        })
        .service(proxy::Proxy::new(front.clone(), conn))
}
