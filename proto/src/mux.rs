//! The yamux driver: one task owns a `yamux::Connection`, keeps polling it for inbound streams
//! (which is what drives all of its I/O) and serves requests for new outbound streams.
//!
//! Callers see the [`Mux`] trait: open a stream, close the connection, wait for it to end.
//! Streams come out as tokio `AsyncRead + AsyncWrite` ([`MuxStream`]); shutting down the write
//! half sends a yamux FIN, so half-close is preserved end to end.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::task::Poll;

use futures::{AsyncRead as FuturesRead, AsyncWrite as FuturesWrite};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use yamux::Mode;

use crate::coalesce::CoalescingWriter;
use crate::tuning;

pub use crate::mux_stream::MuxStream;
use crate::mux_stream::StreamWakers;

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// The connection is closed (or its driver ended).
    #[error("multiplexed connection is closed")]
    Closed,
    /// yamux refused.
    #[error("yamux: {0}")]
    Yamux(#[from] yamux::ConnectionError),
    /// All the streams this side may open are open; the connection is fine.
    #[error("no free stream on the multiplexed connection")]
    TooManyStreams,
}

/// A multiplexed connection that can open streams. Kept small so the transport can be swapped.
pub trait Mux: Send + Sync {
    /// Open a new outbound stream.
    fn open(&self) -> impl Future<Output = Result<MuxStream, MuxError>> + Send;
    /// Ask the connection to close; streams end, the driver exits.
    fn close(&self);
    /// Whether the connection has ended.
    fn is_closed(&self) -> bool;
}

/// Handle to a yamux connection driven by [`spawn`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MuxHandle {
    open_tx: mpsc::Sender<oneshot::Sender<Result<yamux::Stream, MuxError>>>,
    close: CancellationToken,
    done: CancellationToken,
    wakers: Arc<StreamWakers>,
    /// One permit per stream this side may have open. yamux treats opening past its own
    /// stream limit as fatal to the whole connection, so opens are capped here first.
    open_permits: Arc<Semaphore>,
}

impl MuxHandle {
    /// Resolves when the connection has ended, for whatever reason.
    pub async fn closed(&self) {
        self.done.cancelled().await
    }
}

impl Mux for MuxHandle {
    async fn open(&self) -> Result<MuxStream, MuxError> {
        if self.done.is_cancelled() {
            return Err(MuxError::Closed);
        }
        let permit = self
            .open_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| MuxError::TooManyStreams)?;
        let (tx, rx) = oneshot::channel();
        self.open_tx.send(tx).await.map_err(|_| MuxError::Closed)?;
        let stream = rx.await.map_err(|_| MuxError::Closed)??;
        Ok(MuxStream::new(
            stream,
            &self.done,
            &self.wakers,
            Some(permit),
        ))
    }

    fn close(&self) {
        self.close.cancel();
    }

    fn is_closed(&self) -> bool {
        self.done.is_cancelled()
    }
}

/// The yamux configuration both sides use: explicit stream and window limits (the crate's default
/// would let one peer pin 1 GiB).
pub fn config() -> yamux::Config {
    config_with(tuning::YAMUX_MAX_STREAMS, tuning::YAMUX_WINDOW_HEADROOM)
}

/// Streams yamux tracks beyond the ones we open: the peer's control stream, and streams we
/// dropped that yamux has not yet taken out of its table.
const STREAM_SLACK: usize = 64;

/// A yamux configuration for a side that opens at most `max_streams` streams (clamped to
/// 1..=1024): yamux itself allows [`STREAM_SLACK`] more (it kills the whole connection when an
/// open passes its limit), with a connection receive window of 256 KiB per stream plus
/// `headroom` bytes: what one peer may have in flight towards us, so what one tunnel can cost.
pub fn config_with(max_streams: usize, headroom: usize) -> yamux::Config {
    let streams = max_streams.clamp(1, 1024) + STREAM_SLACK;
    let mut cfg = yamux::Config::default();
    // yamux asserts window >= 256 KiB * streams at each setter: lower the stream count (from the
    // default 512) before shrinking the window to fit it.
    cfg.set_max_num_streams(streams);
    cfg.set_max_connection_receive_window(Some(256 * 1024 * streams + headroom));
    cfg
}

/// How many inbound streams may wait for the consumer before new ones are refused (reset).
const INBOUND_BACKLOG: usize = 64;

/// Start driving a yamux connection over `io` on the current tokio runtime.
///
/// Returns the handle for opening streams and a receiver of inbound streams. If the receiver is
/// dropped or full, inbound streams are refused (reset) rather than queued without bound.
pub fn spawn<T>(io: T, mode: Mode) -> (MuxHandle, mpsc::Receiver<MuxStream>)
where
    T: FuturesRead + FuturesWrite + Unpin + Send + 'static,
{
    spawn_limited(
        io,
        mode,
        tuning::YAMUX_MAX_STREAMS,
        tuning::YAMUX_WINDOW_HEADROOM,
    )
}

