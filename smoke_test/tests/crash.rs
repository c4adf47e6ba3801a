//! Crashes in the middle of a cycle, with the real train-service binary: for
//! every fail point (`crs_platform::failpoint::FailStep::ALL`), train-service runs a
//! cycle with `CRS_FAIL_AT=<step>` on a copy of a bucket with new files and
//! aborts there, as `kill -9` would; a restart without the fail point must find
//! the bucket consistent, get past the dead cycle's lease within its ttl, and
//! complete the next cycle. The batch steps are tried on serve-service's
//! `PredictBatch` instead, in the second test.

use std::path::Path;
use std::time::{Duration, Instant};

use crs_platform::failpoint::FailStep;
use crs_platform::predictions::capture;
use serde_json::Value;
use smoke_test::lifecycle::{
    CYCLE, LEASE_SECS, TrainProcess, Weeks, check_ingestion, check_production, cycle_record, cycle_records,
    lifecycle_bucket, wait_for_cycle,
};
use smoke_test::{Crctl, Service, build_binaries, copy_tree, free_addr, read_text, tail, wait_until};
use train_service::cycles::CycleRecord;
use train_service::gate::GateOutcome;

/// A process aborted at its fail point has done so well within this.
const ABORT: Duration = Duration::from_secs(180);

/// The bucket a crash is tried on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Start {
    /// Three weeks waiting and no run yet: the cycle ingests, trains, promotes
    /// the first production run, batch-predicts and reports.
    Empty,
    /// A production run, and a fourth week waiting: the cycle also checks drift.
    Production,
}

/// Which bucket reaches `step`; `None` for the batch steps, which a cycle's
/// batch reaches too but which are tried on serve-service's batches below. A
/// new fail point must be placed here (the match does not compile until it is).
fn start_for(step: FailStep) -> Option<Start> {
    Some(match step {
        FailStep::CycleDrift => Start::Production,
        FailStep::IngestRowsWritten
        | FailStep::CycleIngest
        | FailStep::RunArtifactWritten
        | FailStep::RunSaved
        | FailStep::JobSaved
        | FailStep::CycleTrain
        | FailStep::CycleBatch
        | FailStep::CycleReportWritten
        | FailStep::CycleReport => Start::Empty,
        FailStep::BatchUploadStarted | FailStep::BatchPredicted | FailStep::BatchOutputWritten => return None,
    })
}

#[test]
fn a_cycle_killed_at_any_step_leaves_a_consistent_bucket_and_the_next_cycle_completes() {
    let started = Instant::now();
    let progress = |step: &str| eprintln!("[crash {:6.1} s] {step}", started.elapsed().as_secs_f64());
    progress("building the binaries (minutes if they are stale)");
    let bins = build_binaries();
    let dir = tempfile::Builder::new().prefix("crs-crash-").tempdir().expect("temp dir");
    let crctl = Crctl::new(&bins, &free_addr(), &free_addr());
    let weeks = Weeks::generate(&crctl, dir.path(), 4);

    let empty = dir.path().join("empty");
    lifecycle_bucket(&crctl, &empty);
    for week in 1..=3 {
        weeks.deliver(&empty, week);
    }
    progress("a clean cycle makes the bucket with a production run");
    let production = dir.path().join("production");
    copy_tree(&empty, &production, &[]);
    let mut clean = TrainProcess::start(&bins, &production, &dir.path().join("logs/clean"), None);
    let cycle_id = clean.cycle().unwrap_or_else(|e| panic!("the clean cycle did not start: {e}"));
    let record = wait_for_cycle(&production, &cycle_id, &mut clean.service);
    assert_eq!(record["state"], "succeeded", "{record:#}");
    let typed: CycleRecord = serde_json::from_value(record.clone()).expect("a cycle record");
    assert!(typed.gate.as_ref().is_some_and(GateOutcome::promoted), "{record:#}");
    drop(clean);
    weeks.deliver(&production, 4);

    for (i, step) in FailStep::ALL.into_iter().enumerate() {
        let template = match start_for(step) {
            Some(Start::Empty) => &empty,
            Some(Start::Production) => &production,
            None => continue,
        };
        let bucket = dir.path().join(format!("step{i}"));
        copy_tree(template, &bucket, &[]);
        progress(&format!("{step}: a cycle aborted there"));
        let crashed = crash_at(&bins, &bucket, &dir.path().join(format!("logs/step{i}")), step);
        progress(&format!("{step}: restarted; the next cycle"));
        let next = recover(&bins, &bucket, &dir.path().join(format!("logs/step{i}-restart")), step, &crashed);
        if start_for(step) == Some(Start::Production) {
            // The dead cycle ingested week 4 and never decided about it: the next one does.
            assert!(next["run_id"].as_str().is_some(), "{step}: week 4 was not trained on: {next:#}");
        }
    }
    progress("done");
}

