//! `g2c-agent requests [--follow] [--json]`: the running agent's recent requests, and with
//! `--follow` each new one as it ends, read from its local API (`/v1/requests` and the event
//! stream) with the GUI secret as a bearer token, like `g2c-agent status`.

use std::io::Write;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// Why the requests could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum RequestsError {
    /// Nothing answers at the address.
    #[error("the agent is not running (nothing answers on {0})")]
    NotRunning(SocketAddr),
    /// The agent answered with something else.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
    /// Writing to stdout failed (a closed pipe ends `--follow` quietly).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Keep printing requests as they end.
    pub follow: bool,
    /// One JSON object per line instead of a table.
    pub json: bool,
    /// How many recent requests to print first.
    pub last: usize,
    /// Only this service's.
    pub service: Option<String>,
}

/// One request as the list and the event stream give it.
#[derive(Debug, Deserialize)]
struct Row {
    at_ms: u64,
    service: String,
    request_id: Option<String>,
    method: Option<String>,
    target: Option<String>,
    status: Option<u16>,
    duration_us: u64,
    bytes_in: u64,
    bytes_out: u64,
    error: Option<RowError>,
}

#[derive(Debug, Deserialize)]
struct RowError {
    code: String,
    who: String,
}

/// Print the agent's requests to `out` as `ask` says.
pub async fn run(
    addr: SocketAddr,
    secret: &str,
    ask: &Ask,
    out: &mut impl Write,
) -> Result<(), RequestsError> {
    let service = ask
        .service
        .as_deref()
        .map(|s| {
            format!(
                "&service={}",
                form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
            )
        })
        .unwrap_or_default();
    let list = get(
        addr,
        secret,
        &format!("/v1/requests?limit={}{service}", ask.last),
    )
    .await?;
    let body = list
        .into_body()
        .collect()
        .await
        .map_err(|e| RequestsError::Protocol(e.to_string()))?
        .to_bytes();
    #[derive(Deserialize)]
    struct List {
        latest: u64,
        requests: Vec<serde_json::Value>,
    }
    let list: List =
        serde_json::from_slice(&body).map_err(|e| RequestsError::Protocol(e.to_string()))?;
    if !ask.json && (!list.requests.is_empty() || ask.follow) {
        writeln!(out, "{}", header())?;
    }
    for row in &list.requests {
        print_row(out, row, ask.json)?;
    }
    if !ask.follow {
        return Ok(());
    }
    out.flush()?;
    let path = format!("/v1/requests/stream?after={}{service}", list.latest);
    follow(addr, secret, &path, ask.json, out).await
}

/// Print each `request` event of the stream at `path` as it comes, until it ends.
async fn follow(
    addr: SocketAddr,
    secret: &str,
    path: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), RequestsError> {
    let mut events = get(addr, secret, path).await?.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = events.frame().await {
        let frame = frame.map_err(|e| RequestsError::Protocol(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event = buf.split_to(end + 2).freeze();
            if let Some(row) = event_data(&event) {
                print_row(out, &row, json)?;
                out.flush()?;
            }
        }
        if buf.remaining() > 1 << 20 {
            return Err(RequestsError::Protocol("an event past 1 MiB".into()));
        }
    }
    Ok(())
}

/// The JSON of a `request` event.
fn event_data(event: &Bytes) -> Option<serde_json::Value> {
    let text = std::str::from_utf8(event).ok()?;
    let mut is_request = false;
    let mut data = None;
    for line in text.lines() {
        if line == "event: request" {
            is_request = true;
        } else if let Some(d) = line.strip_prefix("data: ") {
            data = Some(d);
        }
    }
    serde_json::from_str(data.filter(|_| is_request)?).ok()
}

async fn get(
    addr: SocketAddr,
    secret: &str,
    path: &str,
) -> Result<http::Response<hyper::body::Incoming>, RequestsError> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|_| RequestsError::NotRunning(addr))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| RequestsError::Protocol(e.to_string()))?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::AUTHORIZATION, format!("Bearer {secret}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| RequestsError::Protocol(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| RequestsError::Protocol(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(RequestsError::Protocol(format!("HTTP {}", resp.status())));
    }
    Ok(resp)
}

fn header() -> String {
    format!(
        "{:<12} {:<10} {:<7} {:<40} {:>6} {:>10} {:>9} {:>9}  {}",
        "time (UTC)",
        "service",
        "method",
        "path",
        "status",
        "duration",
        "in",
        "out",
        "request id / error"
    )
}

fn print_row(out: &mut impl Write, row: &serde_json::Value, json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{row}");
    }
    let Ok(r) = serde_json::from_value::<Row>(row.clone()) else {
        return Ok(());
    };
    let secs = r.at_ms / 1000;
    let time = format!(
        "{:02}:{:02}:{:02}.{:03}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        r.at_ms % 1000
    );
    let status = r.status.map_or("-".into(), |s| s.to_string());
    let tail = match &r.error {
        Some(e) => format!("{} ({})", e.code, e.who),
        None => r.request_id.unwrap_or_default(),
    };
    writeln!(
        out,
        "{time:<12} {:<10} {:<7} {:<40} {status:>6} {:>7.1} ms {:>9} {:>9}  {tail}",
        r.service,
        r.method.as_deref().unwrap_or("-"),
        r.target.as_deref().unwrap_or("-"),
        r.duration_us as f64 / 1000.0,
        r.bytes_in,
        r.bytes_out,
    )
}
