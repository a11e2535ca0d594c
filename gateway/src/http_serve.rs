//! The serve loop every HTTP listener of the gateway shares (front door, backchannel, admin):
//! connection caps, optional TLS, HTTP/1.1 + HTTP/2 (with keep-alive pings), upgrades, the
//! first-request deadline and idle timeout ([`crate::conn_guard`]), header-read timeout, the
//! framing watcher, and three-step shutdown (stop accepting, drain for a bounded grace period,
//! then drop what is left). Each connection gets its own service from `make`, told who the
//! caller is.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::Either;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::body::ProxyBody;
use crate::conn_guard::{self, Activity, ConnCaps, ConnCounts, Deadlines, Verdict};
use crate::front::framing::{watched, AmbiguousFraming, Upgraded};

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The caller's connection, as every request on it shares it.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The caller's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Whether the peer is a proxy the operator trusts (`trusted_proxies`): only then are its
    /// `X-Forwarded-For` and `X-Request-Id` taken as given.
    pub trusted_proxy: bool,
}

/// The service one connection's requests go to: every listener's stack is one of these.
pub trait ConnService:
    Service<
        Request<Incoming>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The worker a connection is best served on, from the first bytes it sent (peeked, so they
/// stay for hyper); `None`: where it was accepted. See `front::steer`.
pub type Steer = Arc<dyn Fn(&[u8]) -> Option<usize> + Send + Sync>;

/// The number of request headers hyper allows when not told otherwise.
const HYPER_MAX_HEADERS: usize = 100;

/// How long a new connection's first bytes are waited for to pick its worker.
const STEER_WAIT: Duration = Duration::from_millis(50);
/// How many of a connection's first bytes are peeked at to pick its worker.
const STEER_PEEK: usize = 2048;

/// The worker `steer` picks for `tcp` from the bytes it has sent so far.
async fn steered(tcp: &TcpStream, steer: &Steer) -> Option<usize> {
    let mut head = [0u8; STEER_PEEK];
    let n = tokio::time::timeout(STEER_WAIT, tcp.peek(&mut head))
        .await
        .ok()?
        .ok()?;
    steer(&head[..n])
}

/// Serve the accepted `tcp` on a worker: the next one in turn, or with `steer`, the one its
/// first request picks (peeked on the worker that took it, moved if it is another).
fn to_worker<F, Fut>(
    workers: &crate::workers::Workers,
    steer: Option<Steer>,
    tasks: &TaskTracker,
    tcp: TcpStream,
    serve: F,
) where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(steer) = steer else {
        return workers.spawn_connection(tasks, tcp, serve);
    };
    let (to, moved) = (workers.clone(), tasks.clone());
    workers.spawn_connection(tasks, tcp, move |tcp| async move {
        match steered(&tcp, &steer).await {
            Some(i) if Some(i) != crate::workers::current() => {
                to.spawn_connection_to(i, &moved, tcp, serve)
            }
            _ => serve(tcp).await,
        }
    });
}

/// Settings of one HTTP listener.
#[derive(Clone)]
pub struct ServeOptions {
    /// Name for logs (`http`, `https`, `backchannel`, `admin`).
    pub name: &'static str,
    /// TLS acceptor, if the listener speaks TLS.
    pub tls: Option<TlsAcceptor>,
    /// Time allowed for a request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// Time in-flight requests get after shutdown starts.
    pub grace: Duration,
    /// Largest request head, bytes (431 past it).
    pub max_header_bytes: usize,
    /// Most request headers (431 past it).
    pub max_headers: usize,
    /// Where connection tasks are tracked.
    pub tasks: TaskTracker,
    /// The worker runtimes connections are served on; `None`: on the listener's own runtime.
    pub workers: Option<crate::workers::Workers>,
    /// Picks a connection's worker from the first bytes it sent (see [`Steer`]).
    pub steer: Option<Steer>,
    /// Caps on open connections.
    pub caps: ConnCaps,
    /// How long a connection may be idle (nothing started or in flight) before it is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (a peer that does not answer in as long is dropped).
    pub h2_keepalive: Duration,
    /// `g2c_http_connections_open{listener}`.
    pub open: prometheus::IntGaugeVec,
    /// `g2c_http_connections_refused_total{listener, reason}`.
    pub refused: prometheus::IntCounterVec,
    /// `g2c_http_connections_timed_out_total{listener, reason}`.
    pub timed_out: prometheus::IntCounterVec,
}