/// Runs a cycle that aborts at `step`; returns the dead cycle's id.
fn crash_at(bins: &Path, bucket: &Path, logs: &Path, step: FailStep) -> String {
    let mut process = TrainProcess::start(bins, bucket, logs, Some(step.name()));
    // The process may abort before it answers; the cycle's record names it anyway.
    let answered = process.cycle();
    let status = process.service.wait_for_exit(ABORT);
    let log = process.service.log();
    assert!(!status.success(), "{step}: the process exited normally: {status}\n{}", tail(&log, 30));
    assert!(log.contains(&format!("fail point {step}: aborting")), "{step}: not aborted there:\n{}", tail(&log, 30));
    let records = cycle_records(bucket);
    let running: Vec<_> = records.iter().filter(|r| r["state"] == "running").collect();
    assert_eq!(running.len(), 1, "{step}: one cycle died running: {records:#?}");
    let cycle_id = running[0]["cycle_id"].as_str().expect("cycle id").to_owned();
    if let Ok(id) = answered {
        assert_eq!(id, cycle_id, "{step}");
    }
    cycle_id
}

/// Restarts train-service without a fail point, checks what it finds, and
/// returns the record of the cycle it completed.
fn recover(bins: &Path, bucket: &Path, logs: &Path, step: FailStep, crashed: &str) -> Value {
    let mut process = TrainProcess::start(bins, bucket, logs, None);
    // Until the dead cycle's lease runs out, a request gets the dead cycle.
    let lease_expired = Instant::now() + Duration::from_secs(LEASE_SECS + 5);
    let next = wait_until(Duration::from_secs(LEASE_SECS + 30), "a new cycle to start", || {
        let id = process.cycle()?;
        if id == crashed {
            assert!(Instant::now() < lease_expired, "{step}: the dead cycle's lease still blocks after its ttl");
            Err(format!("still {crashed}"))
        } else {
            Ok(id)
        }
    });
    let record = wait_for_cycle(bucket, &next, &mut process.service);
    assert_eq!(record["state"], "succeeded", "{step}: the cycle after the crash: {record:#}");
    let dead = cycle_record(bucket, crashed).expect("the dead cycle's record");
    assert_eq!(dead["state"], "failed", "{step}: the dead cycle's record is closed: {dead:#}");
    assert!(dead["error"].as_str().is_some_and(|e| e.starts_with("abandoned at step")), "{dead:#}");

    let rows = check_ingestion(bucket);
    // Ingesting again adds nothing.
    let again = process.crctl.ok(&["ingest"]);
    assert_eq!(check_ingestion(bucket), rows, "{step}: a second ingestion changed the rows:\n{again}");
    let (production, _) = check_production(bucket);
    assert_eq!(record["production_run_id"], production.as_str(), "{step}: {record:#}");
    let status = process.service.terminate(CYCLE);
    assert!(status.success(), "{step}: the restarted process did not stop cleanly: {status}");
    record
}

