//! Copying bytes both ways between two streams (a tunnel stream and a local or public TCP
//! connection) without holding buffers while the connection is idle.
//!
//! `tokio::io::copy_bidirectional_with_sizes` allocates and zero-fills a buffer per direction
//! for the whole life of the connection. The gateway keeps kept-alive HTTP connections to each
//! agent pooled, and each is one spliced stream on the agent: with 64 KiB per direction, 32
//! pooled streams held 4 MiB on the agent after a load test. Here each read goes into a chunk
//! on the poll's own stack (not zero-filled) and is written from there at once; only bytes the
//! writer cannot take yet are copied to the heap, and that buffer is given back when the
//! reader has nothing more. An idle connection holds no buffer at all.
//!
//! Half-close is preserved: when one side ends, the other side's write half is shut down and
//! the other direction goes on until it ends too.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read takes, and the largest piece written at once.
const CHUNK: usize = crate::tuning::SPLICE_BUFFER;

/// How much one direction copies in one poll before letting other tasks run.
const PER_POLL: u64 = 16 * CHUNK as u64;

/// Copy `a` → `b` and `b` → `a` until both directions have ended; returns the bytes copied
/// each way (`a` → `b` first). Each side's write half is shut down after the other side ended.
pub async fn copy_both_ways<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    poll_fn(|cx| {
        let ab = a_to_b.poll_copy(cx, &mut *a, &mut *b)?;
        let ba = b_to_a.poll_copy(cx, &mut *b, &mut *a)?;
        match (ab, ba) {
            (Poll::Ready(ab), Poll::Ready(ba)) => Poll::Ready(Ok((ab, ba))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction's state.
#[derive(Debug, Default)]
struct Direction {
    /// Bytes read that the writer has not taken yet; unallocated while nothing waits.
    pending: Vec<u8>,
    /// How much of `pending` has been written.
    written: usize,
    /// The reader has ended.
    read_done: bool,
    /// The writer has been shut down: this direction is over.
    done: bool,
    /// What went to the writer.
    out: Output,
}

/// What one direction wrote: its own fields, so a write can borrow them while it reads from
/// `pending`.
#[derive(Debug, Default)]
struct Output {
    /// Bytes copied.
    amount: u64,
    /// Written since the last flush.
    need_flush: bool,
}

impl Direction {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.out.amount));
        }
        let start = self.out.amount;
        loop {
            // What the writer could not take before goes first.
            while self.written < self.pending.len() {
                let n = ready!(self.out.write(cx, writer, &self.pending[self.written..]))?;
                self.written += n;
            }
            self.pending.clear();
            self.written = 0;
            if self.read_done {
                ready!(self.out.poll_flush(cx, writer))?;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.out.amount));
            }
            if self.out.amount - start >= PER_POLL {
                // A fast pair of streams must not keep this task to itself.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                Poll::Pending => return self.idle(cx, writer),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if buf.filled().is_empty() => self.read_done = true,
                Poll::Ready(Ok(())) => {
                    let data = buf.filled();
                    let mut off = 0;
                    while off < data.len() {
                        match self.out.write(cx, writer, &data[off..]) {
                            Poll::Ready(n) => off += n?,
                            Poll::Pending => {
                                // The writer is behind: keep the rest until it catches up.
                                self.pending.extend_from_slice(&data[off..]);
                                return Poll::Pending;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Nothing to read for now: flush what was written and give the buffer back.
    fn idle<W>(&mut self, cx: &mut Context<'_>, writer: &mut W) -> Poll<io::Result<u64>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        self.pending = Vec::new();
        ready!(self.out.poll_flush(cx, writer))?;
        Poll::Pending
    }
}

impl Output {
    /// Write some of `data`; a writer that takes nothing is an error.
    fn write<W>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
        data: &[u8],
    ) -> Poll<io::Result<usize>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let n = ready!(Pin::new(&mut *writer).poll_write(cx, data))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.amount += n as u64;
        self.need_flush = true;
        Poll::Ready(Ok(n))
    }

    /// Flush the writer if anything was written since the last flush.
    fn poll_flush<W>(&mut self, cx: &mut Context<'_>, writer: &mut W) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.need_flush {
            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
            self.need_flush = false;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
