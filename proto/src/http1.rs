//! HTTP/1 message framing as the bytes go by, for the watchers that look at HTTP they do not
//! parse themselves: the gateway's request-smuggling watch and the agent's request inspector.
//! They never change the bytes; they only need to know where a head ends and where the body
//! after it ends, so they can find the next head. Pure byte functions: no I/O, no allocation
//! except to carry a line split across two reads, and never a panic on garbage.

/// Largest head a watcher buffers (hyper refuses larger ones with 431 anyway).
pub const MAX_HEAD: usize = 96 * 1024;
/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, and the proxy
/// ones of RFC 2616): never passed on by a proxy, never replayed.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];
/// Longest chunk-size line a watcher buffers.
const MAX_CHUNK_LINE: usize = 4096;

/// The position just past the first empty line (`\r\n\r\n` or `\n\n`), if any, in one pass:
/// the first `\n` that ends either pattern ends the earlier of the two.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.iter().enumerate().find_map(|(i, b)| {
        if *b != b'\n' {
            return None;
        }
        let after_cr = i > 0 && buf[i - 1] == b'\r';
        match buf.get(i + 1..) {
            Some([b'\n', ..]) => Some(i + 2),
            Some([b'\r', b'\n', ..]) if after_cr => Some(i + 3),
            _ => None,
        }
    })
}

/// The size of a chunk from its size line (without the `\n`), or `None` if it is not one.
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|b| *b == b';').next().unwrap_or_default();
    u64::from_str_radix(std::str::from_utf8(size).ok()?.trim(), 16).ok()
}

/// What a head reader made of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRead<T> {
    /// A whole head of this many bytes, and what the reader took from it.
    Whole(usize, T),
    /// The head goes on past these bytes.
    Partial,
    /// Not an HTTP/1 head: stop watching.
    Bad,
}

/// Where collecting a head got to.
#[derive(Debug)]
pub enum HeadStep<'a, T> {
    /// Not whole yet: the bytes so far, to carry to the next read.
    Partial(Vec<u8>),
    /// Too large, or not HTTP.
    Off,
    /// The whole head was read: what the reader took from it, and the bytes after it.
    Whole { value: T, rest: &'a [u8] },
}

/// Collect a head from `buf` (carried over from earlier reads) and `data`, and have `read`
/// read it (httparse, which says where a whole head ends). The common case, a whole head
/// within one read, is read once in place; a head split across reads is copied, and its end
/// found by a scan that starts just before the new bytes, so a head fed a byte at a time
/// still costs linear time. Blank lines between messages are skipped, as hyper does.
pub fn take_head<'a, T>(
    mut buf: Vec<u8>,
    mut data: &'a [u8],
    mut read: impl FnMut(&[u8]) -> HeadRead<T>,
) -> HeadStep<'a, T> {
    if buf.is_empty() {
        let skip = data
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        data = &data[skip..];
        if data.is_empty() {
            return HeadStep::Partial(buf);
        }
        return match read(data) {
            HeadRead::Whole(n, value) => HeadStep::Whole {
                value,
                rest: &data[n..],
            },
            HeadRead::Partial if data.len() <= MAX_HEAD => HeadStep::Partial(data.to_vec()),
            HeadRead::Partial | HeadRead::Bad => HeadStep::Off,
        };
    }
    let before = buf.len();
    buf.extend_from_slice(data);
    let from = before.saturating_sub(3);
    match head_end(&buf[from..]).map(|e| e + from) {
        Some(end) => match read(&buf[..end]) {
            HeadRead::Whole(n, value) if n == end => HeadStep::Whole {
                value,
                rest: &data[end - before..],
            },
            _ => HeadStep::Off,
        },
        None if buf.len() > MAX_HEAD => HeadStep::Off,
        None => HeadStep::Partial(buf),
    }
}

/// How a message's body is delimited, as its head (and, for a response, its request) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: the next head follows at once.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, then trailers.
    Chunked,
    /// A response without either: the body runs until the connection closes.
    UntilClose,
}

/// What feeding bytes to a [`Body`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All the bytes belonged to the body, which goes on.
    More,
    /// The body ended after this many of the bytes; the rest begin the next message.
    Done(usize),
    /// The framing is broken (a chunk line that is not one): stop watching.
    Broken,
}

#[derive(Debug)]
enum State {
    Length(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkEnd,
    Trailers(Vec<u8>),
    UntilClose,
    Done,
    Broken,
}

/// Follows one message body to its end, handing its content (chunk framing removed) to a
/// callback on the way.
#[derive(Debug)]
pub struct Body(State);

impl Body {
    /// A follower for a body of `kind`.
    pub fn new(kind: BodyKind) -> Self {
        Self(match kind {
            BodyKind::None | BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => State::ChunkSize(Vec::new()),
            BodyKind::UntilClose => State::UntilClose,
        })
    }

