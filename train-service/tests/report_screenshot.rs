//! A run's report rendered by a real browser (headless Chromium), where one is
//! installed: it must render to a screenshot without reaching the network.

use std::path::Path;
use std::process::Command;

use crs_proto::train::{JobState, StartTrainingRequest};
use crs_testkit::{Stack, train_to_end};

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Renders `html` to a PNG at `png`.
pub fn screenshot(browser: &str, html: &Path, png: &Path) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1100,2400",
        ])
        .arg(format!("--user-data-dir={}", html.with_extension("profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run the browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_report_renders_in_a_headless_browser() {
    let Some(browser) = chromium() else {
        println!("skipped: no chromium installed (apt-get install chromium)");
        return;
    };
    let stack = Stack::new().await;
    let train = stack.start_train(stack.train_config()).await;
    let job = train_to_end(&mut train.client.clone(), StartTrainingRequest::default()).await;
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.error);
    let html = stack.bucket_dir().join(format!("reports/v1/runs/{}.html", job.run_id));
    assert!(html.is_file(), "the run's report was written");
    let png = html.with_extension("png");
    let output = screenshot(browser, &html, &png);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "{} bytes", bytes.len());
}
