//! Request ids that tie a request's log lines and the webhooks it causes
//! together: taken from the caller's `x-request-id` header (gRPC metadata) or
//! made up, put in a `request` span around the request, echoed in the answer's
//! `x-request-id` header, and kept in a task-local for whatever the request
//! starts (a training job, a notice).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crs_domain::rng::SplitMix64;
use tracing::Instrument;

/// The header, as gRPC metadata keys are: lowercase.
pub const HEADER: &str = "x-request-id";

/// Longest id taken from a caller; a longer or unprintable one is replaced.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request this task works for, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `future` as part of request `id`: [`current`] answers `id` inside it.
pub fn scope<F: Future>(id: String, future: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, future)
}

/// A new id: 16 hex digits, unique within the process and unlikely across processes.
pub fn generate() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let seed = nanos ^ (u64::from(std::process::id()) << 40) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", SplitMix64::new(seed).next_u64())
}

/// An id a caller sent, if it is one we can log and send back as it is.
fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The tower layer a server puts in front of its services.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, B, ResB> tower_service::Service<http::Request<B>> for RequestIdService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let sent = request.headers().get(HEADER).and_then(|v| v.to_str().ok()).filter(|id| acceptable(id));
        let id = sent.map_or_else(generate, str::to_owned);
        let value = http::HeaderValue::from_str(&id).expect("ids are printable ASCII");
        // Handlers read it from the metadata like any other header.
        request.headers_mut().insert(HEADER, value.clone());
        let span = tracing::info_span!("request", request_id = %id, rpc = %request.uri().path());
        let answer = span.in_scope(|| self.inner.call(request));
        Box::pin(
            scope(id, async move {
                let mut response = answer.await?;
                response.headers_mut().insert(HEADER, value);
                Ok(response)
            })
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_made_up_unique_and_callers_ids_are_kept_only_when_printable() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 16 && acceptable(id)));
        assert!(acceptable("req-42_abc"));
        for bad in ["", "has space", "tab\t", "é", &"x".repeat(129)] {
            assert!(!acceptable(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_scope_carries_the_id_into_the_work_it_starts() {
        assert_eq!(current(), None);
        let seen = scope("r-1".to_owned(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("r-1"));
    }
}
