//! `crctl monitor`: the trend points three cycles leave (one week, a rejected
//! file, the next week), read back from the bucket as JSON and as text, with
//! production's score on the version's reference set in each.

use std::process::Command;
use std::time::Duration;

use crs_domain::data::synth::{SynthSpec, write_week};
use crs_platform::storage::layout::EVAL_KEY;
use crs_proto::train::{CycleState, RunCycleRequest};
use crs_testkit::{Stack, wait_for_cycle};

const SPEC: SynthSpec = SynthSpec { first_entity: 1, keywords: 400, attributes: 20, seed: 9 };

fn week(week: i64) -> String {
    let mut csv = Vec::new();
    write_week(&SPEC, week, false, &mut csv).expect("in-memory write");
    String::from_utf8(csv).expect("text")
}

fn monitor(stack: &Stack, json: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crctl"));
    command.env_clear().args(["monitor", "--model-ver", "v1"]).env("BUCKET_URL", &stack.bucket_url);
    if json {
        command.arg("--json");
    }
    let output = command.output().expect("run crctl");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_reads_one_point_per_cycle_scored_on_the_reference_set() {
    let stack = Stack::new().await;
    assert!(monitor(&stack, false).starts_with("no trend points for model v1"));
    stack.put("config/v1/lifecycle.yaml", format!("reference_key: {EVAL_KEY}\n")).await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    let broken = week(3).replacen("Computer", "Fridge", 1);
    let mut cycles = Vec::new();
    for (key, file) in [("week1.csv", week(1)), ("week3-broken.csv", broken), ("week2.csv", week(2))] {
        stack.put(&format!("data/incoming/{key}"), file).await;
        let started = client.run_cycle(RunCycleRequest { model_ver: "v1".into() }).await.expect("cycle").into_inner();
        let cycle = wait_for_cycle(&mut client, started, Duration::from_secs(120)).await;
        assert_eq!(cycle.state(), CycleState::Succeeded, "{cycle:?}");
        cycles.push(cycle);
    }

    let json: serde_json::Value = serde_json::from_str(&monitor(&stack, true)).expect("JSON");
    let points = json["points"].as_array().expect("points");
    let ids: Vec<&str> = points.iter().map(|p| p["cycle_id"].as_str().unwrap()).collect();
    assert_eq!(ids, cycles.iter().map(|c| c.cycle_id.as_str()).collect::<Vec<_>>(), "oldest first");
    let rows: Vec<u64> = points.iter().map(|p| p["ingest"]["rows"].as_u64().unwrap()).collect();
    assert!(rows[0] > 0 && rows[1] == 0 && rows[2] > 0, "{rows:?}");
    assert_eq!(points[1]["ingest"]["rejected_files"], 1);
    assert!(points[0]["drift"].is_null() && points[2]["drift"]["device_psi"].as_f64().is_some(), "{json:#}");
    // Every point scores production on the same file, so they compare.
    let reference: Vec<&serde_json::Value> = points.iter().map(|p| &p["reference"]).collect();
    assert!(reference.iter().all(|r| r["key"] == EVAL_KEY && r["sha256"] == reference[0]["sha256"]), "{json:#}");
    assert!(reference.iter().all(|r| r["logloss"].as_f64().is_some_and(|l| l > 0.0 && l < 1.0)), "{json:#}");
    assert_eq!(reference[0]["run_id"].as_str(), Some(cycles[0].production_run_id.as_str()));
    assert_eq!(reference[0]["logloss"], reference[1]["logloss"], "the same production run, the same score");
    assert!(points.iter().all(|p| p["captured_rows"] == 0), "nothing served, nothing captured");

    let text = monitor(&stack, false);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.lines().next().unwrap().ends_with("live live PSI  live l-l  decision"), "{text}");
    assert!(text.lines().nth(2).unwrap().contains("no new data: rejected data/incoming/week3-broken.csv"), "{text}");
    let index = String::from_utf8(stack.get("reports/v1/index.html").await.expect("index")).unwrap();
    assert!(
        index.contains("production&#39;s log-loss on the reference set")
            || index.contains("log-loss on the reference set")
    );
}
