//! A pass-through I/O adapter that shows an observer the bytes going by: the one place the
//! `AsyncRead + AsyncWrite` forwarding boilerplate lives, for the byte counters of the gateway
//! and the agent and for the gateway's request-framing watcher. The observer sees bytes as they
//! flow (a pooled connection can live for days; its traffic must show before it closes) and
//! cannot change them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a [`Tap`] reports to. Both methods default to doing nothing.
pub trait TapObserver: Unpin {
    /// `bytes` were just read from the stream, on their way to its reader.
    fn read(&mut self, _bytes: &[u8]) {}
    /// The stream just accepted `n` bytes for writing.
    fn wrote(&mut self, _n: usize) {}
}

/// `inner`, with every byte read and written reported to an observer.
#[derive(Debug)]
pub struct Tap<S, O> {
    inner: S,
    observer: O,
}

impl<S, O> Tap<S, O> {
    /// Tap `inner`, reporting to `observer`.
    pub fn new(inner: S, observer: O) -> Self {
        Self { inner, observer }
    }

    /// The tapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The observer, to read what it gathered.
    pub fn observer(&self) -> &O {
        &self.observer
    }
}

impl<S: AsyncRead + Unpin, O: TapObserver> AsyncRead for Tap<S, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let me = &mut *self;
        let polled = Pin::new(&mut me.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            me.observer.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin, O: TapObserver> AsyncWrite for Tap<S, O> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let polled = Pin::new(&mut me.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            me.observer.wrote(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let polled = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            me.observer.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    struct Seen {
        read: Vec<u8>,
        written: usize,
    }

    impl TapObserver for Seen {
        fn read(&mut self, bytes: &[u8]) {
            self.read.extend_from_slice(bytes);
        }
        fn wrote(&mut self, n: usize) {
            self.written += n;
        }
    }

    #[tokio::test]
    async fn the_observer_sees_every_byte_each_way_and_the_bytes_pass_unchanged() {
        let (near, mut far) = tokio::io::duplex(8);
        let mut tap = Tap::new(near, Seen::default());
        let payload: Vec<u8> = (0..200u8).collect();
        let echo = tokio::spawn(async move {
            let mut got = vec![0; 200];
            far.read_exact(&mut got).await.unwrap();
            far.write_all(b"reply bytes").await.unwrap();
            far.shutdown().await.unwrap();
            got
        });
        tap.write_all(&payload).await.unwrap();
        let mut reply = Vec::new();
        tap.read_to_end(&mut reply).await.unwrap();
        assert_eq!(echo.await.unwrap(), payload);
        assert_eq!(reply, b"reply bytes");
        assert_eq!(tap.observer().written, 200);
        assert_eq!(tap.observer().read, b"reply bytes");
    }
}
