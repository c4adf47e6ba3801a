//! Slack incoming-webhook notices about what the services did.
//!
//! Delivery runs in the background with a short timeout and a few retries, so a
//! webhook that is slow, down or failing never fails or delays the work it
//! reports on. The URL is a secret: it is never logged.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per notice; waits of 250 ms, then 500 ms, between them.
pub const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Started,
    Succeeded,
    Failed,
}

impl Outcome {
    fn colour(self) -> &'static str {
        match self {
            Outcome::Started => "#439FE0",
            Outcome::Succeeded => "good",
            Outcome::Failed => "danger",
        }
    }
}

/// One message: a line of text plus labelled fields.
#[derive(Clone, Debug)]
pub struct Notice {
    pub outcome: Outcome,
    pub text: String,
    pub fields: Vec<(String, String)>,
}

impl Notice {
    pub fn new(outcome: Outcome, text: impl Into<String>) -> Self {
        Notice { outcome, text: text.into(), fields: Vec::new() }
    }

    pub fn field(mut self, title: &str, value: impl ToString) -> Self {
        self.fields.push((title.to_owned(), value.to_string()));
        self
    }

    /// The Slack incoming-webhook body.
    pub fn payload(&self, source: &str) -> serde_json::Value {
        let fields: Vec<_> = self
            .fields
            .iter()
            .map(|(title, value)| json!({"title": title, "value": value, "short": value.len() <= 40}))
            .collect();
        json!({
            "text": self.text,
            "attachments": [{
                "color": self.outcome.colour(),
                "fields": fields,
                "footer": source,
                "ts": chrono::Utc::now().timestamp(),
            }],
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook URL (not shown: it is a secret)")]
    InvalidUrl,
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    #[error("webhook request failed: {0}")]
    Request(reqwest::Error),
}

/// Posts notices to one webhook, or nowhere when no URL is set.
#[derive(Clone, Debug)]
pub struct Notifier {
    webhook: Option<Arc<Webhook>>,
}

/// The one webhook notices go to, and the deliveries still under way.
#[derive(Debug)]
struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    source: String,
    in_flight: TaskTracker,
}

impl Notifier {
    /// `source` names the sender in every message (e.g. `train-service`).
    pub fn new(url: Option<&str>, source: &str) -> Result<Self, WebhookError> {
        let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
            return Ok(Notifier::disabled());
        };
        let url = reqwest::Url::parse(url.trim()).map_err(|_| WebhookError::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::InvalidUrl);
        }
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .map_err(|e| WebhookError::Request(e.without_url()))?;
        Ok(Notifier {
            webhook: Some(Arc::new(Webhook { client, url, source: source.to_owned(), in_flight: TaskTracker::new() })),
        })
    }

    pub fn disabled() -> Self {
        Notifier { webhook: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.webhook.is_some()
    }

    /// Sends in the background and returns at once. Needs a tokio runtime.
    /// Posts `notice` in the background. A notice caused by a request names
    /// its request id, so the message and the request's log lines can be matched.
    pub fn notify(&self, mut notice: Notice) {
        let Some(webhook) = &self.webhook else { return };
        if let Some(id) = crate::service::request_id::current().filter(|id| !id.is_empty()) {
            notice = notice.field("request id", id);
        }
        let delivering = webhook.clone();
        webhook.in_flight.spawn(
            async move {
                if let Err(e) = delivering.deliver(&notice).await {
                    tracing::warn!(error = %e, text = %notice.text, "webhook notice not delivered");
                }
            }
            .in_current_span(),
        );
    }

    /// Waits up to `within` for notices still being delivered (at shutdown).
    pub async fn flush(&self, within: Duration) {
        if let Some(webhook) = &self.webhook {
            webhook.in_flight.close();
            let _ = tokio::time::timeout(within, webhook.in_flight.wait()).await;
            webhook.in_flight.reopen();
        }
    }
}

impl Webhook {
    async fn deliver(&self, notice: &Notice) -> Result<(), WebhookError> {
        let body = notice.payload(&self.source);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let result = match self.client.post(self.url.clone()).json(&body).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => Err(WebhookError::Status(response.status().as_u16())),
                Err(e) => Err(WebhookError::Request(e.without_url())),
            };
            if attempt >= ATTEMPTS {
                return result;
            }
            if let Err(e) = &result {
                tracing::debug!(error = %e, attempt, "webhook attempt failed, retrying");
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }
}
