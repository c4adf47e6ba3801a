//! Waiting for a condition in a test: poll it under a deadline, never sleep
//! for a time that is hoped to be long enough.

use std::time::Duration;

/// How often [`wait_until`] checks.
const POLL: Duration = Duration::from_millis(20);

/// Checks `condition` until it holds; panics saying `what` did not happen once
/// `within` has passed.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(POLL).await;
    }
}
