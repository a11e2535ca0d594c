//! One request as the inspector keeps it, and the two JSON shapes it is shown in: the summary
//! of the list (and of `g2c-agent requests`) and the detail with headers and captured bodies.
//! Heads are kept as the bytes that went by, copied once, with the values of masked headers
//! and query parameters overwritten by `*` in the copy (so the secret is never kept; only its
//! length shows); they are parsed again only when someone opens the request.

use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;

/// Most body bytes kept per message when capture is on.
pub const CAPTURE: usize = 1024;

/// Why a request failed, and who failed, when it did not end in an answer from the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The error code the caller was (or would be) given, e.g. `local_service_unavailable`.
    pub code: &'static str,
    /// Who failed: `local_app`, `agent`, `gateway` or `caller`.
    pub who: &'static str,
    /// What happened, for a person.
    pub message: String,
}

/// The first bytes of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Up to [`CAPTURE`] bytes.
    pub bytes: Box<[u8]>,
    /// The body's whole length as seen.
    pub length: u64,
}

impl Captured {
    /// Whether the kept bytes are the whole body.
    pub fn complete(&self) -> bool {
        self.length == self.bytes.len() as u64
    }
}

/// Where a field lies in the request head's text (kept once; the method, path and request id
/// are read from it rather than copied again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    /// Where `part` (a slice httparse took from `whole`) lies in `whole`.
    pub fn within(whole: &[u8], part: &[u8]) -> Option<Self> {
        let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
        let end = start + part.len();
        (end <= whole.len()).then(|| Self::new(start, end))
    }

    /// The span's text in `head`.
    pub fn of<'a>(&self, head: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(head.get(self.start as usize..self.end as usize)?).ok()
    }
}

/// One request through the tunnel (or one the agent refused).
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// Position in the agent's sequence of requests (from 1, never reused).
    pub seq: u64,
    /// Unix milliseconds when the request's head arrived.
    pub at_ms: u64,
    /// The local service it was for.
    pub service: Arc<str>,
    /// The gateway's `X-Request-Id`, in the head, or given with a refusal.
    pub request_id: Option<Span>,
    /// The request id of a stream refused before any head was sent.
    pub refused_id: Option<Box<str>>,
    /// Method, in the head; `None` for a stream refused before the request was sent.
    pub method: Option<Span>,
    /// Path and query (secrets in the query masked), in the head.
    pub target: Option<Span>,
    /// The app's status (or the one the caller got for a refusal).
    pub status: Option<u16>,
    /// From the request's head to the end of the answer, microseconds.
    pub duration_us: u64,
    /// From the request's head to the answer's head, microseconds.
    pub wait_us: Option<u64>,
    /// Bytes of the request (head and body) sent to the app.
    pub bytes_in: u64,
    /// Bytes of the answer (head and body) sent back.
    pub bytes_out: u64,
    /// Why it failed, if it did not end in an answer.
    pub failure: Option<Failure>,
    /// The request head, masked.
    pub request_head: Option<Box<[u8]>>,
    /// The answer's head, masked.
    pub response_head: Option<Box<[u8]>>,
    /// The request body's length as seen (counted whether or not it was captured).
    pub request_body_len: u64,
    /// The request body's first bytes (capture on).
    pub request_body: Option<Captured>,
    /// The answer body's first bytes (capture on).
    pub response_body: Option<Captured>,
}

/// The list's view of an entry.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub seq: u64,
    pub at_ms: u64,
    pub service: &'a str,
    pub request_id: Option<&'a str>,
    pub method: Option<&'a str>,
    pub target: Option<&'a str>,
    pub status: Option<u16>,
    pub duration_us: u64,
    pub wait_us: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub error: Option<&'a Failure>,
    pub captured: bool,
}

/// One header line.
#[derive(Debug, Serialize)]
pub struct HeaderLine {
    pub name: String,
    pub value: String,
}

/// One side (request or answer) opened up.
#[derive(Debug, Serialize)]
pub struct Message {
    /// The start line (`GET /x HTTP/1.1`, `HTTP/1.1 200 OK`).
    pub line: String,
    pub headers: Vec<HeaderLine>,
    /// The captured body, if capture was on.
    pub body: Option<BodyView>,
}

