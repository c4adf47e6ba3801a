//! The lifecycle on the real keyword data (only when `CRS_REAL_DATA` names a
//! file in the raw schema): production trained on week 30, week 31 arrives as
//! new data, and the cycle decides; a first cycle from week 30 alone. Prints
//! the numbers.

use std::time::Duration;

use crs_proto::train::{CycleState, RunCycleRequest, StartTrainingRequest};
use crs_testkit::{Stack, gunzip, train_to_end, wait_for_cycle};

fn real_data() -> Option<String> {
    let Some(path) = std::env::var_os("CRS_REAL_DATA").filter(|p| !p.is_empty()) else {
        println!("skipped: CRS_REAL_DATA not set");
        return None;
    };
    let path = std::path::PathBuf::from(path);
    let from_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&path);
    let path = if path.is_relative() && !path.exists() && from_root.exists() { from_root } else { path };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("CRS_REAL_DATA={}: {e}", path.display()));
    Some(gunzip(&bytes))
}

/// The file's rows of one week, with its header.
fn week(text: &str, week: &str) -> String {
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    let column = header.split(',').position(|c| c == "week").expect("week column");
    let rows: Vec<&str> = lines.filter(|l| l.split(',').nth(column) == Some(week)).collect();
    assert!(!rows.is_empty(), "no rows of week {week}");
    format!("{header}\n{}\n", rows.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_on_the_second_real_week() {
    let Some(text) = real_data() else { return };
    let (week30, week31) = (week(&text, "30"), week(&text, "31"));
    let stack = Stack::new().await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();

    stack.put("data/real/week30.csv", week30.clone()).await;
    let request = StartTrainingRequest { train_key: "data/real/week30.csv".into(), ..Default::default() };
    let job = train_to_end(&mut client, request).await;
    assert!(job.state() == crs_proto::train::JobState::Succeeded, "{}", job.error);
    println!("production on week 30: run {}", job.run_id);

    stack.put("data/incoming/week30.csv", week30).await;
    stack.put("data/incoming/week31.csv", week31).await;
    let started = client.run_cycle(RunCycleRequest::default()).await.expect("cycle").into_inner();
    let cycle = wait_for_cycle(&mut client, started, Duration::from_secs(300)).await;
    assert_eq!(cycle.state(), CycleState::Succeeded, "{cycle:?}");
    let record: serde_json::Value = serde_json::from_slice(&stack.get(&cycle.record_key).await.unwrap()).unwrap();
    let drift = &record["drift"];
    println!("cycle decision: {}", cycle.decision);
    println!(
        "drift on weeks {}: production log-loss {} against {} at promotion; unseen keyword share {}; device PSI {}; max attribute PSI {}; drifted {} {}",
        drift["weeks"],
        drift["logloss"],
        drift["reference_logloss"],
        drift["shift"]["unseen_keyword_share"],
        drift["shift"]["device_psi"],
        drift["shift"]["attribute_psi"][0]["psi"],
        drift["drifted"],
        drift["reasons"]
    );
    for entry in record["ingested"].as_array().expect("ingested") {
        println!("ingested {}: {} rows read, {} used", entry["key"], entry["rows"]["read"], entry["rows"]["used"]);
    }
    assert!(drift["logloss"].as_f64().is_some_and(f64::is_finite), "{record:#}");
    assert!(!cycle.run_id.is_empty(), "new data with the default rules trains a challenger: {cycle:?}");
}

/// One real weekly file in an empty bucket: the first cycle holds out
/// keywords and promotes a production run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_cycle_from_one_real_week() {
    let Some(text) = real_data() else { return };
    let stack = Stack::new().await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    stack.put("data/incoming/week30.csv", week(&text, "30")).await;
    let started = client.run_cycle(RunCycleRequest::default()).await.expect("cycle").into_inner();
    let cycle = wait_for_cycle(&mut client, started, Duration::from_secs(600)).await;
    assert_eq!(cycle.state(), CycleState::Succeeded, "{cycle:?}");
    println!("first cycle on week 30: {}", cycle.decision);
    assert!(!cycle.run_id.is_empty() && cycle.run_id == cycle.production_run_id, "{cycle:?}");
    assert!(cycle.decision.starts_with("first run from 1 week(s)"), "{cycle:?}");
}
