//! The gateway's core: what every wing shares, and nothing that belongs to one wing. It holds
//! the configuration, the store, the credential cache, the registry of live sessions, metrics
//! and the audit log, the readiness flag and the tracker of every task the gateway spawns. It
//! knows nothing of HTTP clients, TCP ports or rate limiters: those live in their wings.

pub mod audit;
pub mod auth;
pub mod cidr;
pub mod link;
pub mod metrics;
mod refresh;
pub mod registry;
pub mod remote;

use std::future::Future;
use std::sync::Arc;

use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::shutdown::{Phase, Shutdown};
use crate::store::Store;
use auth::AuthCache;
use metrics::Metrics;
use registry::Registry;

pub use refresh::refresh_loop;

/// State shared by every wing.
pub struct Core {
    /// Validated configuration.
    pub config: GatewayConfig,
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Cached credentials.
    pub auth: AuthCache,
    /// Live agent sessions.
    pub registry: Registry,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Request audit log.
    pub audit: audit::AuditLog,
    /// The gateway's shutdown phases.
    pub shutdown: Shutdown,
    /// The cluster's nodes as agents are told of them (kept by the cluster wing; `None` on a
    /// single node).
    pub nodes: tokio::sync::watch::Sender<Option<std::sync::Arc<remote::NodesView>>>,
    tasks: TaskTracker,
}

impl Core {
    /// Open the store (SQLite or PostgreSQL, as configured), load credentials, start the
    /// audit log.
    pub async fn open(config: GatewayConfig) -> Result<Arc<Self>, GatewayError> {
        let store = crate::store::open(&config.store).await?;
        Self::with_store(config, store).await
    }

    /// The core on a store already open.
    pub async fn with_store(
        config: GatewayConfig,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, GatewayError> {
        let auth = AuthCache::load(store.clone()).await?;
        let metrics = Metrics::new();
        let audit = audit::AuditLog::start(&config.audit, metrics.audit_dropped.clone())
            .map_err(GatewayError::Audit)?;
        Ok(Arc::new(Self {
            config,
            store,
            auth,
            registry: Registry::default(),
            metrics,
            audit,
            shutdown: Shutdown::default(),
            nodes: tokio::sync::watch::Sender::new(None),
            tasks: TaskTracker::new(),
        }))
    }

    /// Whether the gateway takes new work (false from the first phase of shutdown on).
    pub fn is_ready(&self) -> bool {
        !self.shutdown.reached_now(Phase::Announcing)
    }

    /// Spawn a task of the gateway, tracked (shutdown waits for it) and inside `span`.
    pub fn spawn<F>(&self, span: tracing::Span, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task.instrument(span));
    }

    /// [`Core::spawn`] on the runtime of `handle` (a worker's, see [`crate::workers`]).
    pub fn spawn_on<F>(&self, handle: &tokio::runtime::Handle, span: tracing::Span, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        handle.spawn(self.tasks.track_future(task.instrument(span)));
    }

    /// The tracker of every task the gateway spawned.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
}
