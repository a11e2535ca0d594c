//! A watcher on each HTTP/1 connection's incoming bytes that flags ambiguous request framing
//! before hyper parses it away. hyper follows RFC 9112 for `Content-Length` together with
//! `Transfer-Encoding` (it drops the length, decodes chunked and closes after the response) and
//! merges repeated equal lengths, so the handler never sees that the caller sent both: a
//! request-smuggling attempt would be answered 200. The watcher parses every request head on
//! the connection as the bytes go by (it never changes them), follows the body framing to find
//! the next head, and sets a flag the front door turns into 400 + close.
//!
//! It stops watching only once the connection really stops carrying requests: when a `101` (or
//! a `CONNECT`'s 2xx) has been sent, which the serve loop reports through [`Upgraded`]. A
//! request that merely carries `Upgrade:`, an HTTP/1.0 request or a refused `CONNECT` leaves the
//! watch on, so nothing behind them can slip past. It gives up (flags nothing) only on what
//! hyper refuses on its own: HTTP/2, a head past the size limit, a malformed chunk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use g2c_proto::http1::{take_head, Body, BodyKind, HeadRead, HeadStep, Progress};
use g2c_proto::tap::{Tap, TapObserver};

/// Set once a request head on this connection had ambiguous framing. The accept loop puts it
/// into the extensions of every request dispatched after that, which the front door refuses.
#[derive(Debug, Clone, Default)]
pub struct AmbiguousFraming(pub Arc<AtomicBool>);

impl AmbiguousFraming {
    /// Whether an ambiguous head was seen on the connection.
    pub fn seen(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Set by the serve loop once it sent a response that ends HTTP on the connection (`101`, or a
/// 2xx to `CONNECT`): the bytes that follow belong to another protocol.
#[derive(Debug, Clone, Default)]
pub struct Upgraded(pub Arc<AtomicBool>);

impl Upgraded {
    /// Mark the connection as upgraded if `status` answers `method` by leaving HTTP.
    pub fn note(&self, method: &http::Method, status: http::StatusCode) {
        if status == http::StatusCode::SWITCHING_PROTOCOLS
            || (method == http::Method::CONNECT && status.is_success())
        {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Most headers it parses.
const MAX_HEADERS: usize = 256;

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Following a body (counted or chunked) to the next head.
    Body(Body),
    /// Not watching any more.
    Off,
}

/// What a head says about the body that follows.
enum Framing {
    Body(BodyKind),
    Ambiguous,
    GiveUp,
}

/// Read a request head: its length and what it says about its body.
fn head_framing(head: &[u8]) -> HeadRead<Framing> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => HeadRead::Whole(n, framing_of(&req)),
        Ok(httparse::Status::Partial) => HeadRead::Partial,
        Err(_) => HeadRead::Bad,
    }
}

fn framing_of(req: &httparse::Request<'_, '_>) -> Framing {
    // HTTP/1.0 and 1.1 frame bodies the same way; httparse parses no other version.
    if !matches!(req.version, Some(0 | 1)) {
        return Framing::GiveUp;
    }
    // Counted and remembered in place: no allocation per request head.
    let (mut lengths, mut length, mut coding) = (0usize, None, None);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coding = Some(h.value);
        }
    }
    if (lengths > 0 && coding.is_some()) || lengths > 1 {
        return Framing::Ambiguous;
    }
    if let Some(last) = coding {
        let chunked_last = std::str::from_utf8(last)
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return if chunked_last {
            Framing::Body(BodyKind::Chunked)
        } else {
            Framing::GiveUp
        };
    }
    match length {
        None => Framing::Body(BodyKind::None),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map_or(Framing::GiveUp, |n| Framing::Body(BodyKind::Length(n))),
    }
}

/// The watcher's state machine over one connection's incoming bytes.
#[derive(Debug)]
pub struct FramingWatch {
    state: State,
    flag: Arc<AtomicBool>,
    upgraded: Upgraded,
}

impl FramingWatch {
    /// A watcher that sets `flag`, until `upgraded` says HTTP has ended on the connection.
    pub fn new(flag: Arc<AtomicBool>, upgraded: Upgraded) -> Self {
        Self {
            state: State::Head(Vec::new()),
            flag,
            upgraded,
        }
    }

    /// Whether it still watches.
    pub fn active(&self) -> bool {
        !matches!(self.state, State::Off) && !self.upgraded.0.load(Ordering::Acquire)
    }