/// [`spawn`] opening at most `max_streams` streams at once (past it, `open` fails with
/// [`MuxError::TooManyStreams`] and the connection goes on), with `headroom` bytes of receive
/// window beyond 256 KiB per stream. See [`config_with`].
pub fn spawn_limited<T>(
    io: T,
    mode: Mode,
    max_streams: usize,
    headroom: usize,
) -> (MuxHandle, mpsc::Receiver<MuxStream>)
where
    T: FuturesRead + FuturesWrite + Unpin + Send + 'static,
{
    let max_open = max_streams.clamp(1, 1024);
    let cfg = config_with(max_open, headroom);
    let (open_tx, open_rx) = mpsc::channel(64);
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_BACKLOG);
    let close = CancellationToken::new();
    let done = CancellationToken::new();
    // yamux writes a frame's header and body separately; buffered, a frame reaches the
    // transport as one write (one SSH packet), flushed by yamux when its queue is empty.
    let io = CoalescingWriter::new(tuning::MUX_WRITE_BUFFER, io);
    let conn = yamux::Connection::new(io, cfg, mode);
    let wakers = Arc::new(StreamWakers::default());
    let driver = drive(
        conn,
        open_rx,
        inbound_tx,
        close.clone(),
        done.clone(),
        wakers.clone(),
    );
    tokio::spawn(driver.instrument(tracing::debug_span!("yamux", ?mode)));
    (
        MuxHandle {
            open_tx,
            close,
            done,
            wakers,
            open_permits: Arc::new(Semaphore::new(max_open)),
        },
        inbound_rx,
    )
}

type OpenRequest = oneshot::Sender<Result<yamux::Stream, MuxError>>;

async fn drive<T>(
    mut conn: yamux::Connection<CoalescingWriter<T>>,
    mut open_rx: mpsc::Receiver<OpenRequest>,
    inbound_tx: mpsc::Sender<MuxStream>,
    close: CancellationToken,
    done: CancellationToken,
    wakers: Arc<StreamWakers>,
) where
    T: FuturesRead + FuturesWrite + Unpin + Send + 'static,
{
    let mut pending: VecDeque<OpenRequest> = VecDeque::new();
    let result = tokio::select! {
        r = poll_fn(|cx| poll_connection(cx, &mut conn, &mut open_rx, &mut pending, &inbound_tx, &done, &wakers)) => r,
        _ = close.cancelled() => {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                poll_fn(|cx| conn.poll_close(cx)),
            )
            .await;
            Ok(())
        }
    };
    match result {
        Ok(()) => tracing::debug!("yamux connection closed"),
        Err(e) => tracing::debug!(error = %e, "yamux connection ended with an error"),
    }
    for req in pending.drain(..) {
        let _ = req.send(Err(MuxError::Closed));
    }
    open_rx.close();
    while let Ok(req) = open_rx.try_recv() {
        let _ = req.send(Err(MuxError::Closed));
    }
    done.cancel();
    wakers.wake_all();
}

fn poll_connection<T>(
    cx: &mut std::task::Context<'_>,
    conn: &mut yamux::Connection<CoalescingWriter<T>>,
    open_rx: &mut mpsc::Receiver<OpenRequest>,
    pending: &mut VecDeque<OpenRequest>,
    inbound_tx: &mpsc::Sender<MuxStream>,
    done: &CancellationToken,
    wakers: &StreamWakers,
) -> Poll<Result<(), yamux::ConnectionError>>
where
    T: FuturesRead + FuturesWrite + Unpin + Send + 'static,
{
    while let Poll::Ready(Some(req)) = open_rx.poll_recv(cx) {
        pending.push_back(req);
    }
    while !pending.is_empty() {
        match conn.poll_new_outbound(cx) {
            Poll::Ready(Ok(stream)) => {
                if let Some(req) = pending.pop_front() {
                    let _ = req.send(Ok(stream));
                }
            }
            Poll::Ready(Err(e)) => {
                // Opening failed (e.g. stream limit): tell the one caller; the connection may
                // still be usable, so keep driving it unless it is closed.
                let closed = matches!(e, yamux::ConnectionError::Closed);
                if let Some(req) = pending.pop_front() {
                    let _ = req.send(Err(MuxError::Yamux(e)));
                }
                if closed {
                    return Poll::Ready(Ok(()));
                }
            }
            Poll::Pending => break,
        }
    }
    loop {
        match conn.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(stream))) => {
                if inbound_tx
                    .try_send(MuxStream::new(stream, done, wakers, None))
                    .is_err()
                {
                    tracing::debug!("inbound stream refused: backlog full or nobody listening");
                }
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        }
    }
}
