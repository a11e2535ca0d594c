//! Which worker a caller's connection is served on: the one running the tunnel its first
//! request is for ([`crate::workers`]), so the request and its answer stay on one thread. Read
//! from the first bytes the caller sent, peeked (they stay in the socket for hyper), with the
//! routing rules every request goes through. A head that is not whole in those bytes, routes
//! nowhere, or is for a tunnel this node does not hold picks no worker: the connection stays
//! where it was accepted, and every request on it is routed as always.

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::Uri;

use super::route::{route, REGISTRATION_HEADER};
use super::Front;

/// The worker holding the tunnel the request in `head` is for, if any.
pub fn worker_for(front: &Front, head: &[u8]) -> Option<usize> {
    let registration = registration_of(head, &front.base_domain)?;
    front.core.registry.get(&registration)?.worker
}

/// The registration the whole request head at the start of `head` routes to.
fn registration_of(head: &[u8], base_domain: &str) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    // Only a whole head: a partial one may not have reached the header that routes it.
    if !req.parse(head).ok()?.is_complete() {
        return None;
    }
    let uri: Uri = req.path?.parse().ok()?;
    let mut routing = HeaderMap::new();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == HOST || name == REGISTRATION_HEADER {
            routing.append(name, HeaderValue::from_bytes(h.value).ok()?);
        }
    }
    route(&routing, &uri, base_domain)
        .ok()
        .map(|target| target.registration)
}

#[cfg(test)]
mod tests {
    use super::registration_of;

    #[test]
    fn the_first_request_names_the_registration_by_host_header_or_path() {
        let base = "tunnel.example.com";
        let cases: [(&[u8], Option<&str>); 7] = [
            (
                b"GET / HTTP/1.1\r\nHost: abc123.tunnel.example.com\r\n\r\n",
                Some("abc123"),
            ),
            (
                b"GET /x HTTP/1.1\r\nHost: web--abc123.tunnel.example.com:80\r\n\r\n",
                Some("abc123"),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: other\r\nG2C-Registration: abc123\r\n\r\n",
                Some("abc123"),
            ),
            (
                b"GET /r/abc123/1k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                Some("abc123"),
            ),
            // A head cut short, one that routes nowhere, and garbage pick nothing.
            (b"GET / HTTP/1.1\r\nHost: abc123.tunnel.exa", None),
            (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", None),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", None),
        ];
        for (head, want) in cases {
            assert_eq!(
                registration_of(head, base).as_deref(),
                want,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
