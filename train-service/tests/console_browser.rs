//! The console in a real browser: Debian's chromium driven through
//! chromedriver's W3C WebDriver protocol (plain JSON over HTTP, spoken here
//! with reqwest, so the test adds no crate). The pages show the expected run
//! ids, stages and numbers; a promotion and a rollback are done by clicking and
//! move the production alias in the bucket; without the token the click shows
//! the refusal. Screenshots of the models, version and run pages are written
//! to `docs/` when `CONSOLE_SCREENSHOTS` is set.
//!
//! Skipped (with a message) when chromium or chromedriver is not installed,
//! unless `CI` is set: then it fails.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crs_domain::data::synth::{SynthSpec, write_week};
use crs_domain::models::ModelVer;
use crs_platform::notify::webhook::Notifier;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::ModelStore;
use crs_platform::service::security::{AuthLayer, Secret};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_server::http::{HttpLimits, HttpServer};
use crs_testkit::Stack;
use serde_json::{Value, json};
use train_service::console::{self, Console, ConsoleRule};
use train_service::cycles::Cycles;
use train_service::jobs::Jobs;
use train_service::metrics::TrainMetrics;

const TOKEN: &str = "browser-test-token";
const SPEC: SynthSpec = SynthSpec { first_entity: 1, keywords: 300, attributes: 10, seed: 5 };
const WAIT: Duration = Duration::from_secs(20);

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn console_on(bucket: &Bucket) -> Console {
    let catalog = Catalog::new(ModelStore::new(bucket.clone()));
    let metrics = std::sync::Arc::new(TrainMetrics::new(&mut prometheus_client::registry::Registry::default()));
    let jobs = Jobs::new(catalog.clone(), Notifier::disabled(), 2, metrics.clone());
    let incoming = BucketKey::parse(crs_platform::storage::layout::INCOMING_PREFIX).expect("key");
    let cycles =
        Cycles::new(catalog.clone(), jobs.clone(), Notifier::disabled(), incoming, Duration::from_secs(60), metrics);
    Console::new(catalog, jobs, cycles, ModelVer::parse("v1").expect("v1"))
}

/// chromedriver on a port of its own, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        while reqwest::get(format!("{url}/status")).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session: the few WebDriver commands the test needs.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn open(driver: &Driver) -> Browser {
        let http = reqwest::Client::new();
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }
        }}});
        let answer: Value = http
            .post(format!("{}/session", driver.url))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}"));
        Browser { http, session: format!("{}/session/{id}", driver.url) }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.try_command(method, path, body).await.unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    /// A command's value, or WebDriver's error (a stale element while a page reloads).
    async fn try_command(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value, Value> {
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = if body.is_null() { request } else { request.json(&body) };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if answer["value"]["error"].is_string() { Err(answer["value"].clone()) } else { Ok(answer["value"].clone()) }
    }

    /// The element's text, or `None` while it cannot be read (the page is reloading).
    async fn try_text(&self, css: &str) -> Option<String> {
        let using = json!({ "using": "css selector", "value": css });
        let found = self.try_command(reqwest::Method::POST, "/element", using).await.ok()?;
        let element = found.as_object()?.values().next()?.as_str()?.to_owned();
        let text =
            self.try_command(reqwest::Method::GET, &format!("/element/{element}/text"), Value::Null).await.ok()?;
        text.as_str().map(str::to_owned)
    }

    async fn go(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url })).await;
    }

    async fn find(&self, css: &str) -> String {
        let found =
            self.command(reqwest::Method::POST, "/element", json!({ "using": "css selector", "value": css })).await;
        found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("element id").to_owned()
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.command(reqwest::Method::GET, &format!("/element/{element}/text"), Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn page_text(&self) -> String {
        self.text("body").await
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{element}/clear"), json!({})).await;
        self.command(reqwest::Method::POST, &format!("/element/{element}/value"), json!({ "text": text })).await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{element}/click"), json!({})).await;
    }

    /// Waits until the element's text contains `wanted`, and returns the text.
    async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.try_text(css).await.unwrap_or_default();
            if text.contains(wanted) {
                return text;
            }
            assert!(tokio::time::Instant::now() < deadline, "{css} never said {wanted:?}; it says {text:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        if std::env::var_os("CONSOLE_SCREENSHOTS").is_none() {
            return;
        }
        let png = self.command(reqwest::Method::GET, "/screenshot", Value::Null).await;
        let bytes = decode_base64(png.as_str().expect("base64 PNG"));
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/").to_owned() + name, bytes)
            .expect("write screenshot");
    }

    async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// Standard base64 (WebDriver's screenshots), padding allowed.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk.iter().enumerate().fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    out
}

