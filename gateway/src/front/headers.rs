//! Header rewriting between caller and app: hop-by-hop headers out, gateway credentials out,
//! `X-Forwarded-*` and a request id in.

use std::net::IpAddr;
use std::sync::LazyLock;

use g2c_proto::http1::HOP_BY_HOP;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, UPGRADE};

use super::route::{KEY_HEADER, REGISTRATION_HEADER, SERVICE_HEADER};

/// Request id header, added when the caller sent none.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The `Upgrade` value if this is an HTTP/1.1 upgrade request (`Connection: upgrade`).
pub fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(UPGRADE).cloned()
    } else {
        None
    }
}

/// Headers a caller may not nominate in `Connection` (a proxy honouring it would drop the
/// request's framing or the gateway's own credentials on the way).
const NOT_NOMINABLE: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "g2c-key",
    "g2c-registration",
    "g2c-service",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "authorization",
    "cookie",
];

/// Why a request's framing is ambiguous, if it is: both `Content-Length` and
/// `Transfer-Encoding`, more than one `Content-Length`, a transfer coding other than a single
/// `chunked`, or a `Connection` header nominating a header that must reach the app (or the
/// gateway) intact. Such a request is refused with 400 and its connection closed, so no
/// request hidden behind it is ever read.
pub fn framing_problem(headers: &HeaderMap) -> Option<&'static str> {
    use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
    let cl = headers.get_all(CONTENT_LENGTH).iter().count();
    let te: Vec<&HeaderValue> = headers.get_all(TRANSFER_ENCODING).iter().collect();
    if cl > 0 && !te.is_empty() {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if cl > 1 {
        return Some("more than one Content-Length");
    }
    if let Some(v) = headers.get(CONTENT_LENGTH) {
        if v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit) {
            return Some("Content-Length is not a number");
        }
    }
    if !te.is_empty() && (te.len() > 1 || !te[0].as_bytes().eq_ignore_ascii_case(b"chunked")) {
        return Some("Transfer-Encoding other than a single chunked");
    }
    let nominates_protected = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            NOT_NOMINABLE
                .iter()
                .any(|n| t.trim().eq_ignore_ascii_case(n))
        });
    if nominates_protected {
        return Some("Connection nominates a protected header");
    }
    None
}

/// The hop-by-hop headers as typed names (comparing a standard name is comparing a number,
/// where removing by string parses and hashes it again), with their [`lengths`].
static HOP_BY_HOP_NAMES: LazyLock<(Vec<HeaderName>, u64)> = LazyLock::new(|| {
    let names: Vec<HeaderName> = HOP_BY_HOP
        .iter()
        .map(|n| HeaderName::from_static(n))
        .collect();
    let lengths = lengths(&names);
    (names, lengths)
});

/// Bit `n` set when one of `names` is `n` bytes long: a header of any other length is none of
/// them, known without comparing it with each. (Every name listed is shorter than 64.)
fn lengths(names: &[HeaderName]) -> u64 {
    names.iter().fold(0, |bits, n| {
        bits | 1u64.checked_shl(n.as_str().len() as u32).unwrap_or(0)
    })
}

/// Headers only the gateway reads: never passed to the app.
const GATEWAY_ONLY: [HeaderName; 3] = [KEY_HEADER, REGISTRATION_HEADER, SERVICE_HEADER];

/// Remove hop-by-hop headers, including every header the `Connection` header nominates.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, &[]);
}

/// Remove hop-by-hop headers, the ones `Connection` nominates and `also`, in one pass over the
/// names: most messages carry none of them, and then nothing is hashed or allocated.
fn strip(headers: &mut HeaderMap, also: &[HeaderName]) {
    let (hop_by_hop, hop_lengths) = &*HOP_BY_HOP_NAMES;
    let any_length = hop_lengths | lengths(also);
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut nominates = false;
    for name in headers.keys() {
        let length = 1u64.checked_shl(name.as_str().len() as u32).unwrap_or(0);
        if any_length & length == 0 {
            continue;
        }
        nominates |= name == CONNECTION;
        if hop_by_hop.contains(name) || also.contains(name) {
            doomed.push(name.clone());
        }
    }
    if nominates {
        doomed.extend(
            headers
                .get_all(CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
        );
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Prepare a caller's headers for the app: strip hop-by-hop and gateway-only headers, keep the
/// upgrade handshake if there is one.
pub fn prepare_request(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    strip(headers, &GATEWAY_ONLY);
    if let Some(proto) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, proto.clone());
    }
}

/// Prepare the app's response headers for the caller.
pub fn prepare_response(headers: &mut HeaderMap, switching_protocols: bool) {
    let upgrade = switching_protocols
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers);
    if let Some(proto) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, proto);
    }
}

/// The caller's own request id, passed to the app beside the gateway's `X-Request-Id` when the
/// caller is not a trusted proxy.
pub const CALLER_REQUEST_ID: HeaderName = HeaderName::from_static("x-caller-request-id");

/// The caller's address as an `X-Forwarded-For` value: made once per connection, cloned (a
/// reference count) into each of its requests.
pub fn forwarded_for(caller: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&caller.to_string()).expect("an IP address is a valid header value")
}

/// Set `X-Forwarded-For` (appended to what a trusted proxy sent; from anyone else replaced:
/// an untrusted caller's claim of where it came from is no fact), `-Proto`, `-Host`.
/// `caller` is [`forwarded_for`] of the caller's address.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    caller: &HeaderValue,
    trusted_proxy: bool,
    tls: bool,
    host: Option<&str>,
) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    let prev = trusted_proxy
        .then(|| headers.get(&XFF).and_then(|v| v.to_str().ok()))
        .flatten();
    let xff = match prev {
        Some(prev) => {
            HeaderValue::from_str(&format!("{prev}, {}", caller.to_str().unwrap_or(""))).ok()
        }
        None => Some(caller.clone()),
    };
    if let Some(v) = xff {
        headers.insert(XFF, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_nominated_and_credentials() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "keep-alive, x-secret, G2C-Key".parse().unwrap(),
        );
        h.insert("x-secret", "s".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Bearer k".parse().unwrap());
        h.insert("g2c-key", "k".parse().unwrap());
        h.insert("authorization", "Bearer app".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        prepare_request(&mut h, None);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["authorization"], "Bearer app");
    }

    #[test]
    fn ambiguous_framing_is_named() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            framing_problem(&m)
        };
        assert!(h(&[("content-length", "3"), ("transfer-encoding", "chunked")]).is_some());
        assert!(h(&[("content-length", "3"), ("content-length", "3")]).is_some());
        assert!(h(&[("content-length", "+3")]).is_some());
        assert!(h(&[("transfer-encoding", "gzip, chunked")]).is_some());
        assert!(h(&[("connection", "close, G2C-Key")]).is_some());
        assert!(h(&[
            ("content-length", "3"),
            ("connection", "keep-alive, x-trace")
        ])
        .is_none());
        assert!(h(&[("transfer-encoding", "Chunked")]).is_none());
    }

    #[test]
    fn keeps_upgrade_handshake() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        let up = upgrade_of(&h);
        assert_eq!(up.as_ref().unwrap(), "websocket");
        prepare_request(&mut h, up.as_ref());
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_is_replaced_unless_the_peer_is_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        let me = forwarded_for("127.0.0.1".parse().unwrap());
        add_forwarded(&mut h, &me, false, false, None);
        assert_eq!(
            h["x-forwarded-for"], "127.0.0.1",
            "a caller's claim is dropped"
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        add_forwarded(&mut h, &me, true, true, Some("a.example"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example");
    }
}