/// A captured body for display.
#[derive(Debug, Serialize)]
pub struct BodyView {
    /// The bytes as text (invalid UTF-8 replaced).
    pub text: String,
    /// The same bytes, base64.
    pub base64: String,
    /// The whole body's length.
    pub length: u64,
    /// Whether more was sent than was kept.
    pub truncated: bool,
}

/// The detail view: summary, both sides, and whether it may be replayed.
#[derive(Debug, Serialize)]
pub struct Detail<'a> {
    #[serde(flatten)]
    pub summary: Summary<'a>,
    pub request: Option<Message>,
    pub response: Option<Message>,
    /// Whether the agent can send it again (its whole body is known).
    pub replayable: bool,
    /// Whether a replay must be confirmed (the method is not safe to repeat).
    pub confirm_replay: bool,
}

/// Methods whose repetition changes nothing: replayed without asking.
pub fn safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

impl Entry {
    fn in_head(&self, span: Option<Span>) -> Option<&str> {
        span?.of(self.request_head.as_deref()?)
    }

    /// The method.
    pub fn method(&self) -> Option<&str> {
        self.in_head(self.method)
    }

    /// Path and query, masked.
    pub fn target(&self) -> Option<&str> {
        self.in_head(self.target)
    }

    /// The gateway's request id.
    pub fn request_id(&self) -> Option<&str> {
        self.in_head(self.request_id).or(self.refused_id.as_deref())
    }

    /// The list's view.
    pub fn summary(&self) -> Summary<'_> {
        Summary {
            seq: self.seq,
            at_ms: self.at_ms,
            service: &self.service,
            request_id: self.request_id(),
            method: self.method(),
            target: self.target(),
            status: self.status,
            duration_us: self.duration_us,
            wait_us: self.wait_us,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            error: self.failure.as_ref(),
            captured: self.request_body.is_some() || self.response_body.is_some(),
        }
    }

    /// The detail view.
    pub fn detail(&self) -> Detail<'_> {
        Detail {
            summary: self.summary(),
            request: self
                .request_head
                .as_deref()
                .map(|h| message(h, self.request_body.as_ref())),
            response: self
                .response_head
                .as_deref()
                .map(|h| message(h, self.response_body.as_ref())),
            replayable: self.replayable(),
            confirm_replay: !self.method().is_some_and(safe_method),
        }
    }

    /// Whether everything needed to send it again was kept: a head, and a body that is
    /// empty or was captured whole.
    pub fn replayable(&self) -> bool {
        self.request_head.is_some()
            && match &self.request_body {
                Some(b) => b.complete(),
                None => self.request_body_len == 0,
            }
    }
}

/// Whether a kept value was masked (overwritten with `*`).
pub fn is_masked(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b == b'*')
}

/// Split a kept head into its start line and headers.
pub fn split_head(head: &[u8]) -> (String, Vec<HeaderLine>) {
    let head = String::from_utf8_lossy(head);
    let mut lines = head
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty());
    let line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| HeaderLine {
            name: n.trim().to_owned(),
            value: v.trim().to_owned(),
        })
        .collect();
    (line, headers)
}

fn message(head: &[u8], body: Option<&Captured>) -> Message {
    let (line, headers) = split_head(head);
    Message {
        line,
        headers,
        body: body.map(|b| BodyView::of(&b.bytes, b.length)),
    }
}

impl BodyView {
    /// The first bytes `kept` of a body of `length` bytes, for display.
    pub fn of(kept: &[u8], length: u64) -> Self {
        Self {
            text: String::from_utf8_lossy(kept).into_owned(),
            base64: base64::engine::general_purpose::STANDARD.encode(kept),
            length,
            truncated: length > kept.len() as u64,
        }
    }
}

/// Add `bytes` to `into`, keeping at most [`CAPTURE`] in all.
pub fn keep_prefix(into: &mut Vec<u8>, bytes: &[u8]) {
    let room = CAPTURE.saturating_sub(into.len());
    into.extend_from_slice(&bytes[..room.min(bytes.len())]);
}
