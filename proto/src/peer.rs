//! The peer link between gateway nodes: a node without a registration's tunnel opens a stream
//! to a node that holds one and writes a [`Dial`]; the holder answers a [`DialReply`] before
//! the first byte, and raw bytes follow both ways (HTTP and TCP cross alike). "Not here" and
//! "draining" come before any byte, so the dialling node can try the next holder: never a
//! second hop, never a request sent twice.
//!
//! [`dial`] is the dialling node's half; [`accept_dial`] and [`answer_dial`] the holder's.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::frame::{read_frame, write_frame, FrameError};
use crate::handshake::OpenError;
use crate::messages::AckCode;
use crate::PROTOCOL_VERSION;

/// How long the dialling node waits for the dial itself to come (holder side).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// First frame of every peer-link stream: which registration's tunnel to reach, and the
/// request it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dial {
    /// Protocol version of the dialling node.
    pub version: u16,
    /// Registration whose tunnel the stream goes through.
    pub registration: String,
    /// The agent's service; `None` for the agent's default HTTP service (the dialling node
    /// does not know which services an agent announced on another node).
    pub service: Option<String>,
    /// Request (or connection) id, for logs on every hop.
    pub request_id: String,
    /// The cloud caller's address, for the agent's logs.
    pub caller_addr: String,
    /// Take it even while draining: every holder said "draining", and serving late beats
    /// failing.
    #[serde(default)]
    pub even_if_draining: bool,
}

impl Dial {
    /// A dial for this build's protocol version.
    pub fn new(
        registration: impl Into<String>,
        service: Option<String>,
        request_id: impl Into<String>,
        caller_addr: String,
    ) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            registration: registration.into(),
            service,
            request_id: request_id.into(),
            caller_addr,
            even_if_draining: false,
        }
    }
}

/// The holder's answer to a [`Dial`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum DialReply {
    /// The agent accepted the stream; raw bytes follow.
    Ok,
    /// This node has no tunnel for the registration (it went, or the dialler's view is old).
    NotHere,
    /// This node is draining for a restart: try another holder.
    Draining,
    /// The tunnel has no stream to spare.
    Busy,
    /// The agent did not answer in time.
    Timeout,
    /// The agent refused (unknown service, local app down).
    Refused {
        /// The agent's reason.
        code: AckCode,
        /// The agent's detail.
        message: String,
    },
    /// The dial itself was malformed or of another protocol version.
    BadDial {
        /// What was wrong.
        message: String,
    },
}

impl DialReply {
    /// The holder's answer for a failed open of the stream to its agent.
    pub fn from_open(err: OpenError) -> Self {
        match err {
            OpenError::TooManyStreams => Self::Busy,
            OpenError::TunnelClosed => Self::NotHere,
            OpenError::Timeout => Self::Timeout,
            OpenError::Refused { code, message } => Self::Refused { code, message },
        }
    }
}

/// Why a dial did not give a stream.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The holder has no tunnel for the registration: try another.
    #[error("the peer holds no tunnel for it")]
    NotHere,
    /// The holder is draining: try another (and this one last).
    #[error("the peer is draining")]
    Draining,
    /// The link broke or the holder did not answer in time: try another, and distrust the
    /// link. Nothing of the request has crossed.
    #[error("the peer link failed: {0}")]
    Broken(&'static str),
    /// The holder reached the agent, and the agent (or its tunnel) said no: final.
    #[error("{0}")]
    Open(OpenError),
}

/// Dialling node: write `dial` on a fresh peer-link stream and wait up to `wait` for the
/// answer. No answer in time is [`DialError::Broken`]: the holder may be hung, and nothing of
/// the request has crossed yet.
pub async fn dial<S>(stream: &mut S, dial: &Dial, wait: Duration) -> Result<(), DialError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let answer = tokio::time::timeout(wait, async {
        write_frame(stream, dial).await?;
        read_frame::<DialReply, _>(stream).await
    })
    .await
    .map_err(|_| DialError::Broken("the peer did not answer in time"))?;
    match answer {
        Ok(Some(DialReply::Ok)) => Ok(()),
        Ok(Some(DialReply::NotHere)) => Err(DialError::NotHere),
        Ok(Some(DialReply::Draining)) => Err(DialError::Draining),
        Ok(Some(DialReply::Busy)) => Err(DialError::Open(OpenError::TooManyStreams)),
        Ok(Some(DialReply::Timeout)) => Err(DialError::Open(OpenError::Timeout)),
        Ok(Some(DialReply::Refused { code, message })) => {
            Err(DialError::Open(OpenError::Refused { code, message }))
        }
        Ok(Some(DialReply::BadDial { .. })) => Err(DialError::Broken("the peer refused the dial")),
        Ok(None) | Err(_) => Err(DialError::Broken("the peer link broke")),
    }
}

