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
pub mod config;
mod conn_guard;
mod core;
mod error;
mod front;
mod gateway;
mod hostkey;
mod http_serve;
mod listeners;
mod public_tcp;
mod shutdown;
pub mod store;
mod tls;
mod tunnel;

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
            Ok(Self {
                front: Front::new(core.clone()),
                core,
                backchannel,
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

        /// One backchannel request.
        pub async fn backchannel(&self, req: Request<Incoming>) -> Response<ProxyBody> {
            backchannel::handle(self.backchannel.clone(), req).await
        }
    }
}
