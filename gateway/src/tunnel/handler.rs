//! What the SSH server allows one connection: public-key auth bound to a registration (the
//! identity is taken only once the signature is verified), the registration's own
//! `tcpip-forward` and nothing else. A granted forward starts the tunnel's session.

use std::net::SocketAddr;
use std::sync::Arc;

use g2c_proto::sshkeys;
use russh::server::{Auth, Msg, Session};
use russh::Channel;

use super::preauth;
use super::stage::{SessionCounts, SessionHold, Stage};
use crate::core::Core;
use crate::store::Registration;

/// Why an SSH key was refused (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    UnknownRegistration,
    Revoked,
    KeyMismatch,
    SessionCap,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::UnknownRegistration => "unknown_registration",
            Self::Revoked => "revoked",
            Self::KeyMismatch => "key_mismatch",
            Self::SessionCap => "session_cap",
        }
    }
}

/// Per-connection SSH handler.
pub(super) struct TunnelHandler {
    core: Arc<Core>,
    peer: SocketAddr,
    /// Set once public-key auth succeeded (signature verified).
    registration: Option<Registration>,
    /// Whether this session already asked for its forward.
    forwarded: bool,
    /// Its place among unauthenticated connections, given up at authentication.
    preauth: Option<preauth::Ticket>,
    /// How far the connection has come, for its deadlines.
    stage: tokio::sync::watch::Sender<Stage>,
    /// Sessions per registration, and this one's place once authenticated.
    counts: Arc<SessionCounts>,
    hold: Option<SessionHold>,
    /// Cancelled when the connection ends (the handler is dropped with it): a plain `ssh -R`
    /// session has no other sign of its end.
    closed: tokio_util::sync::CancellationToken,
}

impl Drop for TunnelHandler {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl TunnelHandler {
    /// The handler of a new connection from `peer`, holding its pre-auth `ticket`.
    pub(super) fn new(
        core: Arc<Core>,
        peer: SocketAddr,
        ticket: preauth::Ticket,
        stage: tokio::sync::watch::Sender<Stage>,
        counts: Arc<SessionCounts>,
    ) -> Self {
        Self {
            core,
            peer,
            registration: None,
            forwarded: false,
            preauth: Some(ticket),
            stage,
            counts,
            hold: None,
            closed: Default::default(),
        }
    }

    /// The registration `user` names if `key` is its key; otherwise why not.
    async fn registration_for(
        &self,
        user: &str,
        key: &russh::keys::PublicKey,
    ) -> Result<Registration, Refusal> {
        let reg = self
            .core
            .store
            .registration(user)
            .await
            .map_err(|_| Refusal::UnknownRegistration)?;
        if reg.revoked_at.is_some() {
            return Err(Refusal::Revoked);
        }
        let stored = sshkeys::parse_public(&reg.public_key).map_err(|_| Refusal::KeyMismatch)?;
        if sshkeys::same_key(&stored, key) {
            Ok(reg)
        } else {
            Err(Refusal::KeyMismatch)
        }
    }

    fn refused(&self, user: &str, reason: Refusal) -> Auth {
        tracing::info!(user, reason = reason.label(), "ssh key refused");
        self.core
            .metrics
            .ssh_auth_failures
            .with_label_values(&[reason.label()])
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
            Err(reason) => self.refused(user, reason),
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let cap = self.core.config.limits.ssh_max_sessions_per_registration;
        match self.registration_for(user, key.public_key).await {
            Ok(reg) => {
                let Some(hold) = self.counts.hold(&reg.id, cap) else {
                    return Ok(self.refused(user, Refusal::SessionCap));
                };
                tracing::info!(registration = %reg.id, "agent authenticated");
                self.hold = Some(hold);
                self.stage.send_replace(Stage::Authenticated);
                self.preauth = None;
                self.registration = Some(reg);
                Ok(Auth::Accept)
            }
            Err(reason) => Ok(self.refused(user, reason)),
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
        // Our agent asks for its registration's port; a stock `ssh -R 0:host:port` asks for
        // any port (0) and is told it got that one.
        let plain = *port == 0;
        if (!plain && *port != u32::from(reg.tunnel_port)) || self.forwarded {
            tracing::warn!(registration = %reg.id, port = *port, "refused tcpip-forward for a port that is not the registration's");
            return Ok(false);
        }
        let max = self.core.config.limits.max_tunnels;
        if self.core.registry.len() >= max && self.core.registry.get(&reg.id).is_none() {
            tracing::warn!(registration = %reg.id, max, "refused a tunnel: limits.max_tunnels reached");
            self.core
                .metrics
                .ssh_closed
                .with_label_values(&["max_tunnels"])
                .inc();
            return Ok(false);
        }
        self.forwarded = true;
        self.stage.send_replace(Stage::Forwarding);
        // Opening the forwarded channel must not be awaited here: the session loop is blocked
        // on this handler until it returns.
        if plain {
            *port = u32::from(reg.tunnel_port);
            tracing::info!(registration = %reg.id, address, "plain ssh remote forward granted");
            let span = tracing::info_span!("tunnel", registration = %reg.id, plain = true);
            let tunnel = super::plain::run(
                self.core.clone(),
                session.handle(),
                reg,
                (address.to_owned(), *port),
                self.peer,
                self.closed.clone(),
            );
            self.core.spawn(span, tunnel);
            return Ok(true);
        }
        let span = tracing::info_span!("tunnel", registration = %reg.id);
        let tunnel = super::session::run(
            self.core.clone(),
            session.handle(),
            reg,
            (address.to_owned(), *port),
            self.peer,
        );
        self.core.spawn(span, tunnel);
        Ok(true)
    }
}
