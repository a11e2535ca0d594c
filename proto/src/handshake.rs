//! The tunnel's two handshakes, each written once for both sides.
//!
//! - A **data stream**: the gateway opens a stream and writes a [`StreamHeader`]; the agent reads
//!   it, connects to the named service and answers an [`Ack`]; raw bytes follow.
//!   [`open_data_stream`] is the gateway's half (HTTP connector and TCP ports alike),
//!   [`accept_data_stream`] / [`ack_data_stream`] / [`refuse_data_stream`] the agent's.
//! - The **control stream**: the agent opens it and says Hello; the gateway checks it and
//!   answers Welcome or Refused. [`say_hello`] is the agent's half, [`hear_hello`] and
//!   [`welcome`] the gateway's.
//!
//! Every step is bounded in time and fails with a typed error, never a panic.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::frame::{read_frame, write_frame, FrameError};
use crate::messages::{Ack, AckCode, ControlMessage, ServiceDecl, StreamHeader};
use crate::mux::{Mux, MuxError, MuxStream};
use crate::{tuning, PROTOCOL_VERSION};

/// How long the agent has to open the control stream and say Hello, and the gateway to answer.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the gateway has to send the header of a stream it opened.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most services one agent may announce.
pub const MAX_SERVICES: usize = 64;
/// Longest service name.
pub const MAX_SERVICE_NAME: usize = 64;
/// Longest agent version string. It becomes a metric label, so it is short and printable.
pub const MAX_AGENT_VERSION: usize = 64;

/// Why the gateway could not open a data stream to a service.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The tunnel is up but has no stream to spare.
    #[error("the tunnel has no free stream")]
    TooManyStreams,
    /// The tunnel is closed, or broke before the agent answered.
    #[error("the tunnel is closed")]
    TunnelClosed,
    /// The agent did not answer the header in time.
    #[error("the agent did not answer the stream header in time")]
    Timeout,
    /// The agent answered with a refusal (the local service refused, or is unknown).
    #[error("the agent refused the stream: {message}")]
    Refused {
        /// Machine-readable reason.
        code: AckCode,
        /// The agent's explanation.
        message: String,
    },
}

/// Open a data stream on `mux` for `header`'s service and wait for the agent's answer.
pub async fn open_data_stream<M: Mux>(
    mux: &M,
    header: &StreamHeader,
) -> Result<MuxStream, OpenError> {
    let mut stream = mux.open().await.map_err(|e| match e {
        MuxError::TooManyStreams => OpenError::TooManyStreams,
        MuxError::Closed | MuxError::Yamux(_) => OpenError::TunnelClosed,
    })?;
    let ack = tokio::time::timeout(tuning::STREAM_ACK_TIMEOUT, async {
        write_frame(&mut stream, header).await?;
        read_frame::<Ack, _>(&mut stream).await
    })
    .await
    .map_err(|_| OpenError::Timeout)?;
    match ack {
        Ok(Some(Ack::Ok)) => Ok(stream),
        Ok(Some(Ack::Error { code, message })) => Err(OpenError::Refused { code, message }),
        Ok(None) | Err(_) => Err(OpenError::TunnelClosed),
    }
}

/// Why the agent could not read a data stream's header.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The gateway sent no header in time.
    #[error("stream header timed out")]
    Timeout,
    /// The header was malformed.
    #[error("bad stream header: {0}")]
    Frame(#[from] FrameError),
    /// The header's protocol version is not ours (already refused on the stream).
    #[error("protocol version {0} unsupported")]
    UnsupportedVersion(u16),
}

/// Read a data stream's header (agent side). `Ok(None)` when the stream ended before one came.
/// A header of another protocol version is refused on the stream here.
pub async fn accept_data_stream<S>(stream: &mut S) -> Result<Option<StreamHeader>, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let header = tokio::time::timeout(HEADER_TIMEOUT, read_frame::<StreamHeader, _>(stream))
        .await
        .map_err(|_| AcceptError::Timeout)??;
    match header {
        Some(h) if h.version != PROTOCOL_VERSION => {
            let message = format!("protocol version {} unsupported", h.version);
            refuse_data_stream(stream, AckCode::UnsupportedVersion, message).await;
            Err(AcceptError::UnsupportedVersion(h.version))
        }
        other => Ok(other),
    }
}

/// Tell the gateway the local service is connected; raw bytes follow.
pub async fn ack_data_stream<S: AsyncWrite + Unpin>(stream: &mut S) -> Result<(), FrameError> {
    write_frame(stream, &Ack::Ok).await
}

/// Refuse a data stream with a reason, and close our side of it.
pub async fn refuse_data_stream<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: AckCode,
    message: String,
) {
    let _ = write_frame(stream, &Ack::Error { code, message }).await;
    let _ = stream.shutdown().await;
}

