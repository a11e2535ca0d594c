//! The write buffer between yamux and the SSH channel. yamux writes a frame's 12-byte header and
//! its body separately, and russh turns every write into an SSH packet (length, padding, MAC);
//! buffered, a frame, or several frames queued together, go out as one packet, flushed when
//! yamux flushes. Unlike `futures::io::BufWriter` the buffer starts empty and grows only as far
//! as the traffic needs: an idle tunnel, which writes nothing but small control frames, keeps a
//! few hundred bytes instead of a full buffer (a gateway holds thousands of idle tunnels).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::AsyncWrite;

/// A write buffer of at most `limit` bytes in front of `inner`, allocated as it fills.
#[derive(Debug)]
pub struct CoalescingWriter<W> {
    inner: W,
    buf: Vec<u8>,
    /// How much of `buf` has already been written to `inner`.
    written: usize,
    limit: usize,
}

impl<W> CoalescingWriter<W> {
    /// Buffer writes to `inner`, holding at most `limit` bytes.
    pub fn new(limit: usize, inner: W) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            written: 0,
            limit,
        }
    }

    /// The wrapped writer (reads on a duplex transport go straight to it).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Bytes allocated for the buffer (for tests and memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl<W: AsyncWrite + Unpin> CoalescingWriter<W> {
    /// Write out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.buf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CoalescingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.buf.len() + data.len() > me.limit {
            ready!(me.poll_drain(cx))?;
        }
        if data.len() >= me.limit {
            return Pin::new(&mut me.inner).poll_write(cx, data);
        }
        me.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl<W: futures::AsyncRead + Unpin> futures::AsyncRead for CoalescingWriter<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::AsyncWriteExt;

    /// Records each write it is given as one "packet".
    #[derive(Default)]
    struct Packets(Vec<Vec<u8>>);

    impl AsyncWrite for Packets {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn header_and_body_leave_as_one_write_and_idle_buffers_stay_small() {
        let mut w = CoalescingWriter::new(64 * 1024, Packets::default());
        assert_eq!(w.capacity(), 0, "nothing allocated before the first write");
        w.write_all(&[1; 12]).await.unwrap();
        w.write_all(&[2; 100]).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.get_mut().0, vec![[vec![1; 12], vec![2; 100]].concat()]);
        assert!(w.capacity() < 1024, "a small frame keeps a small buffer");
    }

    #[tokio::test]
    async fn past_the_limit_it_drains_first_and_big_writes_go_straight_through() {
        let mut w = CoalescingWriter::new(100, Packets::default());
        w.write_all(&[1; 60]).await.unwrap();
        w.write_all(&[2; 60]).await.unwrap(); // would pass 100: the first 60 go out alone
        w.write_all(&[3; 150]).await.unwrap(); // the buffered 60, then 150 unbuffered
        w.close().await.unwrap();
        let sizes: Vec<usize> = w.get_mut().0.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![60, 60, 150]);
        let all: Vec<u8> = w.get_mut().0.concat();
        assert_eq!(all, [vec![1; 60], vec![2; 60], vec![3; 150]].concat());
    }
}
