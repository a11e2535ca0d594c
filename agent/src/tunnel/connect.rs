//! Dialing the gateway: TCP, the SSH handshake against the pinned host key, public-key auth
//! as the registration, and the registration's `tcpip-forward`, up to the forwarded channel
//! the gateway opens back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use g2c_proto::{sshkeys, tuning};
use russh::client::{self, Msg};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::Channel;
use tokio::sync::mpsc;

use super::TunnelError;
use crate::config::AgentConfig;

/// How long one connection attempt (TCP + SSH handshake + auth + forward) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// SSH client configuration: AES-256-GCM first, no compression, tuned window, keepalive.
pub fn client_config() -> client::Config {
    client::Config {
        preferred: tuning::ssh_preferred(),
        window_size: tuning::SSH_WINDOW_SIZE,
        maximum_packet_size: tuning::SSH_MAX_PACKET_SIZE,
        channel_buffer_size: tuning::SSH_CHANNEL_QUEUE,
        keepalive_interval: Some(tuning::SSH_KEEPALIVE_INTERVAL),
        keepalive_max: tuning::SSH_KEEPALIVE_MAX,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    }
}

/// The client side of the SSH connection: checks the pinned host key, takes the forwarded
/// channel for our tunnel port only.
pub(super) struct ClientHandler {
    pinned: PublicKey,
    tunnel_port: u16,
    channels: mpsc::Sender<Channel<Msg>>,
    mismatch: Arc<AtomicBool>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let ok = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => sshkeys::same_key(key, &self.pinned),
            PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !ok {
            self.mismatch.store(true, Ordering::SeqCst);
        }
        Ok(ok)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        if connected_port != u32::from(self.tunnel_port) {
            drop(reply);
            return Ok(());
        }
        reply.accept().await;
        let _ = self.channels.try_send(channel);
        Ok(())
    }
}

/// Dial the gateway of `config` at `addr` (`host:port`: the configured endpoint, or one node
/// of a cluster) and get the tunnel's forwarded channel.
pub(super) async fn connect(
    config: &AgentConfig,
    addr: &str,
) -> Result<(client::Handle<ClientHandler>, Channel<Msg>), TunnelError> {
    let key = Arc::new(
        sshkeys::read_private_key(&config.key_file)
            .map_err(|e| TunnelError::Control(e.to_string()))?,
    );
    let g = &config.gateway;
    let pinned =
        sshkeys::parse_public(&g.host_key).map_err(|e| TunnelError::Control(e.to_string()))?;
    let (chan_tx, mut chan_rx) = mpsc::channel(1);
    let mismatch = Arc::new(AtomicBool::new(false));
    let handler = ClientHandler {
        pinned,
        tunnel_port: g.tunnel_port,
        channels: chan_tx,
        mismatch: mismatch.clone(),
    };
    let setup = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| TunnelError::Ssh(russh::Error::from(e)))?;
        let _ = tcp.set_nodelay(true);
        // One read syscall per burst instead of several per SSH packet; writes pass through.
        let io = tokio::io::BufReader::with_capacity(tuning::SSH_READ_BUFFER, tcp);
        let mut handle = client::connect_stream(Arc::new(client_config()), io, handler)
            .await
            .map_err(|e| {
                if mismatch.load(Ordering::SeqCst) {
                    TunnelError::HostKeyMismatch
                } else {
                    TunnelError::Ssh(e)
                }
            })?;
        let auth = handle
            .authenticate_publickey(
                &config.registration_id,
                PrivateKeyWithHashAlg::new(key, None),
            )
            .await?;
        if !auth.success() {
            return Err(TunnelError::AuthRefused(config.registration_id.clone()));
        }
        handle
            .tcpip_forward("g2c", u32::from(g.tunnel_port))
            .await
            .map_err(|_| TunnelError::ForwardRefused(g.tunnel_port))?;
        let channel = chan_rx
            .recv()
            .await
            .ok_or(TunnelError::Control("no forwarded channel".into()))?;
        Ok::<_, TunnelError>((handle, channel))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .map_err(|_| TunnelError::Timeout("connecting to the gateway"))?
}
