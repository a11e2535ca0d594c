//! A site without our agent: a stock OpenSSH client holding `ssh -N -R 0:host:port` with the
//! registration's key. Its session has one HTTP service, [`PLAIN_SERVICE`], reached through
//! one `forwarded-tcpip` channel per connection (no yamux, no control stream, so no
//! heartbeats or health reports): the same registry, routing, keys, limits, metrics and audit
//! as an agent's. It ends when the SSH connection does, when the registration is revoked, or
//! at shutdown once its requests are done (bounded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use g2c_proto::{ServiceDecl, ServiceKind};
use tokio_util::sync::CancellationToken;

use super::session::{new_session, publish, retire};
use crate::core::link::{Link, SshLink};
use crate::core::Core;
use crate::store::Registration;

/// The one service of an `ssh -R` site.
pub const PLAIN_SERVICE: &str = "web";
/// What the registry shows as the "agent version" of such a site.
const PLAIN_VERSION: &str = "openssh-remote-forward";
/// Longest a shutdown waits for its requests in flight.
const GO_AWAY_LIMIT: Duration = Duration::from_secs(10);

/// Serve a granted plain remote forward until the connection ends (`closed`).
pub(super) async fn run(
    core: Arc<Core>,
    ssh: russh::server::Handle,
    reg: Registration,
    forward: (String, u32),
    peer: SocketAddr,
    closed: CancellationToken,
) {
    let limits = &core.config.limits;
    let link = SshLink::new(
        ssh.clone(),
        forward,
        closed.clone(),
        limits.max_streams_per_tunnel,
    );
    let service = ServiceDecl {
        name: PLAIN_SERVICE.into(),
        kind: ServiceKind::Http,
    };
    let session = new_session(
        &core,
        &reg.id,
        Link::Ssh(link),
        ssh,
        vec![service],
        PLAIN_VERSION.into(),
        peer,
    );
    publish(&core, &session);
    tokio::select! {
        _ = closed.cancelled() => {}
        _ = session.go_away.cancelled() => {
            // Shutting down: no new requests reach this node; let the open ones finish.
            core.registry.remove_if(&reg.id, session.id);
            tokio::select! {
                _ = session.inflight.idle() => {}
                _ = closed.cancelled() => {}
                _ = tokio::time::sleep(GO_AWAY_LIMIT) => {}
            }
        }
    }
    retire(&core, &session);
}
