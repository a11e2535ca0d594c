//! One data stream on the agent side: read the gateway's header, connect to the named local
//! service (by name, from our own config only), acknowledge, then copy bytes both ways with
//! half-close preserved.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use g2c_proto::handshake::{accept_data_stream, ack_data_stream, refuse_data_stream};
use g2c_proto::mux::MuxStream;
use g2c_proto::tap::{Tap, TapObserver};
use g2c_proto::{tuning, AckCode};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::origin_h2::H2Slot;
use crate::origin_tls::{chose_h2, OriginTls};
use crate::quickack::QuickAck;
use crate::status::Status;

/// A configured service as the running session serves it.
#[derive(Debug, Clone)]
pub struct LiveService {
    /// Its configuration.
    pub config: ServiceConfig,
    /// Cancelled when the service is changed or removed live: its open streams (pooled
    /// upstream connections included) close, so no traffic keeps going to the old address.
    pub retired: CancellationToken,
    /// For an HTTPS origin, its TLS set-up, or why it is unusable (streams are refused with
    /// `local_tls` then, never sent in the clear).
    pub tls: Option<Result<OriginTls, String>>,
    /// For an origin that chose HTTP/2, its one shared connection.
    pub h2: Arc<H2Slot>,
}

/// Services by name, as configured locally.
pub type ServiceMap = HashMap<String, LiveService>;

/// The map for `services`, keeping the streams of unchanged services and retiring (closing)
/// those of services that changed or went away since `previous`.
pub fn service_map(services: &[ServiceConfig], previous: Option<&ServiceMap>) -> ServiceMap {
    let map: ServiceMap = services
        .iter()
        .map(|s| {
            let kept = previous
                .and_then(|p| p.get(&s.name))
                .filter(|old| old.config == *s);
            let retired = kept.map(|old| old.retired.clone()).unwrap_or_default();
            let (tls, h2) = match kept {
                Some(old) => (old.tls.clone(), old.h2.clone()),
                None => (OriginTls::for_service(s).transpose(), Arc::default()),
            };
            if let Some(Err(e)) = &tls {
                tracing::error!(service = %s.name, error = %e, "HTTPS origin unusable; its requests are refused");
            }
            (
                s.name.clone(),
                LiveService {
                    config: s.clone(),
                    retired,
                    tls,
                    h2,
                },
            )
        })
        .collect();
    for (name, old) in previous.into_iter().flatten() {
        if map.get(name).is_none_or(|new| new.config != old.config) {
            old.retired.cancel();
        }
    }
    map
}

/// Adds what passes through a local socket to the agent's byte counters as it flows (a pooled
/// connection can live for hours; its traffic shows at once, not when it closes).
struct StatusBytes<'a>(&'a Status);

impl TapObserver for StatusBytes<'_> {
    fn read(&mut self, bytes: &[u8]) {
        self.0.add_bytes(0, bytes.len() as u64);
    }

    fn wrote(&mut self, n: usize) {
        self.0.add_bytes(n as u64, 0);
    }
}

/// The same counters, seen from the tunnel stream's side (an HTTP/2 origin is reached
/// through the agent's own client, so its bytes are counted where they enter and leave the
/// stream): what the stream gives was sent to the app.
struct StreamBytes<'a>(&'a Status);

impl TapObserver for StreamBytes<'_> {
    fn read(&mut self, bytes: &[u8]) {
        self.0.add_bytes(bytes.len() as u64, 0);
    }

    fn wrote(&mut self, n: usize) {
        self.0.add_bytes(0, n as u64);
    }
}

