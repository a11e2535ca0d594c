//! Which registration a request is for, and which API key it carries. Pure functions over the
//! request head, so every routing rule is unit-tested without sockets.

use http::header::{HeaderMap, HOST};
use http::uri::PathAndQuery;
use http::Uri;

use crate::error::RequestError;

/// Header naming the registration explicitly.
pub const REGISTRATION_HEADER: &str = "g2c-registration";
/// Header carrying the API key (alternative to `Proxy-Authorization: Bearer`).
pub const KEY_HEADER: &str = "g2c-key";

/// The registration a request targets (a request extension from the route layer on) and, for `/r/<id>/...` requests, the path the app sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Registration ID.
    pub registration: String,
    /// Path and query to forward, when the `/r/<id>` prefix was stripped.
    pub rewritten: Option<PathAndQuery>,
}

/// Whether `id` has the shape of a registration ID (a lowercase DNS label).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

/// The host the caller addressed: `Host` header, else the URI authority (HTTP/2), without port.
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    let raw = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))?;
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // `[v6]:port` keeps `[v6]`; a `[` without its `]` is no address: keep it whole (it
        // then matches no registration).
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// Find the registration, in DESIGN.md's order: `Host: <id>.<base_domain>`, then the
/// `G2C-Registration` header, then a `/r/<id>/` path prefix (stripped).
pub fn route(headers: &HeaderMap, uri: &Uri, base_domain: &str) -> Result<Target, RequestError> {
    if let Some(host) = request_host(headers, uri) {
        let host = host.to_ascii_lowercase();
        if let Some(label) = host
            .strip_suffix(base_domain)
            .and_then(|h| h.strip_suffix('.'))
        {
            if valid_id(label) {
                return Ok(Target {
                    registration: label.to_owned(),
                    rewritten: None,
                });
            }
        }
    }
    if let Some(value) = headers.get(REGISTRATION_HEADER) {
        let id = value
            .to_str()
            .ok()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| valid_id(s))
            .ok_or_else(|| RequestError::BadRequest("malformed G2C-Registration header".into()))?;
        return Ok(Target {
            registration: id,
            rewritten: None,
        });
    }
    if let Some(rest) = uri.path().strip_prefix("/r/") {
        let (id, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if valid_id(id) {
            let pq = match uri.query() {
                Some(q) => format!("{tail}?{q}"),
                None => tail.to_owned(),
            };
            let rewritten = pq
                .parse::<PathAndQuery>()
                .map_err(|_| RequestError::BadRequest("malformed path".into()))?;
            return Ok(Target {
                registration: id.to_owned(),
                rewritten: Some(rewritten),
            });
        }
    }
    Err(RequestError::BadRequest(
        "no registration named: use Host <id>.<base domain>, the G2C-Registration header or a /r/<id>/ path".into(),
    ))
}

/// The caller's API key: `Proxy-Authorization: Bearer <key>` or `G2C-Key: <key>`.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(http::header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            return Some(v[7..].trim());
        }
    }
    headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_odd_brackets_do_not_panic() {
        // Found by the front_door fuzz target: `Host: [ g/w` used to index past the end.
        assert_eq!(strip_port("[ g/w"), "[ g/w");
        assert_eq!(strip_port("[::1]:8000"), "[::1]");
        assert_eq!(strip_port("["), "[");
        assert_eq!(strip_port("a.example:80"), "a.example");
    }

    fn req(host: Option<&str>, uri: &str, extra: &[(&str, &str)]) -> (HeaderMap, Uri) {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(HOST, host.parse().unwrap());
        }
        for (k, v) in extra {
            h.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        (h, uri.parse().unwrap())
    }

    #[test]
    fn host_subdomain_wins() {
        let (h, u) = req(
            Some("abc123.g2c.example.com:8000"),
            "/x",
            &[(REGISTRATION_HEADER, "other")],
        );
        let r = route(&h, &u, "g2c.example.com").unwrap();
        assert_eq!(r.registration, "abc123");
        assert_eq!(r.rewritten, None);
    }

    #[test]
    fn header_then_path() {
        let (h, u) = req(
            Some("gw.example.com"),
            "/r/zzz/a?b=1",
            &[(REGISTRATION_HEADER, "Abc")],
        );
        assert_eq!(
            route(&h, &u, "g2c.example.com").unwrap().registration,
            "abc"
        );
        let (h, u) = req(Some("gw.example.com"), "/r/zzz/a/b?c=1", &[]);
        let r = route(&h, &u, "g2c.example.com").unwrap();
        assert_eq!(r.registration, "zzz");
        assert_eq!(r.rewritten.unwrap().as_str(), "/a/b?c=1");
        let (h, u) = req(None, "/r/zzz", &[]);
        assert_eq!(route(&h, &u, "x").unwrap().rewritten.unwrap().as_str(), "/");
    }

    #[test]
    fn http2_authority_is_a_host() {
        let (h, u) = req(None, "http://abc.localhost:8000/", &[]);
        assert_eq!(route(&h, &u, "localhost").unwrap().registration, "abc");
    }

    #[test]
    fn nothing_named_is_bad_request() {
        let (h, u) = req(Some("localhost"), "/plain", &[]);
        assert!(matches!(
            route(&h, &u, "localhost"),
            Err(RequestError::BadRequest(_))
        ));
        let (h, u) = req(Some("a.b.localhost"), "/", &[]);
        assert!(
            route(&h, &u, "localhost").is_err(),
            "two labels are not an id"
        );
        let (h, u) = req(None, "/", &[(REGISTRATION_HEADER, "bad id!")]);
        assert!(matches!(
            route(&h, &u, "localhost"),
            Err(RequestError::BadRequest(_))
        ));
    }

    #[test]
    fn keys_from_both_headers() {
        let (h, _) = req(None, "/", &[("proxy-authorization", "Bearer  k1 ")]);
        assert_eq!(api_key(&h), Some("k1"));
        let (h, _) = req(None, "/", &[(KEY_HEADER, "k2")]);
        assert_eq!(api_key(&h), Some("k2"));
        let (h, _) = req(None, "/", &[("proxy-authorization", "Basic xyz")]);
        assert_eq!(api_key(&h), None);
        let (h, _) = req(None, "/", &[("authorization", "Bearer app")]);
        assert_eq!(
            api_key(&h),
            None,
            "the app's own Authorization is never our key"
        );
    }
}
