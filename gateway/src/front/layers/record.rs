//! The outermost layer: give the request its id (a trusted proxy's `X-Request-Id` when sane,
//! else a new one; an untrusted caller's own id travels on as `X-Caller-Request-Id` and in the
//! audit line), start its record and share its [`Facts`] with the layers below, and on the way
//! out turn any error into its response (the one mapping, [`RequestError::to_response`]),
//! stamp the id on the response and finish the record when the body is done.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use tower::{Layer, Service};

use crate::body::ProxyBody;
use crate::core::Core;
use crate::error::RequestError;
use crate::front::body::Tracked;
use crate::front::headers::{CALLER_REQUEST_ID, REQUEST_ID};
use crate::front::record::RequestRecord;
use crate::front::ConnInfo;

/// Longest caller-supplied request id kept.
const MAX_REQUEST_ID: usize = 128;

/// The record layer of one connection.
#[derive(Clone)]
pub struct RecordLayer {
    /// Metrics and audit.
    pub core: Arc<Core>,
    /// The caller's connection.
    pub conn: ConnInfo,
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Record {
            layer: self.clone(),
            inner,
        }
    }
}

/// The record service.
#[derive(Clone)]
pub struct Record<S> {
    layer: RecordLayer,
    inner: S,
}

impl<S, B> Service<Request<B>> for Record<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = RequestError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The layers below are always ready.
        let _ = self.inner.poll_ready(cx);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let given = req.headers_mut().remove(&REQUEST_ID).filter(sane_id);
        req.headers_mut().remove(&CALLER_REQUEST_ID);
        let (request_id, caller_id) = match given {
            Some(id) if self.layer.conn.trusted_proxy => (id, None),
            given => (new_request_id(), given),
        };
        req.headers_mut().insert(REQUEST_ID, request_id.clone());
        if let Some(id) = &caller_id {
            req.headers_mut().insert(CALLER_REQUEST_ID, id.clone());
        }
        let mut record = RequestRecord::new(
            self.layer.core.clone(),
            self.layer.conn.peer,
            req.method().clone(),
            req.uri().path(),
            request_id,
        );
        record.caller_request_id = caller_id;
        req.extensions_mut().insert(record.facts.clone());
        RecordFuture {
            inner: self.inner.call(req),
            record: Some(record),
        }
    }
}

/// A request id worth keeping: short, visible ASCII only (it reaches logs and the app).
fn sane_id(v: &HeaderValue) -> bool {
    (1..=MAX_REQUEST_ID).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
}

fn new_request_id() -> HeaderValue {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut b);
    let mut hex = [0u8; 16];
    hex::encode_to_slice(b, &mut hex).expect("16 bytes hold 8 in hex");
    HeaderValue::from_bytes(&hex).expect("hex is a valid header")
}

pin_project_lite::pin_project! {
    /// The inner answer, mapped and recorded.
    pub struct RecordFuture<F> {
        #[pin]
        inner: F,
        record: Option<RequestRecord>,
    }
}

impl<F> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<ProxyBody>, RequestError>>,
{
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(a) => a,
        };
        let mut record = this.record.take().expect("polled after completion");
        let mut resp = answer.unwrap_or_else(|e| {
            tracing::debug!(code = e.code(), party = ?e.party(), error = %e, "request refused");
            record.error = Some(e.code());
            e.to_response()
        });
        record.status = resp.status().as_u16();
        resp.headers_mut()
            .insert(REQUEST_ID, record.request_id().clone());
        Poll::Ready(Ok(resp.map(|b| Tracked::new(b, record).boxed())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use crate::front::layers::testing::{fixture, request};
    use crate::front::record::Facts;
    use tower::ServiceExt;

    fn layer(core: &Arc<Core>, trusted_proxy: bool) -> RecordLayer {
        RecordLayer {
            core: core.clone(),
            conn: ConnInfo {
                peer: "127.0.0.1:9".parse().unwrap(),
                tls: false,
                trusted_proxy,
            },
        }
    }

    #[tokio::test]
    async fn errors_become_their_response_and_every_answer_is_counted_with_its_id() {
        let f = fixture(|_| {}).await;
        let failing = tower::service_fn(|req: Request<()>| async move {
            let facts = req.extensions().get::<Arc<Facts>>().unwrap().clone();
            facts.set_registration("abc");
            Err::<Response<ProxyBody>, _>(RequestError::AgentOffline("abc".into()))
        });
        let resp = layer(&f.core, true)
            .layer(failing)
            .oneshot(request("/", &[("x-request-id", "rid-1")]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.headers()["g2c-error"], "agent_offline");
        assert_eq!(
            resp.headers()["x-request-id"],
            "rid-1",
            "a trusted proxy's id is kept"
        );
        drop(resp); // finishes the record
        let text = String::from_utf8(f.core.metrics.render()).unwrap();
        assert!(
            text.contains(r#"g2c_http_errors_total{code="agent_offline",registration="abc"} 1"#),
            "{text}"
        );

        let seen_id = Arc::new(std::sync::Mutex::new(None));
        let seen = seen_id.clone();
        let ok = tower::service_fn(move |req: Request<()>| {
            *seen.lock().unwrap() = req.headers().get("x-request-id").cloned();
            async { Ok::<_, RequestError>(Response::new(empty())) }
        });
        let long = "x".repeat(200);
        let resp = layer(&f.core, true)
            .layer(ok.clone())
            .oneshot(request("/", &[("x-request-id", &long)]))
            .await
            .unwrap();
        let id = resp.headers()["x-request-id"].clone();
        assert_eq!(id.len(), 16, "an oversized caller id is replaced");
        assert_eq!(
            seen_id.lock().unwrap().as_ref(),
            Some(&id),
            "the app sees the same id"
        );

        // From a caller that is no trusted proxy, its id is kept apart, never taken as ours.
        let seen = Arc::new(std::sync::Mutex::new(None));
        let saw = seen.clone();
        let ok = tower::service_fn(move |req: Request<()>| {
            *saw.lock().unwrap() = Some(req.headers().clone());
            async { Ok::<_, RequestError>(Response::new(empty())) }
        });
        let resp = layer(&f.core, false)
            .layer(ok)
            .oneshot(request("/", &[("x-request-id", "rid-2")]))
            .await
            .unwrap();
        assert_ne!(resp.headers()["x-request-id"], "rid-2");
        let headers = seen.lock().unwrap().clone().unwrap();
        assert_eq!(headers["x-request-id"], resp.headers()["x-request-id"]);
        assert_eq!(headers["x-caller-request-id"], "rid-2");
    }
}
