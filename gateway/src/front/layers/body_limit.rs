//! Refuse a request whose declared body is over `limits.max_body_bytes` before anything is
//! sent upstream (413). Bodies without a declared length are cut by the counting body instead.

use http::Request;

use super::Check;
use crate::error::RequestError;

/// The declared-length check; a limit of 0 means none.
#[derive(Clone, Copy)]
pub struct BodyLimit {
    /// Largest body, bytes.
    pub max: u64,
}

impl Check for BodyLimit {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), RequestError> {
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if self.max > 0 && declared.is_some_and(|n| n > self.max) {
            return Err(RequestError::PayloadTooLarge(self.max));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::layers::testing::request;

    #[test]
    fn only_a_declared_length_over_the_limit_is_refused() {
        let limit = BodyLimit { max: 10 };
        let over = &mut request("/", &[("content-length", "11")]);
        assert_eq!(limit.check(over).unwrap_err().code(), "payload_too_large");
        assert!(limit
            .check(&mut request("/", &[("content-length", "10")]))
            .is_ok());
        assert!(limit.check(&mut request("/", &[])).is_ok());
        let none = BodyLimit { max: 0 };
        assert!(none
            .check(&mut request("/", &[("content-length", "99999")]))
            .is_ok());
    }
}
