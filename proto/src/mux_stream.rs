//! One multiplexed stream as tokio `AsyncRead + AsyncWrite`, bound to the life of its
//! connection: once the connection's driver has ended, a read or write still waiting fails
//! with `ConnectionAborted` instead of waiting forever. (yamux 0.14 drops its stream table on
//! a local close without waking the streams' readers and writers; a task reading a control
//! stream would then outlive its tunnel.) The driver wakes every stream of its connection as it
//! ends ([`StreamWakers`]); a waiting stream only registers its waker (two atomics), so the
//! read and write path takes no lock.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

/// The wakers of one connection's streams, woken all at once when its driver ends.
#[derive(Debug, Default)]
pub(crate) struct StreamWakers(Mutex<Vec<Weak<AtomicWaker>>>);

impl StreamWakers {
    /// A waker slot for a new stream (taken once per stream, not per read).
    fn add(&self) -> Arc<AtomicWaker> {
        let waker = Arc::new(AtomicWaker::new());
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() >= 64 && list.len().is_power_of_two() {
            list.retain(|w| w.strong_count() > 0);
        }
        list.push(Arc::downgrade(&waker));
        waker
    }

    /// Wake every stream still alive (the connection has ended).
    pub(crate) fn wake_all(&self) {
        let list = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for w in list.iter().filter_map(Weak::upgrade) {
            w.wake();
        }
    }
}

/// A multiplexed stream, usable with tokio I/O.
pub struct MuxStream {
    inner: Compat<yamux::Stream>,
    /// Cancelled when the connection's driver has ended.
    done: CancellationToken,
    /// Woken by the driver as it ends.
    waker: Arc<AtomicWaker>,
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
        wakers: &StreamWakers,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            inner: stream.compat(),
            done: done.clone(),
            waker: wakers.add(),
            _permit: permit,
        }
    }

    /// `Pending` from the stream: turned into an error once the connection has ended. The
    /// waker is registered before the check, so an end between the two still wakes us.
    fn pending_or_aborted<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        self.waker.register(cx.waker());
        if self.done.is_cancelled() {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the multiplexed connection ended",
            )))
        } else {
            Poll::Pending
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
