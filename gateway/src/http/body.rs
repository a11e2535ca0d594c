//! The one body type every gateway response uses: streamed from upstream or a small buffer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

use crate::registry::InflightGuard;

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

/// A streamed body that keeps its request counted as in flight until it is finished or dropped,
/// so a draining tunnel closes only after the last response byte left.
pub struct Tracked<B> {
    inner: B,
    _guard: InflightGuard,
}

impl<B> Tracked<B> {
    /// Wrap `inner`, holding `guard` for its lifetime.
    pub fn new(inner: B, guard: InflightGuard) -> Self {
        Self {
            inner,
            _guard: guard,
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
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
