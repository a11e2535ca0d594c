//! Request rates per registration and per API key (token buckets; 429 with `Retry-After`).

use std::sync::Arc;

use http::Request;

use super::route::Target;
use super::Check;
use crate::error::RequestError;
use crate::front::ratelimit::RateLimiter;
use crate::front::record::Facts;

/// Both families of buckets.
#[derive(Clone)]
pub struct RateLimit {
    /// Per registration.
    pub per_registration: Arc<RateLimiter>,
    /// Per API key.
    pub per_key: Arc<RateLimiter>,
}

impl Check for RateLimit {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), RequestError> {
        let Some(target) = req.extensions().get::<Target>() else {
            return Err(RequestError::Internal(
                "rate_limit layer before route".into(),
            ));
        };
        let key = req
            .extensions()
            .get::<Arc<Facts>>()
            .and_then(|f| f.key_id());
        let limited = self
            .per_registration
            .check(&target.registration)
            .and_then(|()| key.map_or(Ok(()), |k| self.per_key.check(k)));
        limited.map_err(|wait| RequestError::RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            registration: target.registration.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::layers::testing::request;

    fn for_key(reg: &str, key: &str) -> Request<()> {
        let mut req = request("/", &[]);
        req.extensions_mut().insert(Target {
            registration: reg.into(),
            service: None,
            rewritten: None,
        });
        let facts = Arc::new(Facts::default());
        facts.set_key_id(key);
        req.extensions_mut().insert(facts);
        req
    }

    #[test]
    fn a_registration_and_a_key_each_have_their_own_bucket() {
        let limit = RateLimit {
            per_registration: Arc::new(RateLimiter::new(1.0, 3)),
            per_key: Arc::new(RateLimiter::new(1.0, 1)),
        };
        assert!(limit.check(&mut for_key("a", "k1")).is_ok());
        let err = limit.check(&mut for_key("a", "k1")).unwrap_err();
        assert_eq!(err.code(), "rate_limited", "k1 is out of tokens");
        assert!(
            matches!(
                err,
                RequestError::RateLimited {
                    retry_after_secs: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            limit.check(&mut for_key("a", "k2")).is_ok(),
            "the last of a's burst (k1's refusal took one)"
        );
        assert_eq!(
            limit.check(&mut for_key("a", "k3")).unwrap_err().code(),
            "rate_limited"
        );
        assert!(limit.check(&mut for_key("b", "k4")).is_ok());
    }
}
