//! Live agent sessions, one per registration. A new session replaces the old one at once.
//!
//! The registry publishes every session that comes up or goes away ([`SessionEvent`]): the
//! wings that keep per-session state (public TCP ports, the front door's connection pools)
//! subscribe instead of being called by the tunnel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;

use g2c_proto::ServiceDecl;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// One connected agent.
pub struct AgentSession {
    /// Unique per gateway process; distinguishes a replaced session from its successor.
    pub id: u64,
    /// Registration the session authenticated as.
    pub registration_id: String,
    /// How connections reach the services: our agent's yamux, or a stock `ssh -R`.
    pub link: super::link::Link,
    /// The SSH session, to disconnect it.
    pub ssh: russh::server::Handle,
    /// Services the agent announced.
    pub services: Vec<ServiceDecl>,
    /// Agent software version from Hello.
    pub agent_version: String,
    /// Agent's address as seen by the gateway.
    pub peer: SocketAddr,
    /// When the session became usable.
    pub connected_at: SystemTime,
    /// Requests in flight (response body not finished yet).
    pub inflight: Arc<Inflight>,
    /// Unix seconds of the agent's last heartbeat (0: none yet).
    pub last_heartbeat: AtomicU64,
    /// The services' health as the agent last reported it (empty until its first report).
    pub health: std::sync::RwLock<Vec<g2c_proto::ServiceHealth>>,
    /// Cancelled to tell the agent, on its control stream, to go away and reconnect (to this
    /// gateway once it is back, or to another behind the same name).
    pub go_away: tokio_util::sync::CancellationToken,
    /// Where the session's own small tasks (the SSH disconnect) are tracked.
    pub tasks: TaskTracker,
    /// The worker runtime its tunnel runs on ([`crate::workers`]): the pooled connections to
    /// the agent are driven there too, so their wake-ups stay on one thread.
    pub runtime: tokio::runtime::Handle,
    /// That worker's index (`None` off the workers, in unit tests): callers for this
    /// registration are steered to it.
    pub worker: Option<usize>,
}

/// A session came up or went away.
#[derive(Clone)]
pub enum SessionEvent {
    /// A session became usable (it may have replaced an older one of the same registration).
    Up(Arc<AgentSession>),
    /// A session left the registry; `registration` may already have a newer one.
    Down {
        /// Its registration.
        registration: String,
        /// Its id.
        session: u64,
    },
}

/// The requests in flight on a session, and a signal for when the last one is done.
#[derive(Default)]
pub struct Inflight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Inflight {
    /// Resolves once no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts one request in flight on a session until dropped.
pub struct InflightGuard(Arc<Inflight>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl AgentSession {
    /// Close the tunnel: end the mux and disconnect SSH (without waiting for either).
    pub fn close(&self, reason: &'static str) {
        tracing::info!(registration = %self.registration_id, session = self.id, reason, "closing agent session");
        self.link.close();
        let ssh = self.ssh.clone();
        let span = tracing::debug_span!("disconnect", registration = %self.registration_id, session = self.id);
        self.tasks.spawn(
            async move {
                let _ = ssh
                    .disconnect(russh::Disconnect::ByApplication, reason.into(), "en".into())
                    .await;
            }
            .instrument(span),
        );
    }

    /// Count a request in flight until the guard drops.
    pub fn begin_request(&self) -> InflightGuard {
        self.inflight.count.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.inflight.clone())
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> usize {
        self.inflight.count.load(Ordering::Acquire)
    }

    /// Whether the agent last reported `service` unhealthy (unknown counts as healthy).
    pub fn reported_unhealthy(&self, service: &str) -> bool {
        self.health
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|h| h.name == service && !h.healthy)
    }

    /// The HTTP service a request goes to, as the agent named it: the one `asked` for
    /// (matched without regard to case, as host names are), else the agent's default, its
    /// first HTTP service. `None` when there is no such HTTP service.
    pub fn http_service_named(&self, asked: Option<&str>) -> Option<&str> {
        self.services
            .iter()
            .filter(|s| s.kind == g2c_proto::ServiceKind::Http)
            .find(|s| asked.is_none_or(|a| s.name.eq_ignore_ascii_case(a)))
            .map(|s| s.name.as_str())
    }
}

/// All live sessions by registration ID.
pub struct Registry {
    sessions: DashMap<String, Arc<AgentSession>>,
    next_id: AtomicU64,
    subscribers: std::sync::Mutex<Vec<mpsc::UnboundedSender<SessionEvent>>>,
    count: watch::Sender<usize>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            sessions: DashMap::new(),
            next_id: AtomicU64::new(0),
            subscribers: Default::default(),
            count: watch::Sender::new(0),
        }
    }
}

impl Registry {
    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Every session event from now on, in order, none lost.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<SessionEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock_subscribers().push(tx);
        rx
    }

    fn lock_subscribers(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<SessionEvent>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, event: SessionEvent) {
        self.count.send_replace(self.sessions.len());
        self.lock_subscribers()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    fn went_down(&self, s: &AgentSession) {
        self.publish(SessionEvent::Down {
            registration: s.registration_id.clone(),
            session: s.id,
        });
    }

    /// Install `session`, closing any session it replaces. Returns whether one was replaced.
    pub fn insert(&self, session: Arc<AgentSession>) -> bool {
        let old = self
            .sessions
            .insert(session.registration_id.clone(), session.clone());
        self.publish(SessionEvent::Up(session));
        match old {
            Some(old) => {
                old.close("replaced by a new session");
                true
            }
            None => false,
        }
    }

    /// Close the live session of `registration` (admin "disconnect"); the agent will reconnect.
    /// Returns whether there was one.
    pub fn disconnect(&self, registration: &str) -> bool {
        match self.sessions.remove(registration) {
            Some((_, s)) => {
                self.went_down(&s);
                s.close("disconnected by an operator");
                true
            }
            None => false,
        }
    }

    /// Remove the session for `registration` if it is still `session_id`.
    pub fn remove_if(&self, registration: &str, session_id: u64) {
        if let Some((_, s)) = self
            .sessions
            .remove_if(registration, |_, s| s.id == session_id)
        {
            self.went_down(&s);
        }
    }

    /// The live session of a registration (cloned out; no guard is held).
    pub fn get(&self, registration: &str) -> Option<Arc<AgentSession>> {
        self.sessions.get(registration).map(|s| s.value().clone())
    }

    /// Close and remove sessions whose registration is not in `live`.
    pub fn close_unless(&self, live: impl Fn(&str) -> bool) {
        let dead: Vec<Arc<AgentSession>> = self
            .sessions
            .iter()
            .filter(|s| !live(s.key()))
            .map(|s| s.value().clone())
            .collect();
        for s in dead {
            self.remove_if(&s.registration_id, s.id);
            s.close("registration revoked");
        }
    }

    /// Tell every agent to go away (GoAway on its control stream); each session ends once its
    /// agent got the message.
    pub fn go_away_all(&self) {
        for s in self.sessions.iter() {
            s.go_away.cancel();
        }
    }

    /// Resolves once no session is left (or at once, when none is).
    pub async fn emptied(&self) {
        let mut count = self.count.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// Close every session at once.
    pub fn close_all(&self, reason: &'static str) {
        for s in self.all() {
            self.remove_if(&s.registration_id, s.id);
            s.close(reason);
        }
    }

    /// Every live session (cloned out).
    pub fn all(&self) -> Vec<Arc<AgentSession>> {
        self.sessions.iter().map(|s| s.value().clone()).collect()
    }

    /// Number of connected agents.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }
}