/// Why the holder could not read a dial.
#[derive(Debug, thiserror::Error)]
pub enum AcceptDialError {
    /// No dial came in time.
    #[error("no dial in time")]
    Timeout,
    /// The frame was garbage (already answered on the stream when possible).
    #[error("bad dial: {0}")]
    Frame(#[from] FrameError),
    /// Another protocol version (already answered).
    #[error("protocol version {0} unsupported")]
    UnsupportedVersion(u16),
}

/// Holder: read the stream's dial. `Ok(None)` when the stream ended before one came.
pub async fn accept_dial<S>(stream: &mut S) -> Result<Option<Dial>, AcceptDialError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let read = tokio::time::timeout(DIAL_TIMEOUT, read_frame::<Dial, _>(stream))
        .await
        .map_err(|_| AcceptDialError::Timeout)?;
    match read {
        Ok(Some(d)) if d.version != PROTOCOL_VERSION => {
            let message = format!("protocol version {} unsupported", d.version);
            answer_dial(stream, &DialReply::BadDial { message }).await?;
            let _ = stream.shutdown().await;
            Err(AcceptDialError::UnsupportedVersion(d.version))
        }
        Ok(other) => Ok(other),
        Err(e) => {
            let message = e.to_string();
            let _ = answer_dial(stream, &DialReply::BadDial { message }).await;
            Err(e.into())
        }
    }
}

/// Holder: answer a dial.
pub async fn answer_dial<S: AsyncWrite + Unpin>(
    stream: &mut S,
    reply: &DialReply,
) -> Result<(), FrameError> {
    write_frame(stream, reply).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dial_and_its_answer_cross_and_bytes_follow() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let holder = tokio::spawn(async move {
            let d = accept_dial(&mut b).await.unwrap().unwrap();
            answer_dial(&mut b, &DialReply::Ok).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut b, b"raw")
                .await
                .unwrap();
            d
        });
        let d = Dial::new("reg1", None, "req-1", "203.0.113.5:1".into());
        dial(&mut a, &d, DIAL_TIMEOUT).await.unwrap();
        let mut buf = [0u8; 3];
        tokio::io::AsyncReadExt::read_exact(&mut a, &mut buf)
            .await
            .unwrap();
        assert_eq!(&buf, b"raw");
        assert_eq!(holder.await.unwrap(), d);
    }

    #[tokio::test]
    async fn not_here_and_draining_say_try_next_and_refusals_are_final() {
        for (reply, next) in [
            (DialReply::NotHere, true),
            (DialReply::Draining, true),
            (DialReply::Busy, false),
            (
                DialReply::Refused {
                    code: AckCode::ConnectFailed,
                    message: "refused".into(),
                },
                false,
            ),
        ] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            tokio::spawn(async move {
                let _ = accept_dial(&mut b).await;
                answer_dial(&mut b, &reply).await.unwrap();
            });
            let err = dial(
                &mut a,
                &Dial::new("r", None, "q", String::new()),
                DIAL_TIMEOUT,
            )
            .await
            .unwrap_err();
            let try_next = matches!(err, DialError::NotHere | DialError::Draining);
            assert_eq!(try_next, next, "{err}");
        }
    }

    #[tokio::test]
    async fn garbage_and_other_versions_are_refused_not_panicked_on() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let mut bad = Dial::new("r", None, "q", String::new());
        bad.version = 99;
        write_frame(&mut a, &bad).await.unwrap();
        assert!(matches!(
            accept_dial(&mut b).await,
            Err(AcceptDialError::UnsupportedVersion(99))
        ));
        let answer: Option<DialReply> = read_frame(&mut a).await.unwrap();
        assert!(matches!(answer, Some(DialReply::BadDial { .. })));

        let (mut a, mut b) = tokio::io::duplex(4096);
        tokio::io::AsyncWriteExt::write_all(&mut a, &[0, 0, 0, 3, b'{', b'x', b'}'])
            .await
            .unwrap();
        assert!(matches!(
            accept_dial(&mut b).await,
            Err(AcceptDialError::Frame(_))
        ));
        drop(a);
        let (_a, mut b) = tokio::io::duplex(16);
        drop(_a);
        assert!(accept_dial(&mut b).await.unwrap().is_none(), "clean EOF");
    }
}
