//! Tests of [`copy_both_ways`]: every byte both ways under backpressure, half-close, the ends'
//! errors, and no buffer held while idle.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::*;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Both directions at once through 1 KiB pipes (the writer is behind on almost every read):
/// 3 MB each way arrive whole, and the counts say so.
#[tokio::test]
async fn bulk_both_ways_through_slow_pipes_arrives_whole() {
    let (left, mut left_far) = duplex(1024);
    let (right, mut right_far) = duplex(1024);
    let relay = tokio::spawn(async move { copy_both_ways(&mut left_far, &mut right_far).await });
    let (up, down) = (pattern(3_000_000, 1), pattern(3_000_000, 7));
    let (up2, down2) = (up.clone(), down.clone());
    let (mut lr, mut lw) = tokio::io::split(left);
    let (mut rr, mut rw) = tokio::io::split(right);
    let send_up = tokio::spawn(async move {
        lw.write_all(&up2).await.unwrap();
        lw.shutdown().await.unwrap();
    });
    let send_down = tokio::spawn(async move {
        rw.write_all(&down2).await.unwrap();
        rw.shutdown().await.unwrap();
    });
    let mut got_up = Vec::new();
    let mut got_down = Vec::new();
    let (a, b) = tokio::join!(rr.read_to_end(&mut got_up), lr.read_to_end(&mut got_down));
    a.unwrap();
    b.unwrap();
    send_up.await.unwrap();
    send_down.await.unwrap();
    assert!(
        got_up == up && got_down == down,
        "bytes arrive unchanged and in order"
    );
    assert_eq!(relay.await.unwrap().unwrap(), (3_000_000, 3_000_000));
}

/// One side ends its writes; the other can still answer, and only then does the copy end.
#[tokio::test]
async fn a_half_closed_side_still_gets_its_answer() {
    let (mut client, mut client_far) = duplex(64 * 1024);
    let (mut server, mut server_far) = duplex(64 * 1024);
    let relay = tokio::spawn(async move { copy_both_ways(&mut client_far, &mut server_far).await });
    client.write_all(b"question").await.unwrap();
    client.shutdown().await.unwrap();
    let mut asked = Vec::new();
    server.read_to_end(&mut asked).await.unwrap();
    assert_eq!(asked, b"question", "the server sees the end of the request");
    assert!(!relay.is_finished(), "the other direction is still open");
    server.write_all(b"answer").await.unwrap();
    server.shutdown().await.unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"answer");
    assert_eq!(relay.await.unwrap().unwrap(), (8, 6));
}

/// A side that fails mid-stream ends the copy with its error.
#[tokio::test]
async fn a_side_failing_mid_stream_ends_the_copy_with_its_error() {
    let (_keep, mut far) = duplex(1024);
    let mut failing = Failing;
    let err = copy_both_ways(&mut failing, &mut far).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

/// A writer that takes nothing is an error, not a busy loop.
#[tokio::test]
async fn a_writer_taking_nothing_is_an_error() {
    let (mut near, mut far) = duplex(1024);
    near.write_all(b"x").await.unwrap();
    let mut zero = ZeroWriter;
    let err = copy_both_ways(&mut far, &mut zero).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WriteZero);
}

/// After a message goes through and the reader has nothing more, no buffer is held, even when
/// the writer was behind on part of it.
#[test]
fn an_idle_direction_holds_no_buffer() {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let (mut src, mut src_far) = duplex(256 * 1024);
    let (mut dst_far, mut dst) = duplex(4 * 1024);
    let message = pattern(100_000, 3);
    let mut dir = Direction::default();
    // Written straight from the poll's chunk, the rest kept while the 4 KiB pipe is full.
    assert!(Pin::new(&mut src)
        .poll_write(&mut cx, &message)
        .map(|r| r.unwrap() == message.len())
        .is_ready());
    assert!(dir
        .poll_copy(&mut cx, &mut src_far, &mut dst_far)
        .is_pending());
    assert!(
        dir.pending.capacity() > 0,
        "the writer is behind: the rest is kept"
    );
    // The far end drains everything; the direction catches up and finds nothing more to read.
    let mut got = Vec::new();
    let mut sink = [0u8; 8192];
    while got.len() < message.len() {
        let _ = dir.poll_copy(&mut cx, &mut src_far, &mut dst_far);
        let mut rb = ReadBuf::new(&mut sink);
        if let Poll::Ready(Ok(())) = Pin::new(&mut dst).poll_read(&mut cx, &mut rb) {
            got.extend_from_slice(rb.filled());
        }
    }
    assert!(got == message);
    assert!(dir
        .poll_copy(&mut cx, &mut src_far, &mut dst_far)
        .is_pending());
    assert_eq!(dir.pending.capacity(), 0, "idle: the buffer is given back");
    assert_eq!(dir.out.amount, message.len() as u64);
}

struct Failing;

impl AsyncRead for Failing {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
    }
}

impl AsyncWrite for Failing {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct ZeroWriter;

impl AsyncRead for ZeroWriter {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for ZeroWriter {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(0))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
