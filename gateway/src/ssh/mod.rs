//! The embedded SSH server agents dial: public-key auth bound to a registration, one
//! `tcpip-forward` for the registration's own port, and nothing else (no shell, no exec, no
//! direct-tcpip, no compression).

pub mod preauth;
mod tunnel;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use g2c_proto::{sshkeys, tuning};
use russh::keys::PrivateKey;
use russh::server::{Auth, Msg, Session};
use russh::{Channel, MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::store::Registration;
use crate::Shared;

/// SSH server configuration: tuned window and packets, AES-256-GCM first, no compression,
/// keepalive so a dead agent is noticed within ~15 s.
pub fn server_config(host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        keys: vec![host_key],
        window_size: tuning::SSH_WINDOW_SIZE,
        maximum_packet_size: tuning::SSH_MAX_PACKET_SIZE,
        preferred: tuning::ssh_preferred(),
        max_auth_attempts: 3,
        inactivity_timeout: None,
        keepalive_interval: Some(tuning::SSH_KEEPALIVE_INTERVAL),
        keepalive_max: tuning::SSH_KEEPALIVE_MAX,
        nodelay: true,
        ..Default::default()
    }
}

/// Accept SSH connections until `shutdown`. A connection that has not authenticated within
/// `limits.ssh_preauth_timeout_secs`, or that a newer one evicts past
/// `limits.ssh_max_unauthenticated`, is closed.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let config = Arc::new(server_config(shared.host_key.clone()));
    let limits = &shared.config.limits;
    let unauthenticated = preauth::PreAuth::new(limits.ssh_max_unauthenticated);
    let deadline = limits.ssh_preauth_timeout();
    tracing::info!(listener = "ssh", addr = ?listener.local_addr().ok(), "listening");
    while let Some((tcp, peer)) = crate::accept::next(&listener, &shutdown, "ssh").await {
        let _ = tcp.set_nodelay(true);
        let (ticket, evicted) = unauthenticated.admit();
        if evicted {
            shared
                .metrics
                .ssh_closed
                .with_label_values(&["preauth_evicted"])
                .inc();
        }
        let evicted = ticket.evicted.clone();
        let authenticated = Arc::new(AtomicBool::new(false));
        let handler = TunnelHandler {
            shared: shared.clone(),
            peer,
            registration: None,
            forwarded: false,
            preauth: Some(ticket),
            authenticated: authenticated.clone(),
        };
        let config = config.clone();
        let shared = shared.clone();
        let span = tracing::info_span!("ssh", %peer);
        tokio::spawn(
            async move {
                // russh reads each packet in pieces (length, then body): a read buffer turns
                // those into one syscall per burst (writes pass straight through).
                let io = tokio::io::BufReader::with_capacity(tuning::SSH_READ_BUFFER, tcp);
                let session = async move {
                    match russh::server::run_stream(config, io, handler).await {
                        Ok(session) => {
                            if let Err(e) = session.await {
                                tracing::debug!(error = %e, "ssh session ended with an error");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "ssh handshake failed"),
                    }
                };
                tokio::pin!(session);
                let reason = tokio::select! {
                    _ = &mut session => return,
                    _ = tokio::time::sleep(deadline) => "preauth_deadline",
                    _ = evicted.cancelled() => "preauth_evicted",
                };
                if !authenticated.load(Ordering::SeqCst) {
                    if reason == "preauth_deadline" {
                        shared.metrics.ssh_closed.with_label_values(&[reason]).inc();
                    }
                    tracing::debug!(reason, "closing an unauthenticated ssh connection");
                    return; // dropping the session closes the socket
                }
                session.await;
            }
            .instrument(span),
        );
    }
}

/// Per-connection SSH handler.
struct TunnelHandler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Set once public-key auth succeeded (signature verified).
    registration: Option<Registration>,
    /// Whether this session already asked for its forward.
    forwarded: bool,
    /// Its place among unauthenticated connections, given up at authentication.
    preauth: Option<preauth::Ticket>,
    /// Set at authentication: the pre-auth deadline no longer applies.
    authenticated: Arc<AtomicBool>,
}

impl TunnelHandler {
    /// The registration `user` names if `key` is its key; otherwise why not (a metric label).
    async fn registration_for(
        &self,
        user: &str,
        key: &russh::keys::PublicKey,
    ) -> Result<Registration, &'static str> {
        let reg = self
            .shared
            .store
            .registration(user)
            .await
            .map_err(|_| "unknown_registration")?;
        if reg.revoked_at.is_some() {
            return Err("revoked");
        }
        let stored = sshkeys::parse_public(&reg.public_key).map_err(|_| "key_mismatch")?;
        if sshkeys::same_key(&stored, key) {
            Ok(reg)
        } else {
            Err("key_mismatch")
        }
    }

    fn refused(&self, reason: &'static str) -> Auth {
        self.shared
            .metrics
            .ssh_auth_failures
            .with_label_values(&[reason])
            .inc();
        Auth::reject()
    }
}

impl russh::server::Handler for TunnelHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Only spares the signature check for keys that cannot succeed; identity is bound in
        // `auth_publickey`, after the signature is verified.
        Ok(match self.registration_for(user, offer.public_key).await {
            Ok(_) => Auth::Accept,
            Err(reason) => {
                tracing::info!(user, reason, "ssh key refused");
                self.refused(reason)
            }
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.registration_for(user, key.public_key).await {
            Ok(reg) => {
                tracing::info!(registration = %reg.id, "agent authenticated");
                self.authenticated.store(true, Ordering::SeqCst);
                self.preauth = None;
                self.registration = Some(reg);
                Ok(Auth::Accept)
            }
            Err(reason) => {
                tracing::info!(user, reason, "ssh auth refused");
                Ok(self.refused(reason))
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        drop(reply); // refused: agents never get a shell
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(reg) = self.registration.clone() else {
            return Ok(false);
        };
        if *port != u32::from(reg.tunnel_port) || self.forwarded {
            tracing::warn!(registration = %reg.id, port = *port, "refused tcpip-forward for a port that is not the registration's");
            return Ok(false);
        }
        let max = self.shared.config.limits.max_tunnels;
        if self.shared.registry.len() >= max && self.shared.registry.get(&reg.id).is_none() {
            tracing::warn!(registration = %reg.id, max, "refused a tunnel: limits.max_tunnels reached");
            self.shared
                .metrics
                .ssh_closed
                .with_label_values(&["max_tunnels"])
                .inc();
            return Ok(false);
        }
        self.forwarded = true;
        // Opening the forwarded channel must not be awaited here: the session loop is blocked
        // on this handler until it returns.
        let span = tracing::info_span!("tunnel", registration = %reg.id);
        tokio::spawn(
            tunnel::run(
                self.shared.clone(),
                session.handle(),
                reg,
                address.to_owned(),
                *port,
                self.peer,
            )
            .instrument(span),
        );
        Ok(true)
    }
}
