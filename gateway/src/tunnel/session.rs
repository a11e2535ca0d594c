//! One agent tunnel on the gateway side: open the forwarded channel back to the agent, run
//! yamux over it (gateway = client mode), hear the agent's Hello on the control stream and
//! welcome it, publish the session in the registry, serve the control stream until either side
//! goes away, then retire the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use g2c_proto::handshake::{self, Hello, HELLO_TIMEOUT};
use g2c_proto::mux::{self, Mode, Mux, MuxHandle, MuxStream};
use g2c_proto::ServiceDecl;
use tokio::sync::mpsc;
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::control::{self, ControlEnd};
use crate::core::link::Link;
use crate::core::registry::AgentSession;
use crate::core::Core;
use crate::store::Registration;

/// A tunnel whose control handshake is done.
struct Established {
    mux: MuxHandle,
    inbound: mpsc::Receiver<MuxStream>,
    control: MuxStream,
    hello: Hello,
}

pub(super) async fn run(
    core: Arc<Core>,
    ssh: russh::server::Handle,
    reg: Registration,
    forward: (String, u32),
    peer: SocketAddr,
) {
    let Some(up) = establish(&core, &ssh, &reg, forward, peer).await else {
        return;
    };
    let session = new_session(
        &core,
        &reg.id,
        Link::Mux(up.mux.clone()),
        ssh,
        up.hello.services,
        up.hello.agent_version,
        peer,
    );
    publish(&core, &session);
    let (end, mut write) = control::serve(&core, &session, up.control, up.inbound).await;
    core.registry.remove_if(&reg.id, session.id);
    if end == ControlEnd::Draining {
        control::drain(&session, &mut write).await;
    }
    retire(&core, &session);
}

/// A session that just came up, with nothing in flight or reported yet.
pub(super) fn new_session(
    core: &Core,
    registration: &str,
    link: Link,
    ssh: russh::server::Handle,
    services: Vec<ServiceDecl>,
    agent_version: String,
    peer: SocketAddr,
) -> Arc<AgentSession> {
    Arc::new(AgentSession {
        id: core.registry.next_session_id(),
        registration_id: registration.to_owned(),
        link,
        ssh,
        services,
        agent_version,
        peer,
        connected_at: SystemTime::now(),
        inflight: Default::default(),
        last_heartbeat: Default::default(),
        health: Default::default(),
        go_away: Default::default(),
        tasks: core.tasks().clone(),
        runtime: tokio::runtime::Handle::current(),
        worker: crate::workers::current(),
    })
}

/// Put a session that came up in the registry (replacing an older one) and its metrics.
pub(super) fn publish(core: &Core, session: &Arc<AgentSession>) {
    let metrics = &core.metrics;
    let reg = &session.registration_id;
    metrics.sessions_opened.with_label_values(&[reg]).inc();
    if core.registry.insert(session.clone()) {
        metrics.sessions_replaced.with_label_values(&[reg]).inc();
    }
    metrics.agent_up(reg, &session.agent_version);
    metrics.agents_connected.set(core.registry.len() as i64);
    tracing::info!(session = session.id, agent_version = %session.agent_version, "agent connected");
}

/// Close a session that ended (already out of the registry) and take back its metrics.
pub(super) fn retire(core: &Core, session: &AgentSession) {
    let metrics = &core.metrics;
    let reg = &session.registration_id;
    core.registry.remove_if(reg, session.id);
    session.close("tunnel ended");
    match core.registry.get(reg) {
        None => metrics.agent_down(reg, &session.agent_version, &session.services),
        // Replaced: what this session reported and its successor does not is removed, so
        // reconnecting with new versions or service names never piles up series.
        Some(next) => metrics.agent_replaced(
            reg,
            (&session.agent_version, &session.services),
            (&next.agent_version, &next.services),
        ),
    }
    metrics.agents_connected.set(core.registry.len() as i64);
    tracing::info!(session = session.id, "agent disconnected");
}

/// Open the channel, start yamux and do the control handshake; `None` (logged) if any of it
/// fails.
async fn establish(
    core: &Core,
    ssh: &russh::server::Handle,
    reg: &Registration,
    (address, port): (String, u32),
    peer: SocketAddr,
) -> Option<Established> {
    let channel = ssh
        .channel_open_forwarded_tcpip(address, port, peer.ip().to_string(), u32::from(peer.port()))
        .await
        .map_err(|e| tracing::warn!(error = %e, "could not open the forwarded channel"))
        .ok()?;
    let limits = &core.config.limits;
    let (mux, mut inbound) = mux::spawn_limited(
        channel.into_stream().compat(),
        Mode::Client,
        limits.max_streams_per_tunnel,
        limits.yamux_window_headroom_mib << 20,
    );
    let handshake = async {
        let mut control = tokio::time::timeout(HELLO_TIMEOUT, inbound.recv())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| "the agent did not open a control stream in time".to_owned())?;
        let hello = handshake::hear_hello(&mut control)
            .await
            .map_err(|e| format!("agent hello: {e}"))?;
        handshake::welcome(
            &mut control,
            &reg.id,
            limits.heartbeat(),
            limits.max_streams_per_tunnel as u32,
        )
        .await
        .map_err(|e| format!("welcome: {e}"))?;
        Ok::<_, String>((control, hello))
    };
    match handshake.await {
        Ok((control, hello)) => Some(Established {
            mux,
            inbound,
            control,
            hello,
        }),
        Err(reason) => {
            tracing::warn!(%reason, "tunnel refused");
            mux.close();
            None
        }
    }
}
