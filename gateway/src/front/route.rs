//! Which registration a request is for, and which API key it carries. Pure functions over the
//! request head, so every routing rule is unit-tested without sockets.

use http::header::{HeaderMap, HeaderName, HOST};
use http::uri::PathAndQuery;
use http::Uri;

use crate::error::RequestError;

/// Header naming the registration explicitly.
pub const REGISTRATION_HEADER: HeaderName = HeaderName::from_static("g2c-registration");
/// Header naming the agent's HTTP service, when the host label or path did not.
pub const SERVICE_HEADER: HeaderName = HeaderName::from_static("g2c-service");
/// Separates a service from its registration in a host label or path segment:
/// `<svc>--<id>.<base_domain>` stays one DNS label, so one wildcard certificate covers it.
pub const SERVICE_SEPARATOR: &str = "--";
/// Header carrying the API key (alternative to `Proxy-Authorization: Bearer`).
pub const KEY_HEADER: HeaderName = HeaderName::from_static("g2c-key");

/// The registration a request targets (a request extension from the route layer on), the
/// service it asked for, and, for `/r/<id>/...` requests, the path the app sees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// Registration ID.
    pub registration: String,
    /// The agent's HTTP service, when the caller (or its key's scope) named one; `None` is the
    /// agent's default (its first HTTP service). The session layer fills in the default.
    pub service: Option<String>,
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

/// Whether `name` has the shape of a service name as it arrives here (lowercased): what the
/// agent's config allows (letters, digits, `-`, `_`; 1-64), without the separator.
pub fn valid_service(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.contains(SERVICE_SEPARATOR)
}

/// A label or path segment: `<id>` or `<svc>--<id>`.
fn parse_label(label: &str) -> Option<(Option<&str>, &str)> {
    match label.split_once(SERVICE_SEPARATOR) {
        Some((svc, id)) => (valid_service(svc) && valid_id(id) && !id.contains(SERVICE_SEPARATOR))
            .then_some((Some(svc), id)),
        None => valid_id(label).then_some((None, label)),
    }
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

/// Find the registration, in DESIGN.md's order: `Host: [<svc>--]<id>.<base_domain>`, then the
/// `G2C-Registration` header, then a `/r/[<svc>--]<id>/` path prefix (stripped). The service
/// comes from the same label, else from the `G2C-Service` header.
pub fn route(headers: &HeaderMap, uri: &Uri, base_domain: &str) -> Result<Target, RequestError> {
    let mut target = find_registration(headers, uri, base_domain)?;
    if target.service.is_none() {
        if let Some(value) = headers.get(SERVICE_HEADER) {
            let svc = value
                .to_str()
                .ok()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| valid_service(s))
                .ok_or_else(|| RequestError::BadRequest("malformed G2C-Service header".into()))?;
            target.service = Some(svc);
        }
    }
    Ok(target)
}

fn find_registration(
    headers: &HeaderMap,
    uri: &Uri,
    base_domain: &str,
) -> Result<Target, RequestError> {
    if let Some(host) = request_host(headers, uri) {
        let host = host.to_ascii_lowercase();
        if let Some((svc, id)) = host
            .strip_suffix(base_domain)
            .and_then(|h| h.strip_suffix('.'))
            .and_then(parse_label)
        {
            return Ok(Target {
                registration: id.to_owned(),
                service: svc.map(str::to_owned),
                rewritten: None,
            });
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
            service: None,
            rewritten: None,
        });
    }
    if let Some(rest) = uri.path().strip_prefix("/r/") {
        let (label, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if let Some((svc, id)) = parse_label(label) {
            let pq = match uri.query() {
                Some(q) => format!("{tail}?{q}"),
                None => tail.to_owned(),
            };
            let rewritten = pq
                .parse::<PathAndQuery>()
                .map_err(|_| RequestError::BadRequest("malformed path".into()))?;
            return Ok(Target {
                registration: id.to_owned(),
                service: svc.map(str::to_owned),
                rewritten: Some(rewritten),
            });
        }
    }
    Err(RequestError::BadRequest(
        "no registration named: use Host [<service>--]<id>.<base domain>, the G2C-Registration header or a /r/[<service>--]<id>/ path".into(),
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

    fn req(host: Option<&str>, uri: &str, extra: &[(HeaderName, &str)]) -> (HeaderMap, Uri) {
        let mut h = HeaderMap::new();
        if let Some(host) = host {
            h.insert(HOST, host.parse().unwrap());
        }
        for (k, v) in extra {
            h.insert(k.clone(), v.parse().unwrap());
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
    fn services_by_label_header_and_path() {
        let (h, u) = req(Some("reports--abc1.g2c.example.com"), "/x", &[]);
        let r = route(&h, &u, "g2c.example.com").unwrap();
        assert_eq!(
            (r.registration.as_str(), r.service.as_deref()),
            ("abc1", Some("reports"))
        );
        // The label's service wins over the header.
        let (h, u) = req(
            Some("reports--abc1.g2c.example.com"),
            "/x",
            &[(SERVICE_HEADER, "api")],
        );
        assert_eq!(
            route(&h, &u, "g2c.example.com").unwrap().service.as_deref(),
            Some("reports")
        );
        let (h, u) = req(
            None,
            "/",
            &[(REGISTRATION_HEADER, "abc1"), (SERVICE_HEADER, "Api")],
        );
        let r = route(&h, &u, "x").unwrap();
        assert_eq!(
            (r.registration.as_str(), r.service.as_deref()),
            ("abc1", Some("api"))
        );
        let (h, u) = req(Some("gw"), "/r/api--abc1/v1/users?x=1", &[]);
        let r = route(&h, &u, "x").unwrap();
        assert_eq!(
            (r.registration.as_str(), r.service.as_deref()),
            ("abc1", Some("api"))
        );
        assert_eq!(r.rewritten.unwrap().as_str(), "/v1/users?x=1");
        let (h, u) = req(Some("abc1.x"), "/", &[]);
        assert_eq!(route(&h, &u, "x").unwrap().service, None);
        // Malformed service names are refused, not guessed at.
        let (h, u) = req(
            None,
            "/",
            &[(REGISTRATION_HEADER, "abc1"), (SERVICE_HEADER, "a b")],
        );
        assert_eq!(route(&h, &u, "x").unwrap_err().code(), "bad_request");
        let (h, u) = req(Some("--abc1.x"), "/", &[]);
        assert!(route(&h, &u, "x").is_err());
        let (h, u) = req(Some("a--b--c.x"), "/", &[]);
        assert!(route(&h, &u, "x").is_err(), "one separator only");
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
        let (h, _) = req(
            None,
            "/",
            &[(http::header::PROXY_AUTHORIZATION, "Bearer  k1 ")],
        );
        assert_eq!(api_key(&h), Some("k1"));
        let (h, _) = req(None, "/", &[(KEY_HEADER, "k2")]);
        assert_eq!(api_key(&h), Some("k2"));
        let (h, _) = req(
            None,
            "/",
            &[(http::header::PROXY_AUTHORIZATION, "Basic xyz")],
        );
        assert_eq!(api_key(&h), None);
        let (h, _) = req(None, "/", &[(http::header::AUTHORIZATION, "Bearer app")]);
        assert_eq!(
            api_key(&h),
            None,
            "the app's own Authorization is never our key"
        );
    }
}
