//! The gateway's worker runtimes: one single-threaded tokio runtime per core, each on its own
//! thread. Every connection a listener accepts (a caller's, an agent's tunnel, a public TCP
//! client's) is handed whole to one of them, its socket registered with that runtime's own
//! reactor, and what the connection spawns stays there: a tunnel's SSH session, its yamux
//! driver and the pooled HTTP connections to its agent all run on one thread, so a request
//! crosses threads at most once each way (the caller's connection to the tunnel's worker).
//!
//! Why: on a work-stealing runtime the four tasks a request passes through each way (caller
//! connection, pooled upstream connection, yamux driver, SSH session) woke each other across
//! threads. Measured on the 2-core bench machine, a single-threaded gateway took 30% less CPU
//! per request and answered 20 µs sooner at concurrency 1 than the work-stealing one; this
//! keeps that per tunnel while still using every core.
//!
//! The listeners, the admin API, the backchannel, the store and the cluster's loops stay on the
//! runtime that called [`crate::run`].

use std::cell::Cell;
use std::future::Future;
use std::net::TcpStream as StdTcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

thread_local! {
    /// On a worker's thread, its index.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker this code runs on, if it runs on one.
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// The worker runtimes. Cheap to clone; the threads stop when [`Workers::stop`] is called.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Each worker's stop signal and thread, taken by `stop`.
    threads: Mutex<Vec<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl Workers {
    /// Start `count` worker runtimes (at least one), each on a thread of its own.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let count = count.max(1);
        let mut handles = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("g2c-worker-{i}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(i)));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the tasks still on it is the last step of the shutdown, after
                    // the drain; a blocking call still running gets a moment, not forever.
                    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                })?;
            threads.push((stop, thread));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                handles,
                next: AtomicUsize::new(0),
                threads: Mutex::new(threads),
            }),
        })
    }

    /// How many workers to start: `G2C_WORKER_THREADS` if set to a number above 0, else one
    /// per core the process may use.
    pub fn configured_count() -> usize {
        std::env::var("G2C_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The worker that takes the next connection (in turn).
    fn pick(&self) -> &Handle {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        &self.inner.handles[i % self.inner.handles.len()]
    }

    /// Serve `tcp` on worker `index` (see [`spawn_connection_on`]); on the next one in turn if
    /// there is no such worker.
    pub fn spawn_connection_to<F, Fut>(
        &self,
        index: usize,
        tasks: &TaskTracker,
        tcp: TcpStream,
        serve: F,
    ) where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = self.inner.handles.get(index).unwrap_or_else(|| self.pick());
        spawn_connection_on(handle, tasks, tcp, serve);
    }

    /// Serve the accepted `tcp` on the next worker (see [`spawn_connection_on`]).
    pub fn spawn_connection<F, Fut>(&self, tasks: &TaskTracker, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        spawn_connection_on(self.pick(), tasks, tcp, serve);
    }

    /// Stop every worker, dropping the tasks still on them. Waits for the threads.
    pub fn stop(&self) {
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let joins: Vec<_> = threads
            .into_iter()
            .map(|(stop, thread)| {
                let _ = stop.send(());
                thread
            })
            .collect();
        for thread in joins {
            let _ = thread.join();
        }
    }
}

/// Serve the accepted `tcp` on the runtime of `handle`: its socket moves to that runtime's
/// reactor and `serve` runs there, tracked by `tasks`. A socket that cannot move is closed.
pub fn spawn_connection_on<F, Fut>(handle: &Handle, tasks: &TaskTracker, tcp: TcpStream, serve: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(std) = tcp.into_std() else {
        return;
    };
    let task = async move {
        if let Some(tcp) = reregister(std) {
            serve(tcp).await;
        }
    };
    handle.spawn(tasks.track_future(task));
}

/// A socket taken out of one runtime, registered with the current one.
fn reregister(std: StdTcpStream) -> Option<TcpStream> {
    match TcpStream::from_std(std) {
        Ok(tcp) => Some(tcp),
        Err(e) => {
            tracing::warn!(error = %e, "could not hand a connection to a worker");
            None
        }
    }
}
