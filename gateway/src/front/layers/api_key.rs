//! Authenticate the caller: an API key (`Proxy-Authorization: Bearer` or `G2C-Key`) that is
//! live, for a registration that exists, and scoped to it. A key the cached snapshot does not
//! know makes the cache look at the store once (a key created a moment ago works at once);
//! only that path boxes a future.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{ready, BoxFuture, Either, Ready};
use http::Request;
use tower::{Layer, Service};

use super::route::Target;
use crate::core::auth::{AuthSnapshot, LiveKey};
use crate::core::Core;
use crate::error::RequestError;
use crate::front::record::Facts;
use crate::front::route::api_key;
use crate::store::{digest_secret, ApiKeyInfo};

/// The authentication layer.
#[derive(Clone)]
pub struct ApiKeyLayer {
    /// Where credentials are cached.
    pub core: Arc<Core>,
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKey {
            core: self.core.clone(),
            last: None,
            inner,
        }
    }
}

/// The authentication service.
#[derive(Clone)]
pub struct ApiKey<S> {
    core: Arc<Core>,
    /// The secret this connection presented last, with its digest: a keep-alive caller sends
    /// the same key with every request, and hashing it again was the largest single cost of
    /// authenticating one. Only the digest is looked up, so a revoked key is refused at once.
    /// (The serve loop calls the connection's stack in place, so this lasts the connection.)
    last: Option<(Box<str>, [u8; 32])>,
    inner: S,
}

type Decided<R> = Ready<Result<R, RequestError>>;

impl<S, B> Service<Request<B>> for ApiKey<S>
where
    S: Service<Request<B>, Error = RequestError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = RequestError;
    type Future = Either<
        Either<Decided<S::Response>, S::Future>,
        BoxFuture<'static, Result<S::Response, RequestError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let snapshot = self.core.auth.snapshot();
        let (key, missed) = match api_key(req.headers()) {
            None => (None, None),
            Some(secret) => match snapshot.key_by_digest(&self.digest(secret)) {
                Some(k) => (Some(k), None),
                None => (None, Some(secret.to_owned())),
            },
        };
        match missed {
            None => Either::Left(self.decide(req, &snapshot, key)),
            Some(secret) => {
                // Not in the snapshot: the store may have it since a moment ago.
                let mut this = self.clone();
                Either::Right(Box::pin(async move {
                    let found = this.core.auth.key(&secret).await;
                    let snapshot = found
                        .as_ref()
                        .map_or_else(|| this.core.auth.snapshot(), |(s, _)| s.clone());
                    this.decide(req, &snapshot, found.as_ref().map(|(_, k)| k))
                        .await
                }))
            }
        }
    }
}

impl<S> ApiKey<S> {
    /// The digest of `secret`, computed once per connection for as long as it keeps sending
    /// the same one. (Comparing with the caller's own last secret tells it nothing new.)
    fn digest(&mut self, secret: &str) -> [u8; 32] {
        match &self.last {
            Some((last, digest)) if **last == *secret => *digest,
            _ => {
                let digest = digest_secret(secret);
                self.last = Some((secret.into(), digest));
                digest
            }
        }
    }

