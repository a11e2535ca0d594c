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

use futures::io::{AsyncRead as FuturesRead, AsyncWrite as FuturesWrite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Smallest and largest part of a reader's buffer offered to one yamux read.
const MIN_READ: usize = 2 * 1024;
const MAX_READ: usize = 256 * 1024;

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
///
/// yamux reads into initialised memory (`futures::io`), tokio readers hand out uninitialised
/// buffers; `tokio_util`'s bridge zero-fills the whole free part of the reader's buffer on every
/// read, and on every poll that finds nothing yet (hyper's buffer is 8 KiB and grows to 400 KiB:
/// that memset was the gateway's largest cost per request). This stream offers only as much as
/// the last read suggests it needs (2 KiB at least), doubling after a read that filled it, so a
/// small message costs a small memset and a bulk transfer still reads big.
pub struct MuxStream {
    inner: yamux::Stream,
    /// How much of the reader's buffer the next read offers.
    read_hint: usize,
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
            inner: stream,
            read_hint: MIN_READ,
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
        if buf.remaining() == 0 {
            // Nothing can be read into no room (yamux would wait for data it cannot hand over).
            return Poll::Ready(Ok(()));
        }
        let offer = buf.remaining().min(self.read_hint);
        let dst = buf.initialize_unfilled_to(offer);
        match FuturesRead::poll_read(Pin::new(&mut self.inner), cx, dst) {
            Poll::Ready(Ok(n)) => {
                self.read_hint = if n == offer {
                    (offer * 2).clamp(MIN_READ, MAX_READ)
                } else {
                    n.next_power_of_two().clamp(MIN_READ, MAX_READ)
                };
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.pending_or_aborted(cx),
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match FuturesWrite::poll_write(Pin::new(&mut self.inner), cx, data) {
            Poll::Pending => self.pending_or_aborted(cx),
            ready => ready,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match FuturesWrite::poll_flush(Pin::new(&mut self.inner), cx) {
            Poll::Pending => self.pending_or_aborted(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match FuturesWrite::poll_close(Pin::new(&mut self.inner), cx) {
            Poll::Pending => self.pending_or_aborted(cx),
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use crate::mux::{spawn, Mode, Mux};

    /// Every byte arrives in order whatever the reader offers: a zero-sized buffer (which must
    /// not shrink later reads to nothing), tiny reads, and big ones that grow the offer.
    #[tokio::test]
    async fn reads_of_any_size_get_every_byte_and_a_full_buffer_never_looks_like_the_end() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (client, _) = spawn(a.compat(), Mode::Client);
        let (_server, mut inbound) = spawn(b.compat(), Mode::Server);
        let mut out = client.open().await.unwrap();
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            out.write_all(&sent).await.unwrap();
            out.shutdown().await.unwrap();
            out
        });
        let mut stream = inbound.recv().await.unwrap();
        // A read with no room returns at once and leaves the stream readable.
        let mut empty = [0u8; 0];
        let mut rb = ReadBuf::new(&mut empty);
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_read(cx, &mut rb))
            .await
            .unwrap();
        let mut got = vec![0u8; 7];
        stream.read_exact(&mut got).await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        got.extend_from_slice(&rest);
        assert_eq!(got.len(), payload.len());
        assert!(got == payload, "bytes arrive unchanged and in order");
        let _ = writer.await.unwrap();
    }
}