/// Serve on `listener` until `stop` resolves, then drain. `make` builds the service of each
/// connection.
pub async fn serve<M, S>(
    listener: TcpListener,
    opts: ServeOptions,
    make: M,
    stop: impl Future<Output = ()>,
) where
    M: Fn(ConnInfo) -> S,
    S: ConnService,
{
    let builder = Arc::new(builder(&opts));
    // Told to finish and close at shutdown; followed until they have.
    let drain = CancellationToken::new();
    let conns = TaskTracker::new();
    let counts = ConnCounts::new(
        opts.name,
        opts.caps.clone(),
        opts.open.clone(),
        opts.refused.clone(),
    );
    tracing::info!(listener = opts.name, addr = ?listener.local_addr().ok(), tls = opts.tls.is_some(), "listening");
    tokio::pin!(stop);
    while let Some((tcp, peer)) = crate::accept::next(&listener, &mut stop, opts.name).await {
        let trusted_proxy = crate::core::cidr::allowed(&opts.caps.exempt, peer.ip());
        let Some(slot) = counts.admit(peer.ip(), trusted_proxy) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = ConnInfo {
            peer,
            tls: opts.tls.is_some(),
            trusted_proxy,
        };
        let service = make(conn);
        let span = tracing::debug_span!("conn", listener = opts.name, %peer);
        let guard = Guard {
            first_by: tokio::time::Instant::now() + opts.header_read_timeout,
            idle: opts.idle_timeout,
            timed_out: (opts.timed_out.clone(), opts.name),
        };
        let (tls, builder, drain) = (opts.tls.clone(), builder.clone(), drain.clone());
        let task = move |tcp| {
            async move {
                serve_conn(tcp, tls, builder, service, (drain, guard)).await;
                drop(slot);
            }
            .instrument(span)
        };
        let conns = conns.clone();
        let serve = move |tcp| conns.track_future(task(tcp));
        match &opts.workers {
            Some(workers) => to_worker(workers, opts.steer.clone(), &opts.tasks, tcp, serve),
            None => {
                opts.tasks.spawn(serve(tcp));
            }
        }
    }
    drop(listener);
    tracing::info!(listener = opts.name, "stopped accepting; draining");
    drain.cancel();
    conns.close();
    if tokio::time::timeout(opts.grace, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = opts.name,
            "grace period over; dropping remaining connections"
        );
    }
}

fn builder(opts: &ServeOptions) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    let mut http1 = builder.http1();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes)
        .keep_alive(true);
    // hyper refuses past 100 headers by itself; setting a limit (even 100) makes it parse every
    // request head into a heap vector of that many slots, filled one by one (1,500
    // instructions a request), instead of its array on the stack.
    if opts.max_headers != HYPER_MAX_HEADERS {
        http1.max_headers(opts.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(opts.h2_keepalive))
        .keep_alive_timeout(opts.h2_keepalive)
        .max_header_list_size(opts.max_header_bytes as u32);
    builder
}

/// The deadlines one connection is served under.
struct Guard {
    first_by: tokio::time::Instant,
    idle: Duration,
    timed_out: (prometheus::IntCounterVec, &'static str),
}

/// One connection: the TLS handshake if any, then HTTP with the framing watcher on its bytes.
async fn serve_conn<S: ConnService>(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    builder: Arc<Builder<TokioExecutor>>,
    service: S,
    watch: (CancellationToken, Guard),
) {
    let result = match tls {
        Some(acceptor) => {
            let by = watch
                .1
                .first_by
                .min(tokio::time::Instant::now() + TLS_HANDSHAKE_TIMEOUT);
            match tokio::time::timeout_at(by, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve_http(stream, &builder, service, watch).await,
                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            }
        }
        None => serve_http(tcp, &builder, service, watch).await,
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Call the connection's stack itself, not a clone of it: its layers are always ready, and
/// `oneshot` on a clone for each request costs a reference count in every layer and loses what
/// a layer keeps for the connection (the last API key's digest). The borrow ends with `call`,
/// which only builds the future, so HTTP/2's concurrent streams never overlap in it; a stack
/// that is not ready (none is today) is served on a clone that waits for readiness.
fn call_in_place<S: ConnService>(
    service: &RefCell<S>,
    req: Request<Incoming>,
) -> Either<S::Future, tower::util::Oneshot<S, Request<Incoming>>> {
    let mut service = service.borrow_mut();
    let mut ready = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut ready) {
        Poll::Ready(Ok(())) => Either::Left(service.call(req)),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => Either::Right(service.clone().oneshot(req)),
    }
}

async fn serve_http<IO, S>(
    io: IO,
    builder: &Builder<TokioExecutor>,
    service: S,
    (drain, guard): (CancellationToken, Guard),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    // Ambiguous framing seen on this connection's bytes, for the front door to refuse.
    let framing = AmbiguousFraming::default();
    let upgraded = Upgraded::default();
    let activity = Arc::new(Activity::default());
    let io = watched(io, framing.0.clone(), upgraded.clone());
    // What each answer reports to, behind one `Arc`: one reference count per request.
    let answers = Arc::new((activity.clone(), upgraded));
    let service = RefCell::new(service);
    let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // Only then: no per-request allocation on the common path. The watcher sees the bytes
        // before hyper parses them, so the ambiguous request itself is already marked.
        if framing.seen() {
            req.extensions_mut().insert(framing.clone());
        }
        let method = req.method().clone();
        answers.0.started();
        let answers = answers.clone();
        let response = call_in_place(&service, req);
        async move {
            let response = response.await?;
            let (activity, upgraded) = &*answers;
            activity.answered();
            // The watch ends with HTTP on the connection, not with a request asking for that.
            upgraded.note(&method, response.status());
            Ok::<_, Infallible>(response)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
    tokio::pin!(conn);
    let mut deadlines = Deadlines::new(activity, guard.idle);
    let timer = tokio::time::sleep_until(guard.first_by);
    tokio::pin!(timer);
    let mut closing = false;
    let (timed_out, listener) = guard.timed_out;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = drain.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut timer, if !closing => match deadlines.fired(tokio::time::Instant::now()) {
                Verdict::Drop => {
                    timed_out.with_label_values(&[listener, conn_guard::FIRST_REQUEST]).inc();
                    return Ok(());
                }
                Verdict::Close => {
                    timed_out.with_label_values(&[listener, conn_guard::IDLE]).inc();
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Verdict::Again(at) => timer.as_mut().reset(at),
            },
        }
    }
}
