//! Ground2Cloud gateway: the public end of every tunnel.
//!
//! A small [`core`] (config, store, credential cache, session registry, metrics, audit) and
//! wings that own their state: `tunnel` (SSH server and sessions), `front` (the caller's HTTP
//! path, a tower stack), `public_tcp` (TCP service ports) and `api` (admin, backchannel). The
//! composition root, [`Gateway`], builds them on already-bound listeners (tests bind
//! `127.0.0.1:0`) and runs the phased shutdown. `ARCHITECTURE.md` shows one request's path.
#![forbid(unsafe_code)]

mod accept;
mod api;
mod body;
mod cluster;
pub mod config;
mod conn_guard;
mod core;
mod error;
mod front;
mod gateway;
pub mod hostkey;
mod http_serve;
mod listeners;
mod public_tcp;
mod shutdown;
pub mod store;
mod tls;
mod tunnel;
mod workers;

pub use error::GatewayError;
pub use gateway::{run, Gateway};
pub use listeners::{BoundAddrs, Listeners};

/// Entry points for the fuzz targets: the real front-door stack and backchannel handler over
/// in-memory connections, on a real store. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use http::{Request, Response};
    use hyper::body::Incoming;

    use crate::api::admin::{self, Admin};
    use crate::api::admin_gate::AdminGate;
    use crate::api::backchannel::{self, Backchannel};
    pub use crate::body::ProxyBody;
    use crate::config::GatewayConfig;
    use crate::core::Core;
    use crate::front::{ConnInfo, Front};
    use crate::store::Store;
    use crate::GatewayError;

    /// The gateway's state without listeners.
    pub struct Handlers {
        core: Arc<Core>,
        front: Arc<Front>,
        backchannel: Arc<Backchannel>,
        admin: Arc<Admin>,
    }

    /// The admin token the fuzzing harness's admin handler accepts.
    pub const ADMIN_TOKEN: &str = "g2ca_fuzz";

    /// Parse an allowlist entry; a parsed one must print as something that parses back to
    /// itself, and match (or not) any address without a panic. `None`: not a CIDR.
    pub fn cidr_round_trip(text: &str, probe: std::net::IpAddr) -> Option<bool> {
        let c: crate::core::cidr::Cidr = text.parse().ok()?;
        let again: crate::core::cidr::Cidr = c.to_string().parse().expect("Display parses back");
        assert_eq!(again, c, "{text:?} printed as {c}");
        Some(c.contains(probe))
    }

    impl Handlers {
        /// Open the store of `config` and build the front door and backchannel on it.
        pub async fn build(config: GatewayConfig) -> Result<Self, GatewayError> {
            let core = Core::open(config).await?;
            let backchannel = Arc::new(Backchannel {
                core: core.clone(),
                host_key_public: String::new(),
                ssh_public_port: 2222,
            });
            let admin = Arc::new(Admin {
                core: core.clone(),
                tcp: crate::public_tcp::PublicTcp::start(core.clone(), None),
                gate: AdminGate::new(ADMIN_TOKEN, Vec::new(), true),
            });
            Ok(Self {
                front: Front::new(core.clone(), None),
                core,
                backchannel,
                admin,
            })
        }

        /// The store.
        pub fn store(&self) -> &Arc<dyn Store> {
            &self.core.store
        }

        /// Reload credentials from the store.
        pub async fn refresh(&self) {
            let _ = self.core.auth.refresh().await;
        }

        /// The limits in force.
        pub fn config(&self) -> &GatewayConfig {
            &self.core.config
        }

        /// One front-door request from `peer`, through the real stack.
        pub async fn front_door(
            &self,
            req: Request<Incoming>,
            peer: SocketAddr,
        ) -> Response<ProxyBody> {
            use tower::ServiceExt;
            let stack = crate::front::stack(
                &self.front,
                ConnInfo {
                    peer,
                    tls: false,
                    trusted_proxy: false,
                },
            );
            match stack.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }

        /// One admin request, through the admin gate.
        pub async fn admin(&self, req: Request<Incoming>) -> Response<ProxyBody> {
            admin::handle(self.admin.clone(), req).await
        }

        /// One backchannel request.
        pub async fn backchannel(&self, req: Request<Incoming>) -> Response<ProxyBody> {
            backchannel::handle(self.backchannel.clone(), req).await
        }
    }
}
