//! The holding half of the peer link: other nodes dial in over mutual TLS, and every stream
//! they open carries one [`Dial`] for a registration whose tunnel this node holds. The node
//! answers before the first byte (not here, draining, or the agent's own answer) and then
//! splices the stream to a data stream of its tunnel, counted in flight on the session like
//! a request of its own, so a drain waits for it.

use std::sync::Arc;
use std::time::Duration;

use g2c_proto::mux::{self, Mode, MuxStream};
use g2c_proto::peer::{self, Dial, DialReply};
use g2c_proto::{tuning, AckCode, StreamHeader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::peer_tls::PeerTls;
use crate::core::metrics::GaugeGuard;
use crate::core::Core;
use crate::shutdown::Phase;

/// Longest a peer may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most streams a peer may have open through this node at once.
const PEER_STREAMS: usize = 1024;

/// Accept peers until the gateway drains, then wait (within the grace period) for the streams
/// peers have open through this node's tunnels. Peer connections themselves stay until the
/// gateway aborts: a draining node still answers, so its peers try elsewhere at once.
pub async fn serve(listener: TcpListener, core: Arc<Core>, tls: PeerTls) {
    let streams = TaskTracker::new();
    loop {
        let draining = core.shutdown.reached(Phase::Draining);
        let Some((tcp, peer)) = crate::accept::next(&listener, draining, "peer").await else {
            break;
        };
        let span = tracing::info_span!("peer", %peer);
        core.spawn(
            span,
            connection(core.clone(), tls.clone(), tcp, streams.clone()),
        );
    }
    drain(&core, streams).await;
}

async fn drain(core: &Core, streams: TaskTracker) {
    streams.close();
    let grace = Duration::from_secs(core.config.limits.shutdown_grace_secs);
    if tokio::time::timeout(grace, streams.wait()).await.is_err() {
        tracing::warn!(
            left = streams.len(),
            "peer streams still open after the grace period"
        );
    }
}

/// One peer's connection: TLS (the peer's certificate checked against the cluster CA), then
/// every stream it opens, until it goes or the gateway aborts.
async fn connection(core: Arc<Core>, tls: PeerTls, tcp: TcpStream, streams: TaskTracker) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            core.metrics
                .peer_link_failures
                .with_label_values(&["tls"])
                .inc();
            tracing::warn!(error = %e, "peer refused: TLS");
            return;
        }
        Err(_) => return,
    };
    let (handle, mut inbound) = mux::spawn_limited(
        tls.compat(),
        Mode::Server,
        PEER_STREAMS,
        tuning::YAMUX_WINDOW_HEADROOM,
    );
    let stop = core.shutdown.reached(Phase::Aborting);
    tokio::pin!(stop);
    let mut next = 0u64;
    loop {
        let stream = tokio::select! {
            s = inbound.recv() => s,
            _ = &mut stop => None,
        };
        let Some(stream) = stream else { break };
        next += 1;
        let span = tracing::debug_span!("peer_stream", id = next);
        streams.spawn(serve_stream(core.clone(), stream).instrument(span));
    }
    g2c_proto::mux::Mux::close(&handle);
}

/// Answer one dial and splice its stream to the tunnel.
async fn serve_stream(core: Arc<Core>, mut stream: MuxStream) {
    let dial = match peer::accept_dial(&mut stream).await {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "bad dial");
            return;
        }
    };
    let (header, session) = match route(&core, &dial) {
        Ok(taken) => taken,
        Err(reply) => {
            let _ = peer::answer_dial(&mut stream, &reply).await;
            return;
        }
    };
    let reg = session.registration_id.as_str();
    let _inflight = session.begin_request();
    let mut agent = match session.link.open(&header).await {
        Ok(s) => s,
        Err(e) => {
            let _ = peer::answer_dial(&mut stream, &DialReply::from_open(e)).await;
            return;
        }
    };
    if peer::answer_dial(&mut stream, &DialReply::Ok)
        .await
        .is_err()
    {
        return;
    }
    let _open = (
        GaugeGuard::new(core.metrics.peer_streams_open.with_label_values(&["in"])),
        GaugeGuard::new(core.metrics.active_streams.with_label_values(&[reg])),
    );
    if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut agent).await {
        tracing::debug!(error = %e, "peer stream ended with an error");
    }
}

/// The data-stream header and session for a dial this node takes, or the answer that
/// refuses it.
fn route(
    core: &Core,
    dial: &Dial,
) -> Result<(StreamHeader, Arc<crate::core::registry::AgentSession>), DialReply> {
    let s = &core.shutdown;
    if s.reached_now(Phase::GoingAway)
        || (s.reached_now(Phase::Announcing) && !dial.even_if_draining)
    {
        return Err(DialReply::Draining);
    }
    let session = core
        .registry
        .get(&dial.registration)
        .ok_or(DialReply::NotHere)?;
    let service = match session.http_service_named(dial.service.as_deref()) {
        Some(s) => s.to_owned(),
        // A TCP service is named exactly (the dialling node took it from its TCP port).
        None => match &dial.service {
            Some(s) if session.services.iter().any(|d| d.name == *s) => s.clone(),
            Some(s) => {
                return Err(DialReply::Refused {
                    code: AckCode::UnknownService,
                    message: format!("no service named {s:?}"),
                })
            }
            None => {
                return Err(DialReply::Refused {
                    code: AckCode::UnknownService,
                    message: "the agent offers no HTTP service".into(),
                })
            }
        },
    };
    let header = StreamHeader::new(service, dial.request_id.clone(), dial.caller_addr.clone());
    Ok((header, session))
}
