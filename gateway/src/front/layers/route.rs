//! Which registration a request is for (host label, `G2C-Registration`, `/r/<id>/`): the
//! chosen [`Target`] rides on in the request's extensions.

use std::sync::Arc;

use http::Request;

use super::Check;
use crate::error::RequestError;
pub use crate::front::route::Target;

/// The routing step.
#[derive(Clone)]
pub struct RouteCheck {
    /// The domain registrations are subdomains of.
    pub base_domain: Arc<str>,
}

impl Check for RouteCheck {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), RequestError> {
        let target = crate::front::route::route(req.headers(), req.uri(), &self.base_domain)?;
        req.extensions_mut().insert(target);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::layers::testing::request;

    #[test]
    fn the_target_rides_on_the_request_and_a_request_naming_none_is_refused() {
        let route = RouteCheck {
            base_domain: "g2c.test".into(),
        };
        let mut req = request("/r/abc/x?y=1", &[("host", "gw.example")]);
        route.check(&mut req).unwrap();
        let target = req.extensions().get::<Target>().unwrap();
        assert_eq!(target.registration, "abc");
        assert_eq!(target.rewritten.as_ref().unwrap().as_str(), "/x?y=1");
        let mut req = request("/", &[("host", "zzz.g2c.test")]);
        route.check(&mut req).unwrap();
        assert_eq!(
            req.extensions().get::<Target>().unwrap().registration,
            "zzz"
        );
        let err = route
            .check(&mut request("/", &[("host", "gw.example")]))
            .unwrap_err();
        assert_eq!(err.code(), "bad_request");
    }
}
