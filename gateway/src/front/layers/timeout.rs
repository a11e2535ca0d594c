//! The app must start answering within `limits.upstream_timeout_secs` (504 otherwise). Only
//! the response head is timed: a long download is not cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tower::{Layer, Service};

use crate::error::RequestError;
use crate::front::record::Facts;

/// The timeout layer.
#[derive(Clone, Copy)]
pub struct TimeoutLayer {
    /// How long the app has for its response head.
    pub limit: Duration,
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            limit: self.limit,
            inner,
        }
    }
}

/// The timeout service.
#[derive(Clone)]
pub struct Timeout<S> {
    limit: Duration,
    inner: S,
}

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Error = RequestError>,
{
    type Response = S::Response;
    type Error = RequestError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let facts = req.extensions().get::<Arc<Facts>>().cloned();
        TimeoutFuture {
            inner: tokio::time::timeout(self.limit, self.inner.call(req)),
            facts,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner future, or 504 once the limit passed.
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        facts: Option<Arc<Facts>>,
    }
}

impl<F, R> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<R, RequestError>>,
{
    type Output = Result<R, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => {
                let reg = this.facts.as_ref().and_then(|f| f.registration());
                Poll::Ready(Err(RequestError::UpstreamTimeout(
                    reg.unwrap_or_default().to_owned(),
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::empty;
    use crate::front::layers::testing::request;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_is_an_upstream_timeout_naming_the_registration() {
        let slow = tower::service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, RequestError>(http::Response::new(empty()))
        });
        let svc = TimeoutLayer {
            limit: Duration::from_secs(5),
        }
        .layer(slow);
        let mut req = request("/", &[]);
        let facts = Arc::new(Facts::default());
        facts.set_registration("abc");
        req.extensions_mut().insert(facts);
        let err = svc.oneshot(req).await.unwrap_err();
        assert!(
            matches!(&err, RequestError::UpstreamTimeout(r) if r == "abc"),
            "{err:?}"
        );

        let quick = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, RequestError>(http::Response::new(empty()))
        });
        let svc = TimeoutLayer {
            limit: Duration::from_secs(5),
        }
        .layer(quick);
        assert!(svc.oneshot(request("/", &[])).await.is_ok());
    }
}
