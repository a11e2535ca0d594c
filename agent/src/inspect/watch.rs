//! The inspector's eyes on one tunnel stream of an HTTP service. The gateway always speaks
//! HTTP/1.1 on the stream (whatever the agent then speaks to the app), so one observer on the
//! stream sees every request as it is read and every answer as it is written, in order. It
//! follows the framing (`g2c_proto::http1`) to find each next head, copies each head once and
//! overwrites the credentials in the copy, keeps the first KiB of bodies when the service captures them, and
//! records the request when its answer has been written. It never changes a byte; on anything
//! it cannot follow (not HTTP, a head past 96 KiB, an upgrade) it stops watching the stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use g2c_proto::error_code;
use g2c_proto::http1::{take_head, Body, BodyKind, HeadRead, HeadStep, Progress};
use g2c_proto::tap::TapObserver;

use super::entry::{keep_prefix, Captured, Entry, Failure, Span};
use super::mask::Settings;
use super::{now_ms, Inspector};

/// What reading a head came to: its length, and how its body is framed (`None`: an interim
/// answer, or one the watch has already dealt with).
type Parsed = HeadRead<Option<BodyKind>>;

/// Most headers a head may have to be followed.
const MAX_HEADERS: usize = 128;

/// Where one direction of the stream is.
#[derive(Debug)]
enum Dir {
    /// Collecting a head (bytes carried over from earlier reads, usually none).
    Head(Vec<u8>),
    /// Following a body.
    Body(Body),
}

/// Which side of the stream ended first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closer {
    /// The app's side: it closed its connection, so the answer to the gateway was shut.
    App,
    /// The gateway's side: it closed the stream (the caller left, or it gave up waiting).
    Gateway,
}

/// A request read, waiting for (or receiving) its answer.
#[derive(Debug)]
struct Pending {
    started: Instant,
    /// The head as copied (masked), with where its method, target and request id lie.
    request_head: Vec<u8>,
    method: Span,
    target: Span,
    request_id: Option<Span>,
    request: Side,
    status: Option<u16>,
    wait_us: Option<u64>,
    response_head: Option<Box<[u8]>>,
    response: Side,
}

/// What went by of one message (request or answer) after its head was read.
#[derive(Debug, Default)]
struct Side {
    /// Bytes of the message, head and body as sent.
    bytes: u64,
    /// Its body's content length (chunk framing removed).
    body_len: u64,
    /// The body's first bytes, when the service captures them.
    body: Option<Vec<u8>>,
}

impl Side {
    /// Count `used` bytes of the message, of which `content` is body content.
    fn content(&mut self, content: &[u8]) {
        self.body_len += content.len() as u64;
        if let Some(b) = &mut self.body {
            keep_prefix(b, content);
        }
    }

    fn captured(self) -> Option<Captured> {
        let length = self.body_len;
        self.body.map(|b| Captured {
            bytes: b.into_boxed_slice(),
            length,
        })
    }
}

/// The observer on one stream.
#[derive(Debug)]
pub struct HttpWatch {
    inspector: Arc<Inspector>,
    settings: Arc<Settings>,
    service: Arc<str>,
    capture: bool,
    req: Dir,
    resp: Dir,
    pending: VecDeque<Pending>,
    closer: Option<Closer>,
    off: bool,
    /// The wall clock at `base`: request times are read from the monotonic clock only.
    base: (Instant, u64),
}

impl HttpWatch {
    /// Watch a stream of `service` for `inspector` (bodies kept if `capture`).
    pub fn new(inspector: Arc<Inspector>, service: &str, capture: bool) -> Self {
        let settings = inspector.settings();
        Self {
            off: !settings.enabled,
            inspector,
            settings,
            service: service.into(),
            capture,
            req: Dir::Head(Vec::new()),
            resp: Dir::Head(Vec::new()),
            pending: VecDeque::new(),
            closer: None,
            base: (Instant::now(), now_ms()),
        }
    }

    fn feed_request(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.off {
            match std::mem::replace(&mut self.req, Dir::Head(Vec::new())) {
                Dir::Head(buf) => match take_head(buf, data, |h| self.request_head(h)) {
                    HeadStep::Partial(buf) => {
                        self.req = Dir::Head(buf);
                        return;
                    }
                    HeadStep::Off => self.off = true,
                    HeadStep::Whole { value: kind, rest } => {
                        data = rest;
                        self.req = Dir::Body(Body::new(kind.unwrap_or(BodyKind::None)));
                    }
                },
                Dir::Body(mut body) => {
                    let side = self.pending.back_mut().map(|p| &mut p.request);
                    let (progress, used) = follow(&mut body, data, side);
                    data = &data[used..];
                    match progress {
                        Progress::More => self.req = Dir::Body(body),
                        Progress::Done(_) => {}
                        Progress::Broken => self.off = true,
                    }
                }
            }
        }
    }

