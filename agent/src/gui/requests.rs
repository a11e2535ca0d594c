//! The inspector's part of the local API: `/v1/requests` (the recent requests, filtered),
//! `/v1/requests/{seq}` (one opened up), `POST /v1/requests/{seq}/replay`,
//! `/v1/requests/stream` (Server-Sent Events, one `request` event per request as it ends;
//! what the Requests page and `g2c-agent requests --follow` read) and `/v1/metrics/series`
//! (the Traffic page's charts).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use hyper::body::Frame;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{error, json, GuiBody, Resp};
use crate::inspect::entry::safe_method;
use crate::inspect::replay::{replay as send_again, ReplayError};
use crate::inspect::Entry;
use crate::supervisor::Supervisor;

/// Most entries one list answer carries.
const MAX_LIMIT: usize = 10_000;
/// How often an idle event stream says it is alive.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Which entries a caller asked for: `service`, `status` (`2xx`..`5xx`, or `error` for
/// failures and 5xx) and `q` (text in method, path, request id, status or error code).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    service: Option<String>,
    status: Option<String>,
    q: Option<String>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Entry) -> bool {
        if self
            .service
            .as_deref()
            .is_some_and(|s| !s.is_empty() && s != &*e.service)
        {
            return false;
        }
        let class = e.status.map(|s| s / 100);
        let status_ok = match self.status.as_deref() {
            None | Some("") | Some("all") => true,
            Some("error") => e.failure.is_some() || class == Some(5),
            Some(c) => c
                .strip_suffix("xx")
                .and_then(|d| d.parse::<u16>().ok())
                .is_some_and(|d| class == Some(d)),
        };
        status_ok
            && self
                .q
                .as_deref()
                .is_none_or(|q| q.is_empty() || text_matches(e, q))
    }
}

fn text_matches(e: &Entry, q: &str) -> bool {
    let q = q.to_ascii_lowercase();
    let has = |s: Option<&str>| s.is_some_and(|s| s.to_ascii_lowercase().contains(&q));
    has(e.method())
        || has(e.target())
        || has(e.request_id())
        || has(e.failure.as_ref().map(|f| f.code))
        || e.status.is_some_and(|s| s.to_string() == q)
}

#[derive(Debug, Default)]
struct ListQuery {
    after: u64,
    limit: Option<usize>,
    filter: Filter,
}

impl ListQuery {
    /// `after`, `limit`, `service`, `status` and `q` from the query string (others ignored).
    fn parse(query: &str) -> Result<Self, String> {
        let mut q = Self::default();
        let number = |k: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("query: {k} must be a number"))
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "after" => q.after = number(&k, &v)?,
                "limit" => q.limit = Some(number(&k, &v)? as usize),
                "service" => q.filter.service = Some(v.into_owned()),
                "status" => q.filter.status = Some(v.into_owned()),
                "q" => q.filter.q = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok(q)
    }
}

fn bad_query(why: String) -> Resp {
    error(StatusCode::BAD_REQUEST, "bad_request", why)
}

/// `GET /v1/requests`: the kept requests after `after`, oldest first, newest `limit`.
pub fn list(control: &Supervisor, query: &str) -> Resp {
    let q = match ListQuery::parse(query) {
        Ok(q) => q,
        Err(why) => return bad_query(why),
    };
    let inspector = control.status().inspector();
    let limit = q.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
    let latest = *inspector.follow().borrow();
    let entries = inspector.list(q.after, limit, |e| q.filter.matches(e));
    let summaries: Vec<_> = entries.iter().map(|e| e.summary()).collect();
    json(
        StatusCode::OK,
        &serde_json::json!({"latest": latest, "requests": summaries}),
    )
}

/// `GET /v1/requests/{seq}`.
pub fn detail(control: &Supervisor, seq: &str) -> Resp {
    match find(control, seq) {
        Some(e) => json(StatusCode::OK, &e.detail()),
        None => not_kept(),
    }
}

fn find(control: &Supervisor, seq: &str) -> Option<Arc<Entry>> {
    seq.parse::<u64>()
        .ok()
        .and_then(|n| control.status().inspector().get(n))
}

fn not_kept() -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such request (only the most recent are kept)",
    )
}

/// What a replay call says.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayAsk {
    /// Send a request whose method is not safe to repeat (POST, PUT, DELETE, PATCH ...).
    #[serde(default)]
    confirm: bool,
}

/// `POST /v1/requests/{seq}/replay`: the old answer and the new one.
pub async fn replay(control: &Supervisor, seq: &str, ask: ReplayAsk) -> Resp {
    let Some(entry) = find(control, seq) else {
        return not_kept();
    };
    let method = entry.method().unwrap_or("");
    if !safe_method(method) && !ask.confirm {
        return error(
            StatusCode::CONFLICT,
            "confirm_required",
            format!(
                "{method} may change something in the app; send {{\"confirm\": true}} to replay it"
            ),
        );
    }
    let config = control.config();
    let Some(service) = config.services.iter().find(|s| *s.name == *entry.service) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_service",
            format!("the service {:?} is no longer configured", entry.service),
        );
    };
    let settings = control.status().inspector().settings();
    tracing::info!(seq = entry.seq, service = %entry.service, %method, "replaying a request from the GUI");
    match send_again(&entry, service, &settings).await {
        Ok(new) => json(
            StatusCode::OK,
            &serde_json::json!({"original": entry.detail(), "replay": new}),
        ),
        Err(ReplayError::NotReplayable(why)) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "not_replayable", why)
        }
        Err(ReplayError::Local(why)) => error(
            StatusCode::BAD_GATEWAY,
            g2c_proto::error_code::LOCAL_SERVICE_UNAVAILABLE,
            why,
        ),
    }
}

/// `GET /v1/metrics/series[?service=]`.
pub fn series(control: &Supervisor, query: &str) -> Resp {
    let service = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.into_owned());
    let s = control.status().snapshot();
    let view = control
        .status()
        .inspector()
        .series(service.as_deref(), (s.bytes_in, s.bytes_out));
    json(StatusCode::OK, &view)
}

/// `GET /v1/requests/stream`: every request after `after` (or the `Last-Event-ID` a
/// reconnecting browser sends) that passes the filter, as it ends, until the caller goes or
/// the agent stops. A slow reader misses nothing still kept: it reads from the ring, not
/// from a queue of its own.
pub fn stream(
    control: &Supervisor,
    query: &str,
    last_event: Option<&HeaderValue>,
    shutdown: CancellationToken,
) -> Resp {
    let mut q = match ListQuery::parse(query) {
        Ok(q) => q,
        Err(why) => return bad_query(why),
    };
    if let Some(id) = last_event.and_then(|v| v.to_str().ok()?.parse().ok()) {
        q.after = id;
    }
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let inspector = control.status().inspector().clone();
    tokio::spawn(async move {
        let mut follow = inspector.follow();
        let mut last = q.after;
        if tx
            .send(Bytes::from_static(b": following\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let latest = *follow.borrow_and_update();
            for e in inspector.list(last, MAX_LIMIT, |e| q.filter.matches(e)) {
                let data = serde_json::to_string(&e.summary()).unwrap_or_default();
                let event = format!("id: {}\nevent: request\ndata: {data}\n\n", e.seq);
                if tx.send(Bytes::from(event)).await.is_err() {
                    return;
                }
                last = last.max(e.seq);
            }
            last = last.max(latest);
            tokio::select! {
                r = follow.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b": alive\n\n")).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
            }
        }
    });
    let mut r = Response::new(GuiBody::new(EventBody(rx)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// A body fed by the event task, ending when it ends.
struct EventBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
