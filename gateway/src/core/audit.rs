//! The request audit log: one JSON line per front-door HTTP request and per public TCP
//! connection, to a size-rotated file and/or stdout, as `[audit]` in the config says.
//!
//! Lines are serialised on the request's task and handed to one writer thread through a bounded
//! queue, so a slow disk never stalls a request; if the queue is full the line is dropped and
//! counted (`g2c_audit_lines_dropped_total`). A record carries the API key's *id*, never the key,
//! and the request path without its query string (query strings often carry secrets).

use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use serde::Serialize;

use crate::config::AuditConfig;
use g2c_proto::rotate::RotatingFile;

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// One audited request or connection.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// When it finished (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// `http` or `tcp`.
    pub kind: &'static str,
    /// Registration it was for (only IDs that exist; absent when the caller named none).
    pub registration: Option<&'a str>,
    /// ID of the API key used (never the key itself).
    pub key_id: Option<&'a str>,
    /// Caller's address.
    pub caller: String,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'a str>,
    /// Request path, without the query string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    /// The service: a TCP service, or the HTTP service the request went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'a str>,
    /// HTTP status sent to the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Bytes from the caller toward the app.
    pub bytes_in: u64,
    /// Bytes from the app to the caller.
    pub bytes_out: u64,
    /// Duration in milliseconds.
    pub duration_ms: f64,
    /// Gateway error code, when the gateway answered instead of the app.
    pub error: Option<&'a str>,
    /// Request id (`X-Request-Id`) or TCP connection id.
    pub request_id: &'a str,
    /// The `X-Request-Id` a caller that is not a trusted proxy sent, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_request_id: Option<&'a str>,
}

enum Msg {
    Line(String),
    Flush(mpsc::Sender<()>),
}

/// Handle to the audit writer. Disabled (every call a no-op) when the config names no sink.
pub struct AuditLog {
    tx: Option<SyncSender<Msg>>,
    dropped: IntCounter,
}

impl AuditLog {
    /// Start the writer thread for `config`; fails if the file cannot be opened.
    pub fn start(config: &AuditConfig, dropped: IntCounter) -> std::io::Result<Self> {
        if !config.stdout && config.file.is_none() {
            return Ok(Self { tx: None, dropped });
        }
        let file = match &config.file {
            Some(p) => Some(RotatingFile::open(p, config.max_bytes, config.max_files)?),
            None => None,
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stdout = config.stdout;
        std::thread::Builder::new()
            .name("g2c-audit".into())
            .spawn(move || writer(rx, file, stdout))?;
        Ok(Self {
            tx: Some(tx),
            dropped,
        })
    }

    /// Whether records are written anywhere (callers may skip building them otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue one record.
    pub fn record(&self, rec: &AuditRecord<'_>) {
        let Some(tx) = &self.tx else { return };
        let Ok(line) = serde_json::to_string(rec) else {
            return;
        };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Wait (up to `limit`) until every queued line is written and flushed.
    pub fn flush(&self, limit: Duration) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done_rx) = mpsc::channel();
        if tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(limit);
        }
    }
}

fn writer(rx: Receiver<Msg>, mut file: Option<RotatingFile>, stdout: bool) {
    let out = std::io::stdout();
    let mut next = rx.recv().ok();
    while let Some(msg) = next.take() {
        match msg {
            Msg::Line(line) => {
                if let Some(f) = &mut file {
                    if let Err(e) = f.write_line(&line) {
                        tracing::error!(error = %e, "audit file write failed");
                    }
                }
                if stdout {
                    let mut o = out.lock();
                    let _ = o.write_all(line.as_bytes());
                    let _ = o.write_all(b"\n");
                }
            }
            Msg::Flush(done) => {
                flush(&mut file, stdout);
                let _ = done.send(());
            }
        }
        // Flush when the queue runs dry: batches under load, prompt when quiet.
        next = match rx.try_recv() {
            Ok(m) => Some(m),
            Err(_) => {
                flush(&mut file, stdout);
                rx.recv().ok()
            }
        };
    }
    flush(&mut file, stdout);
}

fn flush(file: &mut Option<RotatingFile>, stdout: bool) {
    if let Some(f) = file {
        let _ = f.flush();
    }
    if stdout {
        let _ = std::io::stdout().flush();
    }
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T01:19:17.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let d = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |s: u64, ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(1_795_569_557, 123)), "2026-11-25T01:19:17.123Z");
    }
}
