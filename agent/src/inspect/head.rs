//! Finding a head in the bytes of a stream for the inspector's watch: whole within one read
//! (parsed once, in place) or split across reads (carried, then found by a linear scan), and
//! where the parts httparse found lie in it.

use g2c_proto::http1::{head_end, BodyKind, MAX_HEAD};

use super::entry::Span;

/// What reading a head came to.
pub(super) enum Parsed {
    /// A whole head of this many bytes, followed by a body of this kind (`None`: the head
    /// was an interim answer, or one the watch has already dealt with).
    Head(usize, Option<BodyKind>),
    /// More bytes are needed.
    Partial,
    /// Not HTTP/1 (or an answer the watch cannot follow): stop watching.
    Bad,
}

/// Where `part` (a slice httparse took from `whole`) lies in `whole`.
pub(super) fn within(whole: &[u8], part: &[u8]) -> Option<Span> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= whole.len()).then(|| span(start, end))
}

/// A span of `text` from `start` to `end`.
pub(super) fn span(start: usize, end: usize) -> Span {
    Span {
        start: start as u32,
        end: end as u32,
    }
}

/// Where collecting a head got to.
pub(super) enum HeadStep<'a> {
    /// Not whole yet: the bytes so far, to carry to the next read.
    Partial(Vec<u8>),
    /// Too large, or nothing HTTP.
    Off,
    /// The whole head was read; its body's kind (see [`Parsed::Head`]), and the bytes after.
    Whole {
        kind: Option<BodyKind>,
        rest: &'a [u8],
    },
}

/// Collect a head from `buf` (carried over) and `data`, and have `read` read it. The common
/// case, a whole head within one read, is parsed once in place; a head split across reads is
/// copied, and its end found by a linear scan before it is parsed, so a head fed a byte at a
/// time still costs linear time.
pub(super) fn take_head<'a>(
    mut buf: Vec<u8>,
    mut data: &'a [u8],
    mut read: impl FnMut(&[u8]) -> Parsed,
) -> HeadStep<'a> {
    if buf.is_empty() {
        // Blank lines between messages are tolerated, as hyper does.
        let skip = data
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        data = &data[skip..];
        if data.is_empty() {
            return HeadStep::Partial(buf);
        }
        return match read(data) {
            Parsed::Head(n, kind) => HeadStep::Whole {
                kind,
                rest: &data[n..],
            },
            Parsed::Partial if data.len() <= MAX_HEAD => HeadStep::Partial(data.to_vec()),
            Parsed::Partial | Parsed::Bad => HeadStep::Off,
        };
    }
    let before = buf.len();
    buf.extend_from_slice(data);
    let from = before.saturating_sub(3);
    match head_end(&buf[from..]).map(|e| e + from) {
        Some(end) => match read(&buf[..end]) {
            Parsed::Head(n, kind) if n == end => HeadStep::Whole {
                kind,
                rest: &data[end - before..],
            },
            _ => HeadStep::Off,
        },
        None if buf.len() > MAX_HEAD => HeadStep::Off,
        None => HeadStep::Partial(buf),
    }
}