/// The run of the committed fixture model v1 (`testkit/fixtures/model/v1`).
const FIXTURE_RUN: &str = "20261201T210556681Z-9626e2";
const BATCH_INPUT: &str = "data/predict/input/prediction_input.csv.gz";
const BATCH_OUTPUT: &str = "data/predict/output/crash/out.csv.gz";

/// serve-service killed at every batch step (`crs_platform::failpoint::FailStep::BATCH`):
/// nothing partial is ever at the output key, and a restart removes the dead
/// upload's staging file (backdated past `STALE_UPLOAD_SECS`) but keeps a fresh
/// one, which could be another replica's live upload; the next batch completes.
#[test]
fn a_batch_killed_at_any_step_leaves_no_partial_output_and_a_restart_cleans_only_stale_staging_files() {
    let bins = build_binaries();
    let dir = tempfile::Builder::new().prefix("crs-batch-crash-").tempdir().expect("temp dir");
    let template = dir.path().join("template");
    copy_tree(&crs_testkit::fixture_dir().join("model"), &template.join("model"), &[]);
    let input = template.join(BATCH_INPUT);
    std::fs::create_dir_all(input.parent().expect("parent")).expect("input folder");
    std::fs::copy(crs_testkit::fixture_dir().join("prediction_input.csv.gz"), &input).expect("copy the input");
    let expected = read_text(&crs_testkit::fixture_dir().join("v1_expected_output.csv"));

    for (i, step) in FailStep::BATCH.into_iter().enumerate() {
        let bucket = dir.path().join(format!("batch{i}"));
        copy_tree(&template, &bucket, &[]);
        let (mut serve, crctl) =
            start_serve(&bins, &bucket, &dir.path().join(format!("logs/batch{i}")), Some(step.name()), &[]);
        let answered = crctl.run(&["predict-batch", "--input", BATCH_INPUT, "--output", BATCH_OUTPUT]);
        assert!(!answered.success(), "{step}: the batch was answered: {answered}");
        let status = serve.wait_for_exit(ABORT);
        let log = serve.log();
        assert!(!status.success(), "{step}: the process exited normally: {status}\n{}", tail(&log, 30));
        assert!(
            log.contains(&format!("fail point {step}: aborting")),
            "{step}: not aborted there:\n{}",
            tail(&log, 30)
        );

        let output = bucket.join(BATCH_OUTPUT);
        let folder = output.parent().expect("output folder");
        let left = staging_files(folder);
        if step == FailStep::BatchOutputWritten {
            // Complete before the kill: whole, though never reported.
            assert_eq!(read_text(&output), expected, "{step}");
        } else {
            assert!(!output.exists(), "{step}: a partial output is visible");
            assert_eq!(left.len(), 1, "{step}: the killed upload's staging file: {left:?}");
        }
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for file in &left {
            std::fs::File::options().write(true).open(file).and_then(|f| f.set_modified(hour_ago)).expect("backdate");
        }
        let live = folder.join("other.csv.gz#1");
        std::fs::write(&live, b"another replica's upload in progress").expect("a live staging file");

        let (mut serve, crctl) =
            start_serve(&bins, &bucket, &dir.path().join(format!("logs/batch{i}-restart")), None, &[]);
        assert_eq!(staging_files(folder), vec![live.clone()], "{step}: only the stale staging file is removed");
        let response = crctl.json(&["predict-batch", "--input", BATCH_INPUT, "--output", BATCH_OUTPUT, "--overwrite"]);
        assert_eq!(response["output_key"], BATCH_OUTPUT, "{step}: {response:#}");
        assert_eq!(read_text(&output), expected, "{step}: the batch after the restart");
        let status = serve.terminate(ABORT);
        assert!(status.success(), "{step}: the restarted process did not stop cleanly: {status}");
    }
}