    fn feed_response(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.off {
            match std::mem::replace(&mut self.resp, Dir::Head(Vec::new())) {
                Dir::Head(buf) => match take_head(buf, data, |h| self.response_head(h)) {
                    HeadStep::Partial(buf) => {
                        self.resp = Dir::Head(buf);
                        return;
                    }
                    HeadStep::Off => {
                        if !self.off {
                            self.stop("bad_response", "the app's answer is not HTTP/1");
                        }
                    }
                    HeadStep::Whole { value: kind, rest } => {
                        data = rest;
                        match kind.map(Body::new) {
                            Some(body) if body.is_done() => self.answered(None),
                            Some(body) => self.resp = Dir::Body(body),
                            None => {}
                        }
                    }
                },
                Dir::Body(mut body) => {
                    let side = self.pending.front_mut().map(|p| &mut p.response);
                    let (progress, used) = follow(&mut body, data, side);
                    data = &data[used..];
                    match progress {
                        Progress::More => self.resp = Dir::Body(body),
                        Progress::Done(_) => self.answered(None),
                        Progress::Broken => {
                            self.stop("bad_response", "the app's chunked body is malformed")
                        }
                    }
                }
            }
        }
    }

    /// Read a request head from `head`: when whole, note the request and say how its body
    /// is framed.
    fn request_head(&mut self, head: &[u8]) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(head) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return HeadRead::Partial,
            Err(_) => return HeadRead::Bad,
        };
        let (Some(method), Some(path)) = (req.method, req.path) else {
            return HeadRead::Bad;
        };
        // The one copy; masked values are overwritten in it.
        let mut text = head[..len].to_vec();
        let Some(target) = Span::within(head, path.as_bytes()) else {
            return HeadRead::Bad;
        };
        self.settings
            .mask_query_in_place(&mut text[target.start as usize..target.end as usize]);
        let Some((kind, request_id)) = self.scan_headers(head, &mut text, req.headers, false)
        else {
            return HeadRead::Bad;
        };
        self.pending.push_back(Pending {
            started: Instant::now(),
            request_head: text,
            method: Span::new(0, method.len()),
            target,
            request_id,
            request: Side {
                bytes: len as u64,
                body: self.capture.then(Vec::new),
                ..Side::default()
            },
            status: None,
            wait_us: None,
            response_head: None,
            response: Side::default(),
        });
        HeadRead::Whole(len, Some(kind.unwrap_or(BodyKind::None)))
    }

    /// Mask the values of masked headers in `text` (the copy of `head`), and find the body's
    /// framing and the request id. `None` if a header does not lie within the head (never,
    /// with httparse; then nothing is kept rather than a secret).
    fn scan_headers(
        &self,
        head: &[u8],
        text: &mut [u8],
        headers: &[httparse::Header<'_>],
        response: bool,
    ) -> Option<(Option<BodyKind>, Option<Span>)> {
        let (mut length, mut chunked, mut request_id) = (None, false, None);
        for h in headers {
            let name = h.name;
            if self.settings.masks_header(name) {
                let v = Span::within(head, h.value)?;
                text[v.start as usize..v.end as usize].fill(b'*');
            } else if name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if !response && name.eq_ignore_ascii_case("x-request-id") {
                request_id = Span::within(head, h.value);
            }
        }
        let kind = if chunked {
            Some(BodyKind::Chunked)
        } else {
            length.map(BodyKind::Length)
        };
        Some((kind, request_id))
    }

    /// Read an answer head from `head`: when whole, attach it to the oldest request waiting
    /// and say how its body is framed (`None` when there is none: it is then answered).
    fn response_head(&mut self, head: &[u8]) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(head) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return HeadRead::Partial,
            Err(_) => return HeadRead::Bad,
        };
        let Some(code) = resp.code else {
            return HeadRead::Bad;
        };
        let capture = self.capture;
        let mut text = head[..len].to_vec();
        let Some((kind, _)) = self.scan_headers(head, &mut text, resp.headers, true) else {
            return HeadRead::Bad;
        };
        let Some(p) = self.pending.front_mut() else {
            // An answer nobody asked for: not a stream we can follow.
            self.off = true;
            return HeadRead::Bad;
        };
        p.response.bytes += len as u64;
        if (100..200).contains(&code) && code != 101 {
            // An interim answer (100 Continue); the real one follows.
            return HeadRead::Whole(len, None);
        }
        p.status = Some(code);
        p.wait_us = Some(p.started.elapsed().as_micros() as u64);
        p.response_head = Some(text.into_boxed_slice());
        p.response.body = capture.then(Vec::new);
        let leaves_http = code == 101
            || (p.method.of(&p.request_head) == Some("CONNECT") && (200..300).contains(&code));
        if leaves_http {
            self.answered(None);
            self.off = true;
            return HeadRead::Whole(len, None);
        }
        let no_body = p.method.of(&p.request_head) == Some("HEAD") || code == 204 || code == 304;
        let kind = if no_body {
            BodyKind::None
        } else {
            kind.unwrap_or(BodyKind::UntilClose)
        };
        HeadRead::Whole(len, Some(kind))
    }

    /// The oldest request's answer is complete (or it failed): keep it.
    fn answered(&mut self, failure: Option<Failure>) {
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        let at = p.started.saturating_duration_since(self.base.0).as_millis() as u64;
        self.inspector.record(Entry {
            seq: 0,
            at_ms: self.base.1 + at,
            service: self.service.clone(),
            request_id: p.request_id,
            refused_id: None,
            method: Some(p.method),
            target: Some(p.target),
            status: p.status,
            duration_us: p.started.elapsed().as_micros() as u64,
            wait_us: p.wait_us,
            bytes_in: p.request.bytes,
            bytes_out: p.response.bytes,
            failure,
            request_head: Some(p.request_head.into_boxed_slice()),
            response_head: p.response_head,
            request_body_len: p.request.body_len,
            request_body: p.request.captured(),
            response_body: p.response.captured(),
        });
    }

    /// Stop watching because the answer could not be followed; the request waiting for it is
    /// kept with why.
    fn stop(&mut self, code: &'static str, message: &str) {
        self.answered(Some(Failure {
            code,
            who: "local_app",
            message: message.into(),
        }));
        self.pending.clear();
        self.off = true;
    }
}

