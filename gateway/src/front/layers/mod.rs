//! The front door's layers, outermost first as [`super::stack`] puts them together:
//!
//! | layer | what it does | refuses with |
//! |---|---|---|
//! | [`record`] | request id, metrics, audit line; maps every error to its response | — |
//! | [`framing`] | ambiguous framing (smuggling) seen on the connection or in the head | 400 |
//! | [`body_limit`] | a declared body over `limits.max_body_bytes` | 413 |
//! | [`route`] | which registration: host label, header or `/r/<id>/` | 400 |
//! | [`api_key`] | the caller's key, the registration's existence, the key's scope | 401, 404, 403 |
//! | [`rate_limit`] | per-registration and per-key token buckets | 429 |
//! | [`session`] | the live tunnel (looked up once), the in-flight cap | 502, 503 |
//! | [`timeout`] | the app's answer within `limits.upstream_timeout_secs` | 504 |
//!
//! Every layer is a `tower::Layer`; what one learns travels to the next as a typed request
//! extension ([`route::Target`], [`session::Tunnel`], [`super::record::Facts`]). The layers
//! that only decide are [`Check`]s: a synchronous look at the request that passes it on or
//! refuses it, without boxing a future.

pub mod api_key;
pub mod body_limit;
pub mod framing;
pub mod rate_limit;
pub mod record;
pub mod route;
pub mod session;
pub mod timeout;

use std::task::{Context, Poll};

use futures::future::{ready, Either, Ready};
use http::Request;
use tower::{Layer, Service};

use crate::error::RequestError;

/// A synchronous decision about a request: pass it on (perhaps with extensions added) or
/// refuse it.
pub trait Check: Clone {
    /// Look at (and perhaps extend) the request.
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), RequestError>;
}

/// The layer of a [`Check`].
#[derive(Clone)]
pub struct CheckLayer<C>(pub C);

impl<C: Clone, S> Layer<S> for CheckLayer<C> {
    type Service = Checked<C, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Checked {
            check: self.0.clone(),
            inner,
        }
    }
}

/// A service behind a [`Check`].
#[derive(Clone)]
pub struct Checked<C, S> {
    check: C,
    inner: S,
}

impl<C, S, B> Service<Request<B>> for Checked<C, S>
where
    C: Check,
    S: Service<Request<B>, Error = RequestError>,
{
    type Response = S::Response;
    type Error = RequestError;
    type Future = Either<Ready<Result<S::Response, RequestError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.check.check(&mut req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the layers' unit tests share: a gateway core on a temporary SQLite store with one
    //! registration and key, requests without sockets, and an inner service that records
    //! what reached it.

    use std::sync::{Arc, Mutex};

    use http::{Request, Response};
    use tower::{Service, ServiceExt};

    use crate::body::{empty, ProxyBody};
    use crate::config::GatewayConfig;
    use crate::core::Core;
    use crate::error::RequestError;

    /// A core with one registration (`reg`) and its key (`key`).
    pub struct Fixture {
        pub core: Arc<Core>,
        pub reg: String,
        pub key: String,
        _dir: tempfile::TempDir,
    }

    pub async fn fixture(configure: impl FnOnce(&mut GatewayConfig)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut config = GatewayConfig::default();
        config.store.path = dir.path().join("gateway.db");
        config.ssh.host_key = dir.path().join("host_key");
        config.base_domain = "g2c.test".into();
        configure(&mut config);
        let core = Core::open(config).await.unwrap();
        let token = core.store.create_token(Some(1), None).await.unwrap().secret;
        let ports = crate::store::PortRange {
            start: 40000,
            end: 40010,
            per_registration: 4,
        };
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoO77y3o9L9fItc8Lm9cP9mP6pRSA0kwuMdoO6DNAFg t";
        let reg = core
            .store
            .register(&token, None, key, ports)
            .await
            .unwrap()
            .id;
        let key = core.store.create_key(&reg).await.unwrap().secret;
        core.auth.refresh().await.unwrap();
        Fixture {
            core,
            reg,
            key,
            _dir: dir,
        }
    }

    /// A request with these headers.
    pub fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    /// The requests that reached the inner service.
    pub type Seen = Arc<Mutex<Vec<Request<()>>>>;

    /// What a layer under test answers.
    pub type Answer = Result<Response<ProxyBody>, RequestError>;

    /// An inner service answering 200 and keeping what it got.
    pub fn inner() -> (
        impl Service<
                Request<()>,
                Response = Response<ProxyBody>,
                Error = RequestError,
                Future = impl std::future::Future<Output = Answer> + Send,
            > + Clone,
        Seen,
    ) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let svc = tower::service_fn(move |req: Request<()>| {
            s.lock().unwrap().push(req);
            async { Ok::<_, RequestError>(Response::new(empty())) }
        });
        (svc, seen)
    }

    /// Run one request through `svc`.
    pub async fn call<S>(svc: S, req: Request<()>) -> Result<Response<ProxyBody>, RequestError>
    where
        S: Service<Request<()>, Response = Response<ProxyBody>, Error = RequestError>,
    {
        svc.oneshot(req).await
    }
}
