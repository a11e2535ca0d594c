//! Refuse ambiguous request framing: what the connection's watcher saw in the raw bytes (and
//! hyper parsed away), and what is still visible in the head. A smuggling attempt gets 400 and
//! the connection closes.

use http::Request;

use super::Check;
use crate::error::RequestError;
use crate::front::framing::AmbiguousFraming;
use crate::front::headers;

/// The framing check.
#[derive(Clone, Copy, Default)]
pub struct FramingCheck;

impl Check for FramingCheck {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), RequestError> {
        if req.extensions().get::<AmbiguousFraming>().is_some() {
            return Err(RequestError::BadRequest(
                "ambiguous request framing: both Content-Length and Transfer-Encoding, or repeated Content-Length".into(),
            ));
        }
        match headers::framing_problem(req.headers()) {
            Some(problem) => Err(RequestError::BadRequest(format!(
                "ambiguous request framing: {problem}"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::layers::testing::{call, inner, request};
    use crate::front::layers::CheckLayer;
    use tower::Layer;

    #[tokio::test]
    async fn ambiguous_heads_and_flagged_connections_are_refused_and_others_pass() {
        let (svc, seen) = inner();
        let svc = CheckLayer(FramingCheck).layer(svc);
        let both = request(
            "/",
            &[("content-length", "3"), ("transfer-encoding", "chunked")],
        );
        let err = call(svc.clone(), both).await.unwrap_err();
        assert_eq!(err.code(), "bad_request");
        let mut flagged = request("/", &[]);
        flagged.extensions_mut().insert(AmbiguousFraming::default());
        assert_eq!(
            call(svc.clone(), flagged).await.unwrap_err().code(),
            "bad_request"
        );
        assert!(seen.lock().unwrap().is_empty());
        call(svc, request("/", &[("content-length", "3")]))
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
