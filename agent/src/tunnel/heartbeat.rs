//! The agent's side of the control stream once the tunnel is up: a reader task that takes the
//! gateway's heartbeat acks (and round-trip times), its node list and its GoAway, and the heartbeat sender's
//! bookkeeping (three unanswered beats mean the gateway is gone).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use g2c_proto::frame::{read_frame, write_frame};
use g2c_proto::mux::MuxStream;
use g2c_proto::ControlMessage;
use tokio::io::{ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{SessionEnd, TunnelError};
use crate::status::Status;

/// Where a `Nodes` message goes: the fleet's picture, as heard by this slot.
pub(super) struct NodesHeard {
    /// The agent's tunnels.
    pub fleet: Arc<super::fleet::Fleet>,
    /// This session's slot.
    pub slot: usize,
}

/// Unanswered heartbeats after which the gateway counts as gone.
const MAX_UNANSWERED: u64 = 3;

/// The control stream of one session.
pub(super) struct Heartbeat {
    write: WriteHalf<MuxStream>,
    seq: u64,
    last_ack: Arc<AtomicU64>,
    last_sent: Arc<Mutex<(u64, Instant)>>,
    /// Cancelled when the gateway's side of the control stream ended (EOF, error, GoAway).
    pub done: CancellationToken,
    go_away: Arc<AtomicBool>,
}

impl Heartbeat {
    /// Start reading the gateway's messages from `read`.
    pub(super) fn start(
        read: ReadHalf<MuxStream>,
        write: WriteHalf<MuxStream>,
        status: Arc<Status>,
        heard: NodesHeard,
    ) -> Self {
        let beat = Self {
            write,
            seq: 0,
            last_ack: Arc::default(),
            last_sent: Arc::new(Mutex::new((0, Instant::now()))),
            done: CancellationToken::new(),
            go_away: Arc::default(),
        };
        let reader = read_gateway(
            read,
            beat.last_ack.clone(),
            beat.last_sent.clone(),
            beat.go_away.clone(),
            status,
            heard,
        );
        let done = beat.done.clone();
        tokio::spawn(
            async move {
                reader.await;
                done.cancel();
            }
            .instrument(tracing::debug_span!("control_reader")),
        );
        beat
    }

    /// Send the next heartbeat, unless too many went unanswered.
    pub(super) async fn beat(&mut self) -> Result<(), TunnelError> {
        if self.seq > 0
            && self
                .seq
                .saturating_sub(self.last_ack.load(Ordering::SeqCst))
                >= MAX_UNANSWERED
        {
            return Err(TunnelError::Timeout("waiting for heartbeat answers"));
        }
        self.seq += 1;
        *self.last_sent.lock().unwrap_or_else(|p| p.into_inner()) = (self.seq, Instant::now());
        self.send(&ControlMessage::Heartbeat { seq: self.seq })
            .await
    }

    /// Send one control message.
    pub(super) async fn send(&mut self, msg: &ControlMessage) -> Result<(), TunnelError> {
        write_frame(&mut self.write, msg)
            .await
            .map_err(|e| TunnelError::Control(e.to_string()))
    }

    /// How a session the gateway ended ended: at its request (GoAway) or not.
    pub(super) fn ended(&self) -> SessionEnd {
        if self.go_away.load(Ordering::SeqCst) {
            SessionEnd::GoAway
        } else {
            SessionEnd::Closed
        }
    }
}

/// Read the gateway's control messages until the stream ends or it says GoAway.
async fn read_gateway(
    mut read: ReadHalf<MuxStream>,
    last_ack: Arc<AtomicU64>,
    last_sent: Arc<Mutex<(u64, Instant)>>,
    go_away: Arc<AtomicBool>,
    status: Arc<Status>,
    heard: NodesHeard,
) {
    loop {
        match read_frame::<ControlMessage, _>(&mut read).await {
            Ok(Some(ControlMessage::HeartbeatAck { seq })) => {
                last_ack.store(seq, Ordering::SeqCst);
                let (sent_seq, at) = *last_sent.lock().unwrap_or_else(|p| p.into_inner());
                if sent_seq == seq {
                    status.set_rtt(at.elapsed());
                }
            }
            Ok(Some(ControlMessage::GoAway { reason })) => {
                tracing::info!(%reason, "gateway asked us to reconnect");
                go_away.store(true, Ordering::SeqCst);
                return;
            }
            Ok(Some(ControlMessage::Nodes { this, nodes })) => {
                tracing::debug!(node = %this, nodes = nodes.len(), "the gateway named its nodes");
                heard.fleet.heard(heard.slot, this, nodes);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}