    /// Whether the body ended before any byte was fed (no body at all).
    pub fn is_done(&self) -> bool {
        matches!(self.0, State::Done)
    }

    /// Whether the body runs until the connection closes (so a close completes it).
    pub fn until_close(&self) -> bool {
        matches!(self.0, State::UntilClose)
    }

    /// Feed the next bytes of the connection; `content` sees the body's content bytes.
    pub fn feed(&mut self, data: &[u8], mut content: impl FnMut(&[u8])) -> Progress {
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            let state = std::mem::replace(&mut self.0, State::Broken);
            let (next, took) = step(state, rest, &mut content);
            self.0 = next;
            used += took;
            match self.0 {
                State::Done => return Progress::Done(used),
                State::Broken => return Progress::Broken,
                _ => {}
            }
        }
        match self.0 {
            State::Done => Progress::Done(used),
            State::Broken => Progress::Broken,
            _ => Progress::More,
        }
    }
}

/// One step of the body's state machine over `data`: the next state and how much it used.
fn step(state: State, data: &[u8], content: &mut impl FnMut(&[u8])) -> (State, usize) {
    match state {
        State::Length(n) => counted(n, data, content, State::Length, State::Done),
        State::ChunkData(n) => counted(n, data, content, State::ChunkData, State::ChunkEnd),
        State::ChunkEnd | State::ChunkSize(_) | State::Trailers(_) => chunk_lines(state, data),
        State::UntilClose => {
            content(data);
            (State::UntilClose, data.len())
        }
        done @ (State::Done | State::Broken) => (done, 0),
    }
}

/// `n` more bytes of content: the same state with fewer left, or `then` once all are seen.
fn counted(
    n: u64,
    data: &[u8],
    content: &mut impl FnMut(&[u8]),
    more: fn(u64) -> State,
    then: State,
) -> (State, usize) {
    let take = n.min(data.len() as u64) as usize;
    content(&data[..take]);
    let left = n - take as u64;
    (if left == 0 { then } else { more(left) }, take)
}

/// The line-shaped states of a chunked body: the CRLF after a chunk's data, a chunk-size line,
/// a trailer line.
fn chunk_lines(state: State, data: &[u8]) -> (State, usize) {
    match state {
        State::ChunkEnd => match data.iter().position(|b| *b == b'\n') {
            Some(nl) if data[..nl].iter().all(|b| *b == b'\r') && nl <= 1 => {
                (State::ChunkSize(Vec::new()), nl + 1)
            }
            None if data.iter().all(|b| *b == b'\r') && data.len() <= 1 => {
                (State::ChunkEnd, data.len())
            }
            _ => (State::Broken, 0),
        },
        State::ChunkSize(line) => {
            line_then(
                line,
                data,
                MAX_CHUNK_LINE,
                State::ChunkSize,
                |line| match chunk_size(line) {
                    Some(0) => State::Trailers(Vec::new()),
                    Some(n) => State::ChunkData(n),
                    None => State::Broken,
                },
            )
            .unwrap_or((State::Broken, 0))
        }
        State::Trailers(line) => line_then(line, data, MAX_HEAD, State::Trailers, |line| {
            if line.iter().all(|b| *b == b'\r') {
                State::Done
            } else {
                State::Trailers(Vec::new())
            }
        })
        .unwrap_or((State::Broken, 0)),
        other => (other, 0),
    }
}

