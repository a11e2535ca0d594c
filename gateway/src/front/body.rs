//! The front door's body wrappers: the caller's request body on its way upstream (counted,
//! cut at the limit, faults blamed on the caller), the response body that finishes the
//! request's record when it ends, and the app's response body that hands its pooled
//! connection back once it is complete.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::record::{Facts, RequestRecord};
use crate::body::data_len;

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

/// What went wrong with a caller's request body (kept so the error can be mapped to the
/// caller, not to the app, when the upstream request then fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// Nothing (yet).
    None = 0,
    /// Broken framing (a bad chunk size, a cut connection).
    Malformed = 1,
    /// More bytes than `limits.max_body_bytes`.
    TooLarge = 2,
}

/// The error a caller's body yields to the upstream client.
#[derive(Debug, thiserror::Error)]
pub enum CallerBodyError {
    /// The caller's framing broke.
    #[error("malformed request body: {0}")]
    Malformed(hyper::Error),
    /// The caller sent more than the limit.
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
}

/// A caller's request body on its way upstream: counts its bytes into the request's record,
/// cuts it past the body limit, and records a fault so the failure is blamed on the caller.
pub struct CallerBody {
    inner: hyper::body::Incoming,
    count: Arc<Facts>,
    limit: u64,
    fault: Arc<AtomicU8>,
}

impl CallerBody {
    /// Wrap `inner`, counting into `count`; `limit` 0 means none.
    pub fn new(
        inner: hyper::body::Incoming,
        count: Arc<Facts>,
        limit: u64,
        fault: Arc<AtomicU8>,
    ) -> Self {
        Self {
            inner,
            count,
            limit,
            fault,
        }
    }

    /// The fault recorded in `flag`.
    pub fn fault(flag: &AtomicU8) -> BodyFault {
        match flag.load(Ordering::Acquire) {
            1 => BodyFault::Malformed,
            2 => BodyFault::TooLarge,
            _ => BodyFault::None,
        }
    }
}

impl Body for CallerBody {
    type Data = Bytes;
    type Error = CallerBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let n = data_len(&polled);
        match polled {
            Poll::Ready(Some(Err(e))) => {
                self.fault
                    .store(BodyFault::Malformed as u8, Ordering::Release);
                Poll::Ready(Some(Err(CallerBodyError::Malformed(e))))
            }
            other => {
                let total = self.count.bytes_in.fetch_add(n, Ordering::Relaxed) + n;
                if self.limit > 0 && total > self.limit {
                    self.fault
                        .store(BodyFault::TooLarge as u8, Ordering::Release);
                    return Poll::Ready(Some(Err(CallerBodyError::TooLarge(self.limit))));
                }
                other.map(|o| o.map(|r| r.map_err(CallerBodyError::Malformed)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
