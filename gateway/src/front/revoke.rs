//! A response body that ends when its key is revoked. The body fails (hyper then resets the
//! HTTP/2 stream or closes the HTTP/1 connection) rather than ending cleanly, so the caller
//! cannot take a cut-off stream for a complete one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::body::BodyError;

/// Why a response stopped.
#[derive(Debug, thiserror::Error)]
#[error("the API key of this request was revoked")]
pub struct KeyRevoked;

/// `inner`, cut when `lease` is cancelled. The cancellation future is only boxed once the
/// inner body has to wait, so a response that is ready at once costs no allocation.
pub struct Revocable<B> {
    inner: B,
    lease: CancellationToken,
    waiting: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<B> Revocable<B> {
    /// Wrap `inner` under `lease`.
    pub fn new(inner: B, lease: CancellationToken) -> Self {
        Self {
            inner,
            lease,
            waiting: None,
        }
    }
}

impl<B> Body for Revocable<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.lease.is_cancelled() {
            return Poll::Ready(Some(Err(KeyRevoked.into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => {}
            ready => return ready.map(|f| f.map(|r| r.map_err(Into::into))),
        }
        let this = &mut *self;
        let lease = &this.lease;
        let waiting = this
            .waiting
            .get_or_insert_with(|| Box::pin(lease.clone().cancelled_owned()));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(KeyRevoked.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_stream_fails_once_its_lease_is_cancelled() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, BodyError>>(4);
        let lease = CancellationToken::new();
        let mut body = Revocable::new(http_body_util::StreamBody::new(rx), lease.clone());
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"one"))))
            .unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "one");
        let cut = tokio::spawn(async move {
            let r = body.frame().await;
            drop(tx);
            r
        });
        lease.cancel();
        let err = cut.await.unwrap().unwrap().unwrap_err();
        assert!(err.is::<KeyRevoked>(), "{err}");
    }
}