/// serve-service killed with SIGKILL while it captures every row it serves
/// (`CAPTURE_SAMPLE=1`) and writes them every 10 ms: every capture object in
/// the bucket reads whole (the local backend's staging files are no objects).
#[test]
fn serve_service_killed_while_capturing_leaves_only_whole_capture_objects() {
    let bins = build_binaries();
    let dir = tempfile::Builder::new().prefix("crs-capture-crash-").tempdir().expect("temp dir");
    let bucket = dir.path().join("bucket");
    copy_tree(&crs_testkit::fixture_dir().join("model"), &bucket.join("model"), &[]);
    let input = dir.path().join("input.csv");
    let gzipped = std::fs::read(crs_testkit::fixture_dir().join("prediction_input.csv.gz")).expect("fixture input");
    std::fs::write(&input, crs_testkit::gunzip(&gzipped)).expect("input file");
    let input = input.to_str().expect("UTF-8 temp path");
    let capture = [("CAPTURE_SAMPLE", "1"), ("SHADOW_FLUSH_ROWS", "20"), ("SHADOW_FLUSH_SECS", "0.01")];
    let (mut serve, crctl) = start_serve(&bins, &bucket, &dir.path().join("logs"), None, &capture);
    let objects = || {
        let mut found = Vec::new();
        let mut folders = vec![bucket.join("capture")];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).into_iter().flatten() {
                let path = entry.expect("folder entry").path();
                if path.is_dir() {
                    folders.push(path);
                } else if !path.to_string_lossy().contains('#') {
                    found.push(path);
                }
            }
        }
        found
    };
    // Requests keep coming until the kill, so that it lands among writes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = std::thread::spawn({
        let (stop, crctl) = (stop.clone(), crctl.clone());
        let input = input.to_owned();
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                crctl.run(&["predict", "--input", &input]);
            }
        }
    });
    wait_until(ABORT, "capture objects to be written", || {
        if objects().len() >= 5 { Ok(()) } else { Err(format!("{} objects", objects().len())) }
    });
    serve.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().expect("load thread");

    let v1 = crs_domain::models::ModelVer::parse("v1").expect("version");
    let written = objects();
    assert!(written.len() >= 5, "{written:?}");
    for path in &written {
        let bytes = std::fs::read(path).expect("read an object");
        let rows = capture::decode(&path.to_string_lossy(), v1, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(!rows.is_empty(), "{}: an object without rows", path.display());
    }
}

/// serve-service on `bucket`, serving the fixture run, with `extra` settings,
/// and a `crctl` for it; returns once it reports SERVING.
fn start_serve(
    bins: &Path,
    bucket: &Path,
    logs: &Path,
    fail_at: Option<&str>,
    extra: &[(&str, &str)],
) -> (Service, Crctl) {
    std::fs::create_dir_all(logs).expect("log folder");
    let addr = free_addr();
    let mut env = vec![
        ("SERVE_ADDR", addr.clone()),
        ("BUCKET_URL", bucket.to_str().expect("UTF-8 temp path").to_owned()),
        ("MODEL_VER", "v1".to_owned()),
        ("MODEL_RUN", FIXTURE_RUN.to_owned()),
        ("STALE_UPLOAD_SECS", "1800".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    if let Some(step) = fail_at {
        env.push(("CRS_FAIL_AT", step.to_owned()));
    }
    env.extend(extra.iter().map(|(name, value)| (*name, (*value).to_owned())));
    let mut service = Service::start(bins, "serve-service", &env, logs);
    let crctl = Crctl::new(bins, &free_addr(), &addr);
    wait_until(Duration::from_secs(30), "serve-service to report SERVING", || {
        service.check_running()?;
        let health = crctl.run(&["health", "--service", "serve"]);
        if health.success() { Ok(()) } else { Err(health.to_string()) }
    });
    (service, crctl)
}

/// The local backend's upload staging files (`<name>#<n>`) in `folder`, sorted.
fn staging_files(folder: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("folder entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains('#')))
        .collect();
    files.sort();
    files
}
