//! Webhook notices against a real HTTP receiver: delivered as Slack JSON, retried
//! on errors, and never in the way of the work they report on.

use std::time::{Duration, Instant};

use crs_platform::notify::webhook::{ATTEMPTS, Notice, Notifier, Outcome};
use crs_testkit::{Behaviour, WebhookReceiver};
use serde_json::json;

/// Long enough for any local delivery, short enough to keep the suite fast.
const DELIVERY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn notice_is_delivered_as_slack_json() {
    let receiver = WebhookReceiver::start(Behaviour::Accept).await;
    let notifier = Notifier::new(Some(&receiver.url()), "train-service").unwrap();
    assert!(notifier.is_enabled());
    let long = "x".repeat(41);
    notifier.notify(
        Notice::new(Outcome::Succeeded, "v1 run 20260101T000000000Z-abcdef finished")
            .field("model", "v1")
            .field("eval wmae", 0.0125)
            .field("note", &long),
    );
    notifier.flush(DELIVERY).await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let body = &requests[0];
    assert_eq!(body["text"], "v1 run 20260101T000000000Z-abcdef finished");
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["color"], "good");
    assert_eq!(attachment["footer"], "train-service");
    assert!(attachment["ts"].as_i64().is_some_and(|ts| ts > 1_700_000_000), "{attachment}");
    assert_eq!(
        attachment["fields"],
        json!([
            {"title": "model", "value": "v1", "short": true},
            {"title": "eval wmae", "value": "0.0125", "short": true},
            {"title": "note", "value": long, "short": false},
        ])
    );
}

#[tokio::test]
async fn each_outcome_has_its_colour() {
    let receiver = WebhookReceiver::start(Behaviour::Accept).await;
    let notifier = Notifier::new(Some(&receiver.url()), "serve-service").unwrap();
    for (outcome, text) in [(Outcome::Started, "started"), (Outcome::Succeeded, "done"), (Outcome::Failed, "failed")] {
        notifier.notify(Notice::new(outcome, text));
    }
    notifier.flush(DELIVERY).await;
    let mut colours: Vec<(String, String)> = receiver
        .requests()
        .iter()
        .map(|b| (b["text"].as_str().unwrap().to_owned(), b["attachments"][0]["color"].as_str().unwrap().to_owned()))
        .collect();
    colours.sort();
    assert_eq!(
        colours,
        [("done".into(), "good".into()), ("failed".into(), "danger".into()), ("started".into(), "#439FE0".into())]
    );
}

#[tokio::test]
async fn failing_receiver_gets_every_attempt_and_notify_returns_at_once() {
    let receiver = WebhookReceiver::start(Behaviour::Fail(500)).await;
    let notifier = Notifier::new(Some(&receiver.url()), "train-service").unwrap();
    let started = Instant::now();
    notifier.notify(Notice::new(Outcome::Failed, "run failed"));
    assert!(started.elapsed() < Duration::from_millis(50), "notify took {:?}", started.elapsed());

    notifier.flush(DELIVERY).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), ATTEMPTS as usize, "{requests:?}");
    assert!(requests.iter().all(|b| b["text"] == "run failed"));
    // Waits of 250 ms and 500 ms between the three attempts.
    assert!(started.elapsed() >= Duration::from_millis(700), "retried after {:?}", started.elapsed());
}

#[tokio::test]
async fn receiver_that_recovers_gets_the_notice_on_a_retry() {
    let receiver = WebhookReceiver::start(Behaviour::Fail(503)).await;
    let notifier = Notifier::new(Some(&receiver.url()), "train-service").unwrap();
    notifier.notify(Notice::new(Outcome::Succeeded, "retried"));
    receiver.wait_for(DELIVERY, |b| b["text"] == "retried").await.expect("first attempt");
    receiver.set_behaviour(Behaviour::Accept);
    notifier.flush(DELIVERY).await;
    // One refused attempt, then one accepted; no more after that.
    assert_eq!(receiver.texts(), ["retried", "retried"]);
}

#[tokio::test]
async fn hanging_receiver_blocks_neither_notify_nor_a_bounded_flush() {
    let receiver = WebhookReceiver::start(Behaviour::Hang).await;
    let notifier = Notifier::new(Some(&receiver.url()), "serve-service").unwrap();
    let started = Instant::now();
    notifier.notify(Notice::new(Outcome::Started, "hanging"));
    assert!(started.elapsed() < Duration::from_millis(50), "notify took {:?}", started.elapsed());
    receiver.wait_for(DELIVERY, |b| b["text"] == "hanging").await.expect("the request arrived");

    let bound = Duration::from_millis(300);
    let flushing = Instant::now();
    notifier.flush(bound).await;
    let took = flushing.elapsed();
    assert!(took >= bound && took < bound + Duration::from_millis(500), "flush({bound:?}) took {took:?}");

    // The notifier still works after a flush that gave up.
    receiver.set_behaviour(Behaviour::Accept);
    notifier.notify(Notice::new(Outcome::Succeeded, "after"));
    receiver.wait_for(DELIVERY, |b| b["text"] == "after").await.expect("a later notice is delivered");
}

#[tokio::test]
async fn flush_with_nothing_in_flight_returns_at_once() {
    let receiver = WebhookReceiver::start(Behaviour::Accept).await;
    let notifier = Notifier::new(Some(&receiver.url()), "train-service").unwrap();
    let started = Instant::now();
    notifier.flush(Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_millis(100), "flush took {:?}", started.elapsed());
}

#[tokio::test]
async fn notifier_without_url_posts_nothing() {
    let receiver = WebhookReceiver::start(Behaviour::Accept).await;
    for url in [None, Some(""), Some("   ")] {
        let notifier = Notifier::new(url, "train-service").unwrap();
        assert!(!notifier.is_enabled(), "{url:?}");
        notifier.notify(Notice::new(Outcome::Succeeded, "nowhere"));
        notifier.flush(Duration::from_secs(1)).await;
    }
    let disabled = Notifier::disabled();
    assert!(!disabled.is_enabled());
    disabled.notify(Notice::new(Outcome::Failed, "nowhere"));
    disabled.flush(Duration::from_secs(1)).await;
    // flush returns once every notice queued was answered: a post would be recorded by now.
    assert!(receiver.requests().is_empty());
}

#[test]
fn invalid_url_is_refused_without_showing_it() {
    for url in ["not a url", "ftp://hooks.example/secret-token", "file:///secret-token"] {
        let err = Notifier::new(Some(url), "train-service").unwrap_err().to_string();
        assert_eq!(err, "invalid webhook URL (not shown: it is a secret)", "{url}");
    }
}
