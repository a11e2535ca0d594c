//! How the gateway reaches the services behind one tunnel. Our agent multiplexes: a yamux
//! stream per connection, our header first and the agent's answer before any byte. A site
//! with only OpenSSH (`ssh -N -R 0:host:port`) gets one `forwarded-tcpip` channel per
//! connection instead, carrying the bytes as they are; its `ssh` connects to the app when the
//! channel opens and refuses the channel if it cannot.

use std::sync::Arc;

use g2c_proto::handshake::{open_data_stream, OpenError};
use g2c_proto::mux::{Mux, MuxHandle, MuxStream};
use g2c_proto::{tuning, AckCode, StreamHeader};
use russh::server::Msg;
use russh::ChannelStream;
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// One connection to a service behind the tunnel.
pub type TunnelStream = Either<MuxStream, LinkChannel>;

/// The transport of a live session.
pub enum Link {
    /// Our agent's yamux connection over the forwarded channel.
    Mux(MuxHandle),
    /// A stock SSH client's remote forward.
    Ssh(SshLink),
}

/// A stock `ssh -R` session: where its forward was granted, and a signal for its end.
pub struct SshLink {
    handle: russh::server::Handle,
    /// The forward as the client asked for it and was granted (its channels must name it).
    address: String,
    port: u32,
    /// Cancelled when the SSH connection ends.
    closed: CancellationToken,
    /// Channels open at once, bounded like an agent's streams.
    channels: Arc<Semaphore>,
}

/// A forwarded-tcpip channel, holding its place among the session's channels.
pub struct LinkChannel {
    stream: ChannelStream<Msg>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl SshLink {
    /// The link of a granted forward on `handle`; `closed` is cancelled when the connection
    /// ends; at most `max_channels` connections at once.
    pub fn new(
        handle: russh::server::Handle,
        (address, port): (String, u32),
        closed: CancellationToken,
        max_channels: usize,
    ) -> Self {
        Self {
            handle,
            address,
            port,
            closed,
            channels: Arc::new(Semaphore::new(max_channels)),
        }
    }

    async fn open(&self, header: &StreamHeader) -> Result<LinkChannel, OpenError> {
        let slot = self
            .channels
            .clone()
            .try_acquire_owned()
            .map_err(|_| OpenError::TooManyStreams)?;
        let (ip, port) = match header.caller_addr.parse::<std::net::SocketAddr>() {
            Ok(a) => (a.ip().to_string(), u32::from(a.port())),
            Err(_) => ("0.0.0.0".to_owned(), 0),
        };
        let open =
            self.handle
                .channel_open_forwarded_tcpip(self.address.clone(), self.port, ip, port);
        match tokio::time::timeout(tuning::STREAM_ACK_TIMEOUT, open).await {
            Ok(Ok(channel)) => Ok(LinkChannel {
                stream: channel.into_stream(),
                _slot: slot,
            }),
            Ok(Err(russh::Error::ChannelOpenFailure(reason))) => Err(OpenError::Refused {
                code: AckCode::ConnectFailed,
                message: format!(
                    "the site's ssh could not reach its app ({reason:?}) for {}",
                    header.service
                ),
            }),
            Ok(Err(_)) => Err(OpenError::TunnelClosed),
            Err(_) => Err(OpenError::Timeout),
        }
    }
}

impl Link {
    /// Open a connection to `header`'s service; an error says who refused.
    pub async fn open(&self, header: &StreamHeader) -> Result<TunnelStream, OpenError> {
        match self {
            Self::Mux(mux) => open_data_stream(mux, header).await.map(Either::Left),
            Self::Ssh(ssh) => ssh.open(header).await.map(Either::Right),
        }
    }

    /// Whether the tunnel is gone.
    pub fn is_closed(&self) -> bool {
        match self {
            Self::Mux(mux) => mux.is_closed(),
            Self::Ssh(ssh) => ssh.closed.is_cancelled(),
        }
    }

    /// Resolves once the tunnel is gone.
    pub async fn closed(&self) {
        match self {
            Self::Mux(mux) => mux.closed().await,
            Self::Ssh(ssh) => ssh.closed.cancelled().await,
        }
    }

    /// End the tunnel's transport (the SSH connection is disconnected by the session).
    pub fn close(&self) {
        match self {
            Self::Mux(mux) => mux.close(),
            Self::Ssh(ssh) => ssh.closed.cancel(),
        }
    }
}

impl tokio::io::AsyncRead for LinkChannel {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for LinkChannel {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
