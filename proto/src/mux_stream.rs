//! One multiplexed stream as tokio `AsyncRead + AsyncWrite`, bound to the life of its
//! connection: once the connection's driver has ended, a read or write still waiting fails
//! with `ConnectionAborted` instead of waiting forever. (yamux 0.14 drops its stream table on
//! a local close without waking the streams' readers and writers; a task reading a control
//! stream would then outlive its tunnel.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A multiplexed stream, usable with tokio I/O.
pub struct MuxStream {
    inner: Compat<yamux::Stream>,
    ended: Pin<Box<WaitForCancellationFutureOwned>>,
    /// For a stream this side opened: its place under the open-stream cap.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxStream").finish_non_exhaustive()
    }
}

impl MuxStream {
    /// Wrap a yamux stream of the connection whose end is signalled by `done`.
    pub(crate) fn new(
        stream: yamux::Stream,
        done: &CancellationToken,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            inner: stream.compat(),
            ended: Box::pin(done.clone().cancelled_owned()),
            _permit: permit,
        }
    }

    /// `Pending` from the stream: turned into an error once the connection has ended.
    fn pending_or_aborted<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.ended.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the multiplexed connection ended",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => self.pending_or_aborted(cx),
            ready => ready,
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Pending => self.pending_or_aborted(cx),
            ready => ready,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending_or_aborted(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.pending_or_aborted(cx),
            ready => ready,
        }
    }
}