async fn production(bucket: &Bucket) -> Option<String> {
    let catalog = Catalog::new(ModelStore::new(bucket.clone()));
    catalog.production(ModelVer::parse("v1").unwrap()).await.unwrap().map(|r| r.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_the_runs_and_clicks_promote_and_roll_back_with_the_token() {
    if !installed("chromium") || !installed("chromedriver") {
        // CI installs both (`.ci/run`): there a missing browser is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "CI is set but chromium or chromedriver is not installed");
        println!("skipped: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)");
        return;
    }
    let mut stack = Stack::new().await;
    stack.put("config/v1/lifecycle.yaml", "train_weeks: 2\nholdout_weeks: 1\n").await;
    for w in 1..=3 {
        let mut csv = Vec::new();
        write_week(&SPEC, w, false, &mut csv).unwrap();
        stack.put(&format!("data/incoming/week{w}.csv"), csv).await;
    }
    let console = console_on(&stack.bucket);
    let cycle = console.cycles().start(ModelVer::parse("v1").unwrap(), "browser test").await.expect("cycle");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let cycle = loop {
        let record = console.cycles().get(cycle.model_ver, &cycle.cycle_id).await.unwrap();
        if record.state != train_service::cycles::CycleState::Running {
            break record;
        }
        assert!(tokio::time::Instant::now() < deadline, "cycle did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first = cycle.run_id.expect("the first cycle trains a run").to_string();
    stack.put("config/v1/lifecycle.yaml", "promotion: manual\ntrain_weeks: 2\nholdout_weeks: 1\n").await;
    let second = stack.train("v1").await;
    assert_eq!(production(&stack.bucket).await.as_deref(), Some(first.as_str()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = console::router(console).layer(AuthLayer::new(Some(Secret::new(TOKEN)), ConsoleRule));
    let server = HttpServer::start(listener, app, None, HttpLimits::default()).unwrap();
    let base = format!("http://{}", server.local_addr());

    let driver = Driver::start().await;
    let browser = Browser::open(&driver).await;

    // The models page: production, its numbers, the candidate waiting.
    browser.go(&format!("{base}/")).await;
    let text = browser.page_text().await;
    assert!(text.contains(&first) && text.contains(&second), "{text}");
    let row = browser.text("tr[data-model=\"v1\"]").await;
    assert!(row.contains(&format!("cycle {}", cycle.cycle_id)), "who promoted it: {row}");
    browser.screenshot("console-models.png").await;

    // The version page: both runs with their stages, the chart's note, the history.
    browser.go(&format!("{base}/models/v1")).await;
    assert_eq!(browser.text("#production").await, first);
    let first_row = browser.text(&format!("tr[data-run=\"{first}\"]")).await;
    assert!(first_row.contains("production"), "{first_row}");
    let second_row = browser.text(&format!("tr[data-run=\"{second}\"]")).await;
    assert!(second_row.contains("candidate"), "{second_row}");
    assert!(browser.text("#chart-note").await.contains("do not compare"));
    browser.screenshot("console-version.png").await;

    // The run page: its scores, lineage and importance.
    browser.go(&format!("{base}/models/v1/runs/{first}")).await;
    assert_eq!(browser.text("#stage").await, "production");
    assert!(browser.text("#lineage").await.contains("data/ingested"));
    browser.screenshot("console-run.png").await;

    // Promoting without the token: refused, shown in the page, nothing moves.
    browser.go(&format!("{base}/models/v1")).await;
    let form = format!("form[data-action=\"promote\"][data-run=\"{second}\"]");
    browser.type_into(&format!("{form} input[name=by]"), "alice").await;
    browser.type_into(&format!("{form} input[name=reason]"), "better on week 3").await;
    browser.click(&format!("{form} button")).await;
    let refusal = browser.wait_for_text("#action-status", "refused (401)").await;
    assert!(refusal.contains("token"), "{refusal}");
    assert_eq!(production(&stack.bucket).await.as_deref(), Some(first.as_str()));

    // With the token typed in once: the promotion moves the alias in the bucket.
    browser.type_into("#token", TOKEN).await;
    browser.click(&format!("{form} button")).await;
    browser.wait_for_text("#action-status", "done").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while production(&stack.bucket).await.as_deref() != Some(second.as_str()) {
        assert!(tokio::time::Instant::now() < deadline, "the promotion did not reach the bucket");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.wait_for_text("#production", &second).await;
    assert!(browser.text("#history").await.contains("alice"));

    // The rollback, with the token the tab kept: back to the first run.
    browser.type_into("form[data-action=\"rollback\"] input[name=by]", "bob").await;
    browser.type_into("form[data-action=\"rollback\"] input[name=reason]", "alerts at night").await;
    browser.click("form[data-action=\"rollback\"] button").await;
    browser.wait_for_text("#action-status", "done").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while production(&stack.bucket).await.as_deref() != Some(first.as_str()) {
        assert!(tokio::time::Instant::now() < deadline, "the rollback did not reach the bucket");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.wait_for_text("#production", &first).await;
    let history = browser.text("#history").await;
    assert!(history.contains("bob") && history.contains("alerts at night"), "{history}");

    // The other pages read.
    browser.go(&format!("{base}/models/v1/cycles/{}", cycle.cycle_id)).await;
    assert_eq!(browser.text("#cycle-state").await, "succeeded");
    browser.go(&format!("{base}/ledger")).await;
    assert!(browser.text("#ledger").await.contains("week3.csv"));
    browser.go(&format!("{base}/jobs")).await;
    assert!(browser.text("#jobs-ended").await.contains("succeeded"));
    browser.close().await;
}

#[test]
fn base64_decodes_as_the_standard_alphabet() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("YWJj"), b"abc");
}