    /// Look at the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (next, rest) = match std::mem::replace(&mut self.state, State::Off) {
                State::Off => return,
                State::Head(buf) => self.head(buf, data),
                State::Body(mut body) => match body.feed(data, |_| {}) {
                    Progress::More => (State::Body(body), None),
                    Progress::Done(n) => (State::Head(Vec::new()), Some(&data[n..])),
                    Progress::Broken => (State::Off, None),
                },
            };
            self.state = next;
            match rest {
                Some(rest) => data = rest,
                None => return,
            }
        }
    }

    /// Collect a request head; once whole, follow what it says about its body. Returns the next
    /// state and the bytes after what was used (`None`: all used, wait for more).
    fn head<'a>(&self, buf: Vec<u8>, data: &'a [u8]) -> (State, Option<&'a [u8]>) {
        let (framing, data) = match take_head(buf, data, head_framing) {
            HeadStep::Partial(buf) => return (State::Head(buf), None),
            HeadStep::Off => return (State::Off, None),
            HeadStep::Whole { value, rest } => (value, rest),
        };
        let next = match framing {
            Framing::Body(kind) => match Body::new(kind) {
                body if body.is_done() => State::Head(Vec::new()),
                body => State::Body(body),
            },
            Framing::Ambiguous => {
                self.flag.store(true, Ordering::Release);
                State::Off
            }
            Framing::GiveUp => State::Off,
        };
        (next, Some(data))
    }
}

/// An I/O stream whose incoming bytes pass a [`FramingWatch`] on the way to hyper.
pub type Watched<S> = Tap<S, FramingWatch>;

/// Watch `inner`'s incoming bytes, flagging into `flag`, until `upgraded`.
pub fn watched<S>(inner: S, flag: Arc<AtomicBool>, upgraded: Upgraded) -> Watched<S> {
    Tap::new(inner, FramingWatch::new(flag, upgraded))
}

impl TapObserver for FramingWatch {
    fn read(&mut self, bytes: &[u8]) {
        if self.active() {
            self.feed(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged(stream: &[u8], split: usize) -> (bool, bool) {
        let flag = Arc::new(AtomicBool::new(false));
        let mut w = FramingWatch::new(flag.clone(), Upgraded::default());
        let (a, b) = stream.split_at(split.min(stream.len()));
        w.feed(a);
        w.feed(b);
        (flag.load(Ordering::Acquire), w.active())
    }

    #[test]
    fn ambiguous_heads_are_flagged_wherever_the_reads_split() {
        let cl_te = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let dup =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        for split in 0..cl_te.len() {
            assert!(flagged(cl_te, split).0, "split {split}");
        }
        for split in 0..dup.len() {
            assert!(flagged(dup, split).0, "split {split}");
        }
    }

    #[test]
    fn a_head_fed_one_byte_at_a_time_is_still_read() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut w = FramingWatch::new(flag.clone(), Upgraded::default());
        let clean = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok";
        let bad = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for b in clean.iter().chain(bad.iter()) {
            w.feed(std::slice::from_ref(b));
        }
        assert!(flag.load(Ordering::Acquire));
    }

    #[test]
    fn bodies_are_followed_to_the_next_head() {
        // A clean chunked request, then a clean Content-Length one, then an ambiguous third:
        // the watcher must find the third head past both bodies (whose bytes look like heads).
        let mut s = Vec::new();
        s.extend_from_slice(b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        s.extend_from_slice(b"1b\r\nContent-Length: 1\r\n\r\nxxxxxx\r\n0\r\nX-T: 1\r\n\r\n");
        s.extend_from_slice(b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 24\r\n\r\n");
        s.extend_from_slice(b"Transfer-Encoding: x\r\n\r\n");
        let clean = s.clone();
        s.extend_from_slice(
            b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz",
        );
        for split in [0, 7, 60, 90, 130, clean.len()] {
            assert_eq!(
                flagged(&clean, split),
                (false, true),
                "clean, split {split}"
            );
            assert!(flagged(&s, split).0, "ambiguous third, split {split}");
        }
    }

    #[test]
    fn only_a_sent_upgrade_and_h2_stop_the_watch() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(flagged(h2, 3), (false, false));
        let up =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let flag = Arc::new(AtomicBool::new(false));
        let upgraded = Upgraded::default();
        let mut w = FramingWatch::new(flag.clone(), upgraded.clone());
        w.read(up);
        assert!(w.active(), "an upgrade asked for is not an upgrade made");
        upgraded.note(&http::Method::GET, http::StatusCode::SWITCHING_PROTOCOLS);
        assert!(!w.active());
        w.read(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(
            !flag.load(Ordering::Acquire),
            "bytes after a 101 are not HTTP"
        );
    }

    /// What switched the watch off for the rest of a connection before: a request that only
    /// carries `Upgrade:` (answered 200), HTTP/1.0, a `CONNECT` (refused). The ambiguous head
    /// behind each is flagged.
    #[test]
    fn what_only_looks_like_the_end_of_http_keeps_the_watch_on() {
        let ambiguous = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for first in [
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "POST / HTTP/1.1\r\nUpgrade: x\r\nContent-Length: 3\r\n\r\nabc",
        ] {
            let stream = format!("{first}{ambiguous}");
            for split in [0, 5, first.len(), stream.len()] {
                assert_eq!(
                    flagged(stream.as_bytes(), split),
                    (true, false),
                    "{first:?} at {split}"
                );
            }
        }
        let http10 = "POST / HTTP/1.0\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            flagged(http10.as_bytes(), 9),
            (true, false),
            "HTTP/1.0 is watched too"
        );
    }
}
