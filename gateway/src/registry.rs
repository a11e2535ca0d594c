//! Live agent sessions, one per registration. A new session replaces the old one at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use g2c_proto::mux::{Mux, MuxHandle};
use g2c_proto::ServiceDecl;

/// One connected agent.
pub struct AgentSession {
    /// Unique per gateway process; distinguishes a replaced session from its successor.
    pub id: u64,
    /// Registration the session authenticated as.
    pub registration_id: String,
    /// The yamux connection over the forwarded channel.
    pub mux: MuxHandle,
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
    pub inflight: Arc<AtomicUsize>,
    /// Unix seconds of the agent's last heartbeat (0: none yet).
    pub last_heartbeat: AtomicU64,
    /// Cancelled to tell the agent, on its control stream, to go away and reconnect (to this
    /// gateway once it is back, or to another behind the same name).
    pub go_away: tokio_util::sync::CancellationToken,
}

/// Counts one request in flight on a session until dropped.
pub struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AgentSession {
    /// Close the tunnel: end the mux and disconnect SSH (without waiting for either).
    pub fn close(&self, reason: &'static str) {
        tracing::info!(registration = %self.registration_id, session = self.id, reason, "closing agent session");
        self.mux.close();
        let ssh = self.ssh.clone();
        tokio::spawn(async move {
            let _ = ssh
                .disconnect(russh::Disconnect::ByApplication, reason.into(), "en".into())
                .await;
        });
    }

    /// Count a request in flight until the guard drops.
    pub fn begin_request(&self) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.inflight.clone())
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// The service HTTP requests go to: the first HTTP service the agent announced.
    pub fn http_service(&self) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.kind == g2c_proto::ServiceKind::Http)
            .map(|s| s.name.as_str())
    }
}

/// All live sessions by registration ID.
#[derive(Default)]
pub struct Registry {
    sessions: DashMap<String, Arc<AgentSession>>,
    next_id: AtomicU64,
}

impl Registry {
    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Install `session`, closing any session it replaces. Returns whether one was replaced.
    pub fn insert(&self, session: Arc<AgentSession>) -> bool {
        let old = self
            .sessions
            .insert(session.registration_id.clone(), session);
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
                s.close("disconnected by an operator");
                true
            }
            None => false,
        }
    }

    /// Remove the session for `registration` if it is still `session_id`.
    pub fn remove_if(&self, registration: &str, session_id: u64) {
        self.sessions
            .remove_if(registration, |_, s| s.id == session_id);
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

    /// Close every session (shutdown).
    /// Tell every agent to go away (GoAway on its control stream); each session ends once its
    /// agent got the message.
    pub fn go_away_all(&self) {
        for s in self.sessions.iter() {
            s.go_away.cancel();
        }
    }

    /// Close every session at once.
    pub fn close_all(&self, reason: &'static str) {
        let all: Vec<Arc<AgentSession>> = self.sessions.iter().map(|s| s.value().clone()).collect();
        self.sessions.clear();
        for s in all {
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

    /// Whether no agent is connected.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}
