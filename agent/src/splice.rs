//! One data stream on the agent side: read the gateway's header, connect to the named local
//! service (by name, from our own config only), acknowledge, then copy bytes both ways with
//! half-close preserved.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use g2c_proto::handshake::{accept_data_stream, ack_data_stream, refuse_data_stream};
use g2c_proto::messages::StreamHeader;
use g2c_proto::mux::MuxStream;
use g2c_proto::tap::{Tap, TapObserver};
use g2c_proto::{tuning, AckCode, ServiceKind};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::inspect::watch::HttpWatch;
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

    fn wrote(&mut self, bytes: &[u8]) {
        self.0.add_bytes(bytes.len() as u64, 0);
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

    fn wrote(&mut self, bytes: &[u8]) {
        self.0.add_bytes(0, bytes.len() as u64);
    }
}

/// A tunnel stream as the agent serves it: an HTTP service's stream carries the inspector's
/// watch (see `inspect::watch`), a TCP service's none.
type Watched = Tap<MuxStream, Option<HttpWatch>>;

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
        let message = format!("no service named {:?}", header.service);
        refuse(
            stream,
            status,
            &header,
            AckCode::UnknownService,
            message,
            true,
        )
        .await;
        return;
    };
    let service = &live.config;
    let http = service.kind == ServiceKind::Http;
    let watch = http.then(|| {
        HttpWatch::new(
            status.inspector().clone(),
            &service.name,
            service.capture_bodies,
        )
    });
    if let Some(sender) = service.http2.then(|| live.h2.current()).flatten() {
        if ack_data_stream(&mut stream).await.is_ok() {
            let stream = Tap::new(stream, (StreamBytes(status), watch));
            crate::origin_h2::bridge(stream, sender, service.address(), &live.retired).await;
        }
        return;
    }
    let local = match connect_local(service).await {
        Ok(local) => local,
        Err((code, message)) => {
            refuse(stream, status, &header, code, message, http).await;
            return;
        }
    };
    serve_local(stream, local, &header, live, status, watch).await;
}

/// The rest of a stream once its service's address answered: splice plain HTTP or TCP, or
/// shake hands with an HTTPS origin first (refused as `local_tls` if that fails).
async fn serve_local(
    mut stream: MuxStream,
    local: QuickAck,
    header: &StreamHeader,
    live: &LiveService,
    status: &Status,
    watch: Option<HttpWatch>,
) {
    let service = &live.config;
    let Some(tls) = &live.tls else {
        if ack_data_stream(&mut stream).await.is_ok() {
            let stream = Tap::new(stream, watch);
            splice(stream, Tap::new(local, StatusBytes(status)), live).await;
        }
        return;
    };
    let origin = match tls_origin(local, tls, live).await {
        Ok(origin) => origin,
        Err(message) => {
            tracing::warn!(service = %service.name, local = %service.local, error = %message, "local HTTPS origin refused: TLS");
            let message = format!("{} ({}): {message}", service.name, service.local);
            let http = watch.is_some();
            refuse(stream, status, header, AckCode::LocalTls, message, http).await;
            return;
        }
    };
    if ack_data_stream(&mut stream).await.is_err() {
        return;
    }
    let stream = Tap::new(stream, watch);
    match origin {
        Origin::H1(origin) => splice(stream, Tap::new(origin, StatusBytes(status)), live).await,
        Origin::H2(sender) => {
            let stream = Tap::new(stream, StreamBytes(status));
            crate::origin_h2::bridge(stream, sender, service.address(), &live.retired).await;
        }
    }
}

/// Refuse the stream with `code`, and show it on the Requests page when it was a request.
async fn refuse(
    mut stream: MuxStream,
    status: &Status,
    header: &StreamHeader,
    code: AckCode,
    message: String,
    inspected: bool,
) {
    if inspected {
        status
            .inspector()
            .refused(&header.service, &header.request_id, code, message.clone());
    }
    refuse_data_stream(&mut stream, code, message).await;
}

/// An HTTPS origin after its handshake: spliced as HTTP/1.1, or the service's h2 connection.
enum Origin {
    H1(Box<tokio_rustls::client::TlsStream<QuickAck>>),
    H2(crate::origin_h2::H2Sender),
}

/// Shake hands with an HTTPS origin (its failure is `local_tls`, never a plaintext retry);
/// when it chose h2, make that the service's HTTP/2 connection.
async fn tls_origin(
    local: QuickAck,
    tls: &Result<OriginTls, String>,
    live: &LiveService,
) -> Result<Origin, String> {
    let tls = tls.as_ref().map_err(Clone::clone)?;
    let origin = tokio::time::timeout(tuning::LOCAL_CONNECT_TIMEOUT, tls.connect(local))
        .await
        .unwrap_or_else(|_| Err("TLS handshake timed out".into()))?;
    if !chose_h2(&origin) {
        return Ok(Origin::H1(Box::new(origin)));
    }
    let name = &live.config.name;
    let sender = live.h2.start(origin, name, live.retired.clone()).await?;
    Ok(Origin::H2(sender))
}

/// Connect to the service's local address, tuned; the refusal's code and reason otherwise.
async fn connect_local(service: &ServiceConfig) -> Result<QuickAck, (AckCode, String)> {
    match tokio::time::timeout(
        tuning::LOCAL_CONNECT_TIMEOUT,
        TcpStream::connect(service.address()),
    )
    .await
    {
        Ok(Ok(s)) => {
            tune_socket(&s);
            Ok(QuickAck::new(s))
        }
        Ok(Err(e)) => {
            tracing::info!(service = %service.name, local = %service.local, error = %e, "local service refused");
            Err((
                AckCode::ConnectFailed,
                format!("{} ({}): {e}", service.name, service.local),
            ))
        }
        Err(_) => Err((
            AckCode::ConnectTimeout,
            format!("{}: connect timed out", service.name),
        )),
    }
}

/// Copy both ways until either side ends or the service is retired.
async fn splice<L>(mut stream: Watched, mut local: L, live: &LiveService)
where
    L: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = &live.config.name;
    let copy = g2c_proto::copy::copy_both_ways(&mut stream, &mut local);
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