impl TapObserver for HttpWatch {
    fn read(&mut self, bytes: &[u8]) {
        if !self.off {
            self.feed_request(bytes);
        }
    }

    fn wrote(&mut self, bytes: &[u8]) {
        if !self.off {
            self.feed_response(bytes);
        }
    }

    fn read_closed(&mut self) {
        self.closer.get_or_insert(Closer::Gateway);
    }

    fn shutdown(&mut self) {
        self.closer.get_or_insert(Closer::App);
    }
}

impl Drop for HttpWatch {
    /// The stream ended: an answer that runs until close is complete; any other request still
    /// waiting failed, and who ended the stream first says who failed.
    fn drop(&mut self) {
        if matches!(&self.resp, Dir::Body(b) if b.until_close()) && self.closer == Some(Closer::App)
        {
            self.answered(None);
        }
        while !self.pending.is_empty() {
            let answering = self.pending.front().is_some_and(|p| p.status.is_some());
            self.answered(Some(unfinished(self.closer, answering)));
        }
    }
}

/// Why a request still waiting when its stream ended failed, by who ended it first.
fn unfinished(closer: Option<Closer>, answering: bool) -> Failure {
    match (closer, answering) {
        (Some(Closer::App), false) => Failure {
            code: error_code::LOCAL_SERVICE_UNAVAILABLE,
            who: "local_app",
            message: "the app closed the connection without answering".into(),
        },
        (Some(Closer::App), true) => Failure {
            code: error_code::LOCAL_SERVICE_UNAVAILABLE,
            who: "local_app",
            message: "the app closed the connection in the middle of its answer".into(),
        },
        (Some(Closer::Gateway), _) => Failure {
            code: "cancelled",
            who: "gateway",
            message: "the gateway closed the stream before the answer was complete \
                              (the caller left, or the gateway stopped waiting)"
                .into(),
        },
        (None, _) => Failure {
            code: "cancelled",
            who: "agent",
            message: "the stream was closed by the agent (the service changed, or the \
                              tunnel ended)"
                .into(),
        },
    }
}

/// Feed `data` to `body`, counting it into `side` (the message it belongs to, if one is
/// waiting): how it went and how many bytes were the body's.
fn follow(body: &mut Body, data: &[u8], mut side: Option<&mut Side>) -> (Progress, usize) {
    let progress = body.feed(data, |c| {
        if let Some(s) = side.as_deref_mut() {
            s.content(c);
        }
    });
    let used = match progress {
        Progress::Done(n) => n,
        Progress::More | Progress::Broken => data.len(),
    };
    if let Some(s) = side {
        s.bytes += used as u64;
    }
    (progress, used)
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
