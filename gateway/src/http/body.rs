//! The one body type every gateway response uses (streamed from upstream or a small buffer),
//! and the wrappers that count bytes and close a request's record when its body ends.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

use super::record::RequestRecord;

/// Response body: boxed, streaming, with hyper's error type.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A body from bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Payload bytes in a polled frame (0 for trailers, errors and the end).
fn data_len<D: Buf, E>(polled: &Poll<Option<Result<Frame<D>, E>>>) -> u64 {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.data_ref().map_or(0, |d| d.remaining() as u64),
        _ => 0,
    }
}

/// A response body that counts the bytes sent and, when finished or dropped, closes its
/// request's record (metrics, audit line, in-flight count), so a draining tunnel closes only
/// after the last response byte left.
pub struct Tracked<B> {
    inner: B,
    record: Option<RequestRecord>,
    bytes: u64,
}

impl<B> Tracked<B> {
    /// Wrap `inner`; `record` is finished when the body is dropped.
    pub fn new(inner: B, record: RequestRecord) -> Self {
        Self {
            inner,
            record: Some(record),
            bytes: 0,
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            r.finish(self.bytes);
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.bytes += data_len(&polled);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that adds the bytes it yields to a shared counter.
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    /// Wrap `inner`, counting into `count`.
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.count.fetch_add(data_len(&polled), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