/// Read one line (parsed in place when it lies within `data`); `then` judges it once whole,
/// `carry` keeps a partial line for the next read. `None` when the line grows past `max`.
fn line_then(
    mut line: Vec<u8>,
    data: &[u8],
    max: usize,
    carry: fn(Vec<u8>) -> State,
    then: impl FnOnce(&[u8]) -> State,
) -> Option<(State, usize)> {
    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
        line.extend_from_slice(data);
        return (line.len() <= max).then(|| (carry(line), data.len()));
    };
    let next = if line.is_empty() {
        then(&data[..nl])
    } else {
        line.extend_from_slice(&data[..nl]);
        then(&line)
    };
    Some((next, nl + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `stream` split at `split`; the content seen and where the body ended.
    fn follow(kind: BodyKind, stream: &[u8], split: usize) -> (Vec<u8>, Option<usize>) {
        let mut body = Body::new(kind);
        let mut seen = Vec::new();
        let mut end = None;
        let mut offset = 0;
        for part in [&stream[..split], &stream[split..]] {
            if end.is_some() {
                break;
            }
            match body.feed(part, |c| seen.extend_from_slice(c)) {
                Progress::Done(n) => end = Some(offset + n),
                Progress::More => {}
                Progress::Broken => return (seen, None),
            }
            offset += part.len();
        }
        (seen, end)
    }

    #[test]
    fn a_chunked_body_ends_after_its_trailers_wherever_the_reads_split() {
        let stream = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1";
        let body_len = stream.len() - b"GET / HTTP/1.1".len();
        for split in 0..=stream.len() {
            let (seen, end) = follow(BodyKind::Chunked, stream, split);
            assert_eq!(seen, b"hello world", "split {split}");
            assert_eq!(end, Some(body_len), "split {split}");
        }
    }

    #[test]
    fn a_counted_body_ends_at_its_length_and_until_close_never_does() {
        for split in 0..=8 {
            assert_eq!(
                follow(BodyKind::Length(5), b"abcdeGET", split),
                (b"abcde".to_vec(), Some(5))
            );
        }
        let mut b = Body::new(BodyKind::UntilClose);
        assert_eq!(b.feed(b"anything", |_| {}), Progress::More);
        assert!(b.until_close());
        assert!(Body::new(BodyKind::Length(0)).is_done());
        assert!(Body::new(BodyKind::None).is_done());
    }

    #[test]
    fn broken_chunk_framing_stops_the_follower_without_a_panic() {
        for junk in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\r\nhello\r\rX",
            &[b'1'; MAX_CHUNK_LINE + 10][..],
        ] {
            let mut b = Body::new(BodyKind::Chunked);
            assert_eq!(b.feed(junk, |_| {}), Progress::Broken, "{junk:?}");
            assert_eq!(b.feed(b"more", |_| {}), Progress::Broken);
        }
        let huge = format!("{:x}\r\n", u64::MAX);
        let mut b = Body::new(BodyKind::Chunked);
        assert_eq!(b.feed(huge.as_bytes(), |_| {}), Progress::More);
    }

    #[test]
    fn the_one_pass_head_end_finds_what_two_scans_would() {
        let two_scans = |buf: &[u8]| {
            let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
            let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
            crlf.into_iter().chain(lf).min()
        };
        // Every string of up to 7 bytes over the alphabet that matters.
        let alphabet = [b'\r', b'\n', b'a'];
        for len in 0..=7u32 {
            for mut code in 0..3usize.pow(len) {
                let mut buf = Vec::new();
                for _ in 0..len {
                    buf.push(alphabet[code % 3]);
                    code /= 3;
                }
                assert_eq!(head_end(&buf), two_scans(&buf), "{buf:?}");
            }
        }
    }

    #[test]
    fn chunk_size_lines_parse_with_extensions_and_refuse_junk() {
        assert_eq!(chunk_size(b"1a\r"), Some(26));
        assert_eq!(chunk_size(b"0;name=value\r"), Some(0));
        assert_eq!(chunk_size(b"zz\r"), None);
        assert_eq!(chunk_size(b"\xff\r"), None);
        assert_eq!(chunk_size(b"ffffffffffffffffff\r"), None);
    }

    /// A reader that takes a head's length from `head_end` and its first byte as the value.
    fn first_byte(head: &[u8]) -> HeadRead<u8> {
        match head_end(head) {
            Some(n) => HeadRead::Whole(n, head[0]),
            None if head.starts_with(b"!") => HeadRead::Bad,
            None => HeadRead::Partial,
        }
    }

    #[test]
    fn a_head_is_collected_wherever_the_reads_split_and_a_huge_one_is_refused() {
        let stream = b"\r\nGET / HTTP/1.1\r\nA: b\r\n\r\nbody";
        for split in 0..stream.len() {
            let (value, rest) = match take_head(Vec::new(), &stream[..split], first_byte) {
                HeadStep::Partial(buf) => match take_head(buf, &stream[split..], first_byte) {
                    HeadStep::Whole { value, rest } => (value, rest.to_vec()),
                    other => panic!("split {split}: {other:?}"),
                },
                // Whole within the first read: the rest is what follows it in both.
                HeadStep::Whole { value, rest } => (value, [rest, &stream[split..]].concat()),
                HeadStep::Off => panic!("split {split}: off"),
            };
            assert_eq!(
                (value, rest.as_slice()),
                (b'G', &b"body"[..]),
                "split {split}"
            );
        }
        let huge = vec![b'a'; MAX_HEAD + 1];
        assert!(matches!(
            take_head(Vec::new(), &huge, first_byte),
            HeadStep::Off
        ));
        assert!(matches!(
            take_head(Vec::new(), b"!junk", first_byte),
            HeadStep::Off
        ));
    }

    #[test]
    fn head_end_finds_either_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nrest"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
