//! A hostile agent for the fault suite: it holds a valid key and registration, completes the
//! SSH handshake, the forward and the Hello like a real agent, and then misbehaves in one of a
//! few ways. Only tests use it; everything it does stays on loopback.

use std::sync::Arc;
use std::time::Duration;

use g2c_agent::config::AgentConfig;
use g2c_proto::frame::{read_frame, write_frame};
use g2c_proto::mux::{self, Mode, Mux, MuxHandle};
use g2c_proto::{sshkeys, ControlMessage, ServiceDecl, ServiceKind, PROTOCOL_VERSION};
use russh::client::{self, Msg};
use russh::keys::PrivateKeyWithHashAlg;
use russh::Channel;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// How the rogue misbehaves once its tunnel is up.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// Open data streams towards the gateway (only the gateway may).
    OpenStreams(usize),
    /// Announce a control frame far over the frame limit.
    OversizedFrame,
    /// Write bytes that are no frame at all on the control stream.
    Garbage,
    /// Never send another byte (no heartbeats) and never read.
    Silent,
}

struct Handler {
    channels: mpsc::Sender<Channel<Msg>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let _ = self.channels.try_send(channel);
        Ok(())
    }
}

/// A connected rogue: its mux (to watch the gateway close it) and the SSH handle.
pub struct Rogue {
    /// The yamux connection over the forwarded channel.
    pub mux: MuxHandle,
    _ssh: client::Handle<Handler>,
    _control: Option<g2c_proto::mux::MuxStream>,
}

/// What a rogue says in its Hello.
#[derive(Debug, Clone)]
pub struct Hello {
    /// Its claimed software version.
    pub agent_version: String,
    /// The services it announces.
    pub services: Vec<ServiceDecl>,
}

impl Default for Hello {
    fn default() -> Self {
        Self {
            agent_version: "rogue".into(),
            services: vec![ServiceDecl {
                name: "web".into(),
                kind: ServiceKind::Http,
            }],
        }
    }
}

/// An SSH session authenticated as a registration that never asks for its forward.
pub struct Authenticated(client::Handle<Handler>);

impl Authenticated {
    /// Whether the gateway has closed the session.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Authenticate as `config`'s registration, and do nothing more: no forward is asked. `Err`
/// when the gateway refused the key.
pub async fn authenticated(config: &AgentConfig) -> Result<Authenticated, String> {
    let (tx, _rx) = mpsc::channel(1);
    try_ssh_session(config, tx).await.map(Authenticated)
}

async fn ssh_session(
    config: &AgentConfig,
    channels: mpsc::Sender<Channel<Msg>>,
) -> client::Handle<Handler> {
    let ssh = try_ssh_session(config, channels).await;
    ssh.expect("the rogue holds a valid key")
}

async fn try_ssh_session(
    config: &AgentConfig,
    channels: mpsc::Sender<Channel<Msg>>,
) -> Result<client::Handle<Handler>, String> {
    let g = &config.gateway;
    let key = sshkeys::read_private_key(&config.key_file).unwrap();
    let cfg = Arc::new(g2c_agent::tunnel::client_config());
    let mut ssh = client::connect(cfg, (g.ssh_host.as_str(), g.ssh_port), Handler { channels })
        .await
        .unwrap();
    let auth = ssh
        .authenticate_publickey(
            &config.registration_id,
            PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .unwrap();
    if auth.success() {
        Ok(ssh)
    } else {
        Err("public key refused".into())
    }
}

/// Connect as `config`'s registration, say Hello, read Welcome, then misbehave.
pub async fn connect(config: &AgentConfig, how: Misbehaviour) -> Rogue {
    connect_saying(config, Hello::default(), how)
        .await
        .unwrap_or_else(|refused| panic!("the gateway refused the rogue: {refused}"))
}

/// Like [`connect`], with the Hello given; `Err` carries the gateway's refusal.
pub async fn connect_saying(
    config: &AgentConfig,
    hello: Hello,
    how: Misbehaviour,
) -> Result<Rogue, String> {
    let g = &config.gateway;
    let (tx, mut rx) = mpsc::channel(1);
    let ssh = ssh_session(config, tx).await;
    ssh.tcpip_forward("g2c", u32::from(g.tunnel_port))
        .await
        .unwrap();
    let channel = rx.recv().await.unwrap();
    let (mux, inbound) = mux::spawn(channel.into_stream().compat(), Mode::Server);
    std::mem::forget(inbound); // never serves the gateway's streams
    let mut control = mux.open().await.unwrap();
    let hello = ControlMessage::Hello {
        version: PROTOCOL_VERSION,
        agent_version: hello.agent_version,
        services: hello.services,
    };
    write_frame(&mut control, &hello).await.unwrap();
    match read_frame::<ControlMessage, _>(&mut control).await {
        Ok(Some(ControlMessage::Welcome { .. })) => {}
        Ok(Some(ControlMessage::Refused { reason })) => return Err(reason),
        other => return Err(format!("no welcome: {other:?}")),
    }
    let keep = match how {
        Misbehaviour::OpenStreams(n) => {
            for _ in 0..n {
                match tokio::time::timeout(Duration::from_secs(2), mux.open()).await {
                    Ok(Ok(mut s)) => {
                        let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
                        std::mem::forget(s);
                    }
                    _ => break,
                }
            }
            control
        }
        Misbehaviour::OversizedFrame => {
            let _ = control
                .write_all(&(256u32 * 1024 * 1024).to_be_bytes())
                .await;
            let _ = control.write_all(&[b'{'; 4096]).await;
            control
        }
        Misbehaviour::Garbage => {
            let _ = control.write_all(&[0, 0, 0, 12]).await;
            let _ = control.write_all(b"not json at all").await;
            control
        }
        Misbehaviour::Silent => control,
    };
    Ok(Rogue {
        mux,
        _ssh: ssh,
        _control: Some(keep),
    })
}