/// Serve one stream opened by the gateway, counting its bytes into `status` as they flow.
pub async fn serve_stream(mut stream: MuxStream, services: Arc<ServiceMap>, status: &Status) {
    let header = match accept_data_stream(&mut stream).await {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "stream refused");
            return;
        }
    };
    tracing::debug!(service = %header.service, request = %header.request_id, caller = %header.caller_addr, "stream");
    let Some(live) = services.get(&header.service) else {
        refuse_data_stream(
            &mut stream,
            AckCode::UnknownService,
            format!("no service named {:?}", header.service),
        )
        .await;
        return;
    };
    let service = &live.config;
    if let Some(sender) = service.http2.then(|| live.h2.current()).flatten() {
        if ack_data_stream(&mut stream).await.is_ok() {
            let stream = Tap::new(stream, StreamBytes(status));
            crate::origin_h2::bridge(stream, sender, service.address(), &live.retired).await;
        }
        return;
    }
    let Some(local) = connect_local(&mut stream, service).await else {
        return;
    };
    let Some(tls) = &live.tls else {
        if ack_data_stream(&mut stream).await.is_ok() {
            splice(stream, Tap::new(local, StatusBytes(status)), live).await;
        }
        return;
    };
    serve_tls(stream, local, tls, live, status).await;
}

/// The rest of a stream to an HTTPS origin: shake hands (its failure is `local_tls`, never a
/// plaintext retry), then splice HTTP/1.1 or, when the origin chose h2, translate onto the
/// service's HTTP/2 connection.
async fn serve_tls(
    mut stream: MuxStream,
    local: QuickAck,
    tls: &Result<OriginTls, String>,
    live: &LiveService,
    status: &Status,
) {
    let service = &live.config;
    let shaken = match tls {
        Ok(tls) => tokio::time::timeout(tuning::LOCAL_CONNECT_TIMEOUT, tls.connect(local))
            .await
            .unwrap_or_else(|_| Err("TLS handshake timed out".into())),
        Err(e) => Err(e.clone()),
    };
    let origin = match shaken {
        Ok(origin) if chose_h2(&origin) => {
            match live
                .h2
                .start(origin, &service.name, live.retired.clone())
                .await
            {
                Ok(sender) => {
                    if ack_data_stream(&mut stream).await.is_ok() {
                        let stream = Tap::new(stream, StreamBytes(status));
                        crate::origin_h2::bridge(stream, sender, service.address(), &live.retired)
                            .await;
                    }
                    return;
                }
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    match origin {
        Ok(origin) => {
            if ack_data_stream(&mut stream).await.is_ok() {
                splice(stream, Tap::new(origin, StatusBytes(status)), live).await;
            }
        }
        Err(e) => {
            tracing::warn!(service = %service.name, local = %service.local, error = %e, "local HTTPS origin refused: TLS");
            refuse_data_stream(
                &mut stream,
                AckCode::LocalTls,
                format!("{} ({}): {e}", service.name, service.local),
            )
            .await;
        }
    }
}

/// Connect to the service's local address, tuned; `None` once the stream has been refused
/// with the reason.
async fn connect_local(stream: &mut MuxStream, service: &ServiceConfig) -> Option<QuickAck> {
    match tokio::time::timeout(
        tuning::LOCAL_CONNECT_TIMEOUT,
        TcpStream::connect(service.address()),
    )
    .await
    {
        Ok(Ok(s)) => {
            tune_socket(&s);
            Some(QuickAck::new(s))
        }
        Ok(Err(e)) => {
            tracing::info!(service = %service.name, local = %service.local, error = %e, "local service refused");
            refuse_data_stream(
                stream,
                AckCode::ConnectFailed,
                format!("{} ({}): {e}", service.name, service.local),
            )
            .await;
            None
        }
        Err(_) => {
            refuse_data_stream(
                stream,
                AckCode::ConnectTimeout,
                format!("{}: connect timed out", service.name),
            )
            .await;
            None
        }
    }
}

/// Copy both ways until either side ends or the service is retired.
async fn splice<L>(mut stream: MuxStream, mut local: L, live: &LiveService)
where
    L: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = &live.config.name;
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut stream,
        &mut local,
        tuning::SPLICE_BUFFER,
        tuning::SPLICE_BUFFER,
    );
    tokio::select! {
        r = copy => if let Err(e) = r {
            tracing::debug!(service = %name, error = %e, "stream ended with an error");
        },
        _ = live.retired.cancelled() => {
            tracing::info!(service = %name, "service changed; closing its open stream");
        }
    }
}

/// `TCP_NODELAY` and keepalive on the local leg, so a database connection that idles for hours
/// is kept (and a vanished host noticed).
fn tune_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
}