    /// Admit or refuse the request with `key` (the live key it carries, if any).
    fn decide<B>(
        &mut self,
        mut req: Request<B>,
        snapshot: &AuthSnapshot,
        key: Option<&LiveKey>,
    ) -> Either<Decided<S::Response>, S::Future>
    where
        S: Service<Request<B>, Error = RequestError>,
    {
        match authorize(&mut req, snapshot, key.map(|k| &k.info)) {
            Ok(()) => {
                // The key's lease, found with the key (an `Arc` clone): what the request
                // opens ends when the key is revoked.
                if let Some(k) = key {
                    req.extensions_mut().insert(KeyLease(k.lease.clone()));
                }
                Either::Right(self.inner.call(req))
            }
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}

/// The admitted key's lease, for the proxy: cancelled when the key is revoked.
#[derive(Clone)]
pub struct KeyLease(pub tokio_util::sync::CancellationToken);

/// The decision itself: the key must be live, its registration must exist, and the key must
/// be scoped to the registration (and, for a service-scoped key, the service) the request
/// names. A service-scoped key that named no service goes to its own service. What is learnt
/// goes into the [`Facts`].
fn authorize<B>(
    req: &mut Request<B>,
    snapshot: &AuthSnapshot,
    key: Option<&ApiKeyInfo>,
) -> Result<(), RequestError> {
    let Some(target) = req.extensions().get::<Target>() else {
        return Err(RequestError::Internal("api_key layer before route".into()));
    };
    let reg = target.registration.as_str();
    let facts = req.extensions().get::<Arc<Facts>>();
    let exists = snapshot.registrations.contains_key(reg);
    let Some(key) = key else {
        // A refused caller is counted under the registration it named, if that one exists.
        if let (Some(f), true) = (facts, exists) {
            f.set_registration(reg);
        }
        return Err(RequestError::Unauthorized);
    };
    if let Some(f) = facts {
        f.set_key_id(&key.id);
    }
    if !exists {
        return Err(RequestError::UnknownRegistration(reg.to_owned()));
    }
    if let Some(f) = facts {
        f.set_registration(reg);
    }
    if key.registration_id != reg {
        return Err(RequestError::Forbidden(reg.to_owned()));
    }
    if let Some(allowed) = &key.service {
        match &target.service {
            Some(asked) if asked != allowed => {
                return Err(RequestError::ForbiddenService {
                    registration: reg.to_owned(),
                    allowed: allowed.clone(),
                });
            }
            Some(_) => {}
            None => {
                let allowed = allowed.clone();
                if let Some(t) = req.extensions_mut().get_mut::<Target>() {
                    t.service = Some(allowed);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::layers::testing::{call, fixture, inner, request};
    use crate::front::route::Target;
    use tower::ServiceExt;

    fn targeted(reg: &str, key: Option<&str>) -> Request<()> {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .iter()
            .map(|a| ("proxy-authorization", a.as_str()))
            .collect();
        let mut req = request("/", &headers);
        req.extensions_mut().insert(Target {
            registration: reg.into(),
            service: None,
            rewritten: None,
        });
        req.extensions_mut().insert(Arc::new(Facts::default()));
        req
    }

    #[tokio::test]
    async fn keys_are_checked_for_life_existence_and_scope_and_the_facts_recorded() {
        let f = fixture(|_| {}).await;
        let (svc, seen) = inner();
        let svc = ApiKeyLayer {
            core: f.core.clone(),
        }
        .layer(svc);
        let code = |r: Result<_, RequestError>| r.map(|_| "ok").unwrap_or_else(|e| e.code());

        assert_eq!(
            code(call(svc.clone(), targeted(&f.reg, None)).await),
            "unauthorized"
        );
        assert_eq!(
            code(call(svc.clone(), targeted(&f.reg, Some("nope"))).await),
            "unauthorized"
        );
        assert_eq!(
            code(call(svc.clone(), targeted("ghost", Some(&f.key))).await),
            "unknown_registration"
        );
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(
            code(call(svc.clone(), targeted(&f.reg, Some(&f.key))).await),
            "ok"
        );
        let seen = seen.lock().unwrap();
        let facts = seen[0].extensions().get::<Arc<Facts>>().unwrap();
        assert_eq!(facts.registration(), Some(f.reg.as_str()));
        assert!(facts.key_id().is_some());
    }

    #[tokio::test]
    async fn a_key_for_another_registration_is_forbidden_and_a_new_key_works_at_once() {
        let f = fixture(|_| {}).await;
        let token = f
            .core
            .store
            .create_token(Some(1), None)
            .await
            .unwrap()
            .secret;
        let ports = crate::store::PortRange {
            start: 40100,
            end: 40110,
            per_registration: 4,
        };
        let pk =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFoO77y3o9L9fItc8Lm9cP9mP6pRSA0kwuMdoO6DNAFg u";
        let other = f
            .core
            .store
            .register(&token, None, pk, ports)
            .await
            .unwrap()
            .id;
        // Created behind the cache's back: found on the miss path.
        let fresh = f.core.store.create_key(&other).await.unwrap().secret;
        let (svc, _) = inner();
        let svc = ApiKeyLayer {
            core: f.core.clone(),
        }
        .layer(svc);
        let err = call(svc.clone(), targeted(&f.reg, Some(&fresh)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "forbidden");
        call(svc, targeted(&other, Some(&fresh))).await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_keeping_its_key_is_refused_once_the_key_is_revoked() {
        let f = fixture(|_| {}).await;
        let (svc, seen) = inner();
        // One connection's stack, called in place as the serve loop does.
        let mut svc = ApiKeyLayer {
            core: f.core.clone(),
        }
        .layer(svc);
        macro_rules! send {
            ($key:expr) => {{
                let req = targeted(&f.reg, Some($key));
                let answer = svc.ready().await.unwrap().call(req).await;
                answer.map(|_| "ok").unwrap_or_else(|e| e.code())
            }};
        }
        assert_eq!(send!(&f.key), "ok");
        assert_eq!(send!(&f.key), "ok");
        assert_eq!(send!("another"), "unauthorized", "the cache holds one key");
        assert_eq!(send!(&f.key), "ok");
        let id = f.core.auth.snapshot().key(&f.key).unwrap().info.id.clone();
        f.core.store.revoke_key(&id).await.unwrap();
        f.core.auth.refresh().await.unwrap();
        assert_eq!(send!(&f.key), "unauthorized");
        assert_eq!(seen.lock().unwrap().len(), 3);
    }
}
