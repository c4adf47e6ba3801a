//! The analytics notebook (`analytics/analytics.ipynb`) run top to bottom
//! headless (nbclient) against a stack this test starts: both services on a
//! bucket of the real keyword data when `CRS_REAL_DATA` names it (split into
//! training and evaluation files by `fixtures/serve_parity.py`, the models
//! fitted on a keyword sample), generated data otherwise. It trains v1 and v2,
//! fits xgboost and lightgbm, imports them and checks the served predictions
//! against its local ones.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crs_testkit::Stack;

mod common;

/// Training keywords the notebook fits on when the data is the real file: the
/// services are debug builds here, and the notebook must end within 3 minutes.
const REAL_DATA_SAMPLE_KEYWORDS: u32 = 4000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analytics_notebook_runs_top_to_bottom() {
    let stack = Stack::new().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sample = common::put_real_data_split(&stack).await.then(|| REAL_DATA_SAMPLE_KEYWORDS.to_string());
    let train = stack.start_train(stack.train_config()).await;
    let serve = stack.start_serve(stack.serve_config()).await;
    let started = Instant::now();
    let mut command = Command::new("python3");
    command
        .arg(root.join("analytics/run_notebook.py"))
        .env("CRS_TRAIN_ADDR", train.addr.to_string())
        .env("CRS_SERVE_ADDR", serve.addr.to_string())
        .env("CRS_BUCKET", stack.bucket_dir());
    if let Some(keywords) = sample {
        command.env("CRS_SAMPLE_KEYWORDS", keywords);
    }
    // The notebook's child process blocks; the services run on this runtime's workers.
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!("{}", String::from_utf8_lossy(&output.stdout));
    println!("the notebook ran in {seconds:.1} s");
    assert!(
        output.status.success(),
        "the notebook failed (pip install -r analytics/requirements.txt): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(seconds < 180.0, "the notebook took {seconds:.0} s, more than 3 minutes");
}
