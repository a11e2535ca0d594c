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
    /// The stream just accepted `bytes` for writing (a vectored write reports each slice's
    /// accepted part in turn).
    fn wrote(&mut self, _bytes: &[u8]) {}
    /// The stream's read side ended: end of file or an error.
    fn read_closed(&mut self) {}
    /// The stream's writer shut its write side down (no more bytes will be written).
    fn shutdown(&mut self) {}
}

/// An observer that may be absent (a stream nobody needs to watch costs one branch).
impl<T: TapObserver> TapObserver for Option<T> {
    fn read(&mut self, bytes: &[u8]) {
        if let Some(o) = self {
            o.read(bytes);
        }
    }
    fn wrote(&mut self, bytes: &[u8]) {
        if let Some(o) = self {
            o.wrote(bytes);
        }
    }
    fn read_closed(&mut self) {
        if let Some(o) = self {
            o.read_closed();
        }
    }
    fn shutdown(&mut self) {
        if let Some(o) = self {
            o.shutdown();
        }
    }
}

/// Two observers watching the same stream, in order.
impl<A: TapObserver, B: TapObserver> TapObserver for (A, B) {
    fn read(&mut self, bytes: &[u8]) {
        self.0.read(bytes);
        self.1.read(bytes);
    }
    fn wrote(&mut self, bytes: &[u8]) {
        self.0.wrote(bytes);
        self.1.wrote(bytes);
    }
    fn read_closed(&mut self) {
        self.0.read_closed();
        self.1.read_closed();
    }
    fn shutdown(&mut self) {
        self.0.shutdown();
        self.1.shutdown();
    }
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

    /// The observer, to tell it what the owner knows.
    pub fn observer_mut(&mut self) -> &mut O {
        &mut self.observer
    }
}

impl<S: AsyncRead + Unpin, O: TapObserver> AsyncRead for Tap<S, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining();
        let me = &mut *self;
        let polled = Pin::new(&mut me.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            me.observer.read(&buf.filled()[before..]);
        } else {
            match &polled {
                Poll::Ready(Ok(())) if room > 0 => me.observer.read_closed(),
                Poll::Ready(Err(_)) => me.observer.read_closed(),
                _ => {}
            }
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
            me.observer.wrote(&data[..n.min(data.len())]);
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
            let mut left = n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let part = left.min(b.len());
                me.observer.wrote(&b[..part]);
                left -= part;
            }
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
        let me = &mut *self;
        let polled = Pin::new(&mut me.inner).poll_shutdown(cx);
        if polled.is_ready() {
            me.observer.shutdown();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    struct Seen {
        read: Vec<u8>,
        written: Vec<u8>,
        read_closed: bool,
        shut: bool,
    }

    impl TapObserver for Seen {
        fn read(&mut self, bytes: &[u8]) {
            self.read.extend_from_slice(bytes);
        }
        fn wrote(&mut self, bytes: &[u8]) {
            self.written.extend_from_slice(bytes);
        }
        fn read_closed(&mut self) {
            self.read_closed = true;
        }
        fn shutdown(&mut self) {
            self.shut = true;
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
        assert_eq!(tap.observer().written, payload);
        assert_eq!(tap.observer().read, b"reply bytes");
        assert!(tap.observer().read_closed, "the far end's close is seen");
        assert!(!tap.observer().shut);
        tap.shutdown().await.unwrap();
        assert!(tap.observer().shut);
    }
}