/// Why the control-stream handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The peer did not answer in time.
    #[error("timed out waiting for the {0}")]
    Timeout(&'static str),
    /// The stream broke or carried garbage.
    #[error("control stream: {0}")]
    Frame(#[from] FrameError),
    /// The stream ended before the handshake did.
    #[error("the control stream ended during the handshake")]
    Ended,
    /// The gateway refused the agent's Hello, or the agent's Hello was refused by us.
    #[error("refused: {0}")]
    Refused(String),
    /// The peer sent a message that does not belong here.
    #[error("unexpected message {0}")]
    Unexpected(String),
}

/// What the gateway told the agent in its Welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Registration ID the session is bound to.
    pub registration_id: String,
    /// Interval between heartbeats, clamped to 1–300 s.
    pub heartbeat: Duration,
    /// Most data streams the gateway opens at once on this tunnel.
    pub max_streams: u32,
}

/// Agent side: say Hello with our version and services, and wait for the Welcome.
pub async fn say_hello<S>(
    stream: &mut S,
    agent_version: &str,
    services: Vec<ServiceDecl>,
) -> Result<Welcome, HelloError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = ControlMessage::Hello {
        version: PROTOCOL_VERSION,
        agent_version: agent_version.to_owned(),
        services,
    };
    let answer = tokio::time::timeout(HELLO_TIMEOUT, async {
        write_frame(stream, &hello).await?;
        read_frame::<ControlMessage, _>(stream).await
    })
    .await
    .map_err(|_| HelloError::Timeout("gateway's welcome"))??;
    match answer {
        Some(ControlMessage::Welcome {
            registration_id,
            heartbeat_secs,
            max_streams,
            ..
        }) => Ok(Welcome {
            registration_id,
            heartbeat: Duration::from_secs(u64::from(heartbeat_secs.clamp(1, 300))),
            max_streams,
        }),
        Some(ControlMessage::Refused { reason }) => Err(HelloError::Refused(reason)),
        Some(other) => Err(HelloError::Unexpected(format!("{other:?}"))),
        None => Err(HelloError::Ended),
    }
}

/// An agent's Hello that passed the gateway's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Agent software version, for operators.
    pub agent_version: String,
    /// The services it offers (valid, unique names).
    pub services: Vec<ServiceDecl>,
}

/// Gateway side: read the agent's Hello and check it; a Hello that fails the checks is
/// answered Refused here.
pub async fn hear_hello<S>(stream: &mut S) -> Result<Hello, HelloError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let msg = tokio::time::timeout(HELLO_TIMEOUT, read_frame::<ControlMessage, _>(stream))
        .await
        .map_err(|_| HelloError::Timeout("agent's hello"))??;
    match msg {
        Some(ControlMessage::Hello {
            version,
            agent_version,
            services,
        }) => match check_hello(version, &agent_version, &services) {
            Ok(()) => Ok(Hello {
                agent_version,
                services,
            }),
            Err(reason) => {
                let refused = ControlMessage::Refused {
                    reason: reason.clone(),
                };
                let _ = write_frame(stream, &refused).await;
                Err(HelloError::Refused(reason))
            }
        },
        Some(other) => Err(HelloError::Unexpected(format!("{other:?}"))),
        None => Err(HelloError::Ended),
    }
}

/// Gateway side: answer an accepted Hello.
pub async fn welcome<S: AsyncWrite + Unpin>(
    stream: &mut S,
    registration_id: &str,
    heartbeat: Duration,
    max_streams: u32,
) -> Result<(), FrameError> {
    let welcome = ControlMessage::Welcome {
        version: PROTOCOL_VERSION,
        registration_id: registration_id.to_owned(),
        heartbeat_secs: heartbeat.as_secs() as u32,
        max_streams,
    };
    write_frame(stream, &welcome).await
}

fn check_hello(version: u16, agent_version: &str, services: &[ServiceDecl]) -> Result<(), String> {
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {version} is not supported (gateway speaks {PROTOCOL_VERSION})"
        ));
    }
    if !valid_agent_version(agent_version) {
        return Err(format!(
            "agent version must be 1 to {MAX_AGENT_VERSION} characters of [A-Za-z0-9.+_-]"
        ));
    }
    if services.len() > MAX_SERVICES {
        return Err(format!("at most {MAX_SERVICES} services"));
    }
    let mut names = std::collections::HashSet::new();
    for s in services {
        if s.name.is_empty() || s.name.len() > MAX_SERVICE_NAME || !names.insert(s.name.as_str()) {
            return Err(format!("invalid or duplicate service name {:?}", s.name));
        }
    }
    Ok(())
}

/// A version string as a release names itself (`0.1.0`, `1.2.3-rc.1+g1234abc`): it becomes a
/// metric label, so nothing that could mint unbounded or unreadable series.
pub fn valid_agent_version(v: &str) -> bool {
    (1..=MAX_AGENT_VERSION).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}
