//! The agent's local leg with `TCP_QUICKACK` re-armed after every read. An app that writes a
//! response's head and body in two writes with Nagle on (Python's `http.server` and many small
//! apps do) has its second write held until we ACK the first; on a long-lived local
//! connection Linux leaves quick-ACK mode and delays that ACK by 40 ms, so every request
//! would stall for 40 ms. Quick-ACK mode is not sticky (the kernel drops back on its own), so
//! it is set again after each read: one `setsockopt` per read, against 40 ms per request.
//! Elsewhere than Linux this is the plain socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A local connection that ACKs at once what it reads.
pub struct QuickAck(TcpStream);

impl QuickAck {
    /// Wrap `stream`, in quick-ACK mode from the start.
    pub fn new(stream: TcpStream) -> Self {
        rearm(&stream);
        Self(stream)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn rearm(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn rearm(_: &TcpStream) {}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            rearm(&self.0);
        }
        r
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
