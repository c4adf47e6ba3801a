//! Helpers of the lifecycle process tests (`tests/crash.rs`, `tests/replicas.rs`):
//! a bucket with weekly files waiting to be ingested, train-service processes on
//! it, cycles started with `crctl`, and checks of what the bucket holds, read
//! through crs-platform exactly as the services read it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crs_domain::models::ModelVer;
use crs_platform::lifecycle::ingest::{Outcome, ingested_data, ledger};
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::events::Change;
use crs_platform::registry::runs::ModelStore;
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_platform::storage::layout::{self, RunId, sequence_number};
use serde_json::Value;

use crate::{Crctl, Service, copy_tree, free_addr, read_text, sha256_hex, wait_until, workspace_root};

/// Keywords of each weekly file: enough rows for v1 to beat the baselines, few
/// enough that a debug build trains in seconds.
pub const WEEK_KEYWORDS: &str = "1000";
/// Cycles batch-predict this input after a promotion, so that the batch step runs.
pub const LIFECYCLE_YAML: &str = "batch_input: data/predict/input/prediction_input.csv.gz\n";
/// Short, so that a killed replica's lease runs out quickly; the least train-service takes.
pub const LEASE_SECS: u64 = 3;
/// A service not up within this is broken, not slow.
pub const STARTUP: Duration = Duration::from_secs(30);
/// A cycle that trains one small run ends well within this, even in a debug build.
pub const CYCLE: Duration = Duration::from_secs(180);

pub fn v1() -> ModelVer {
    ModelVer::parse("v1").expect("v1 is registered")
}

/// Runs `future` to its end on a runtime of its own (the process tests are synchronous).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

/// Weekly files `week1.csv.gz` ... `week<weeks>.csv.gz`, generated once into
/// `dir` by `crctl gen-data` and copied into buckets as tests need them.
#[derive(Debug)]
pub struct Weeks {
    folder: PathBuf,
}

impl Weeks {
    pub fn generate(crctl: &Crctl, dir: &Path, weeks: u32) -> Self {
        let staging = dir.join("weeks");
        let staging_arg = staging.to_str().expect("UTF-8 temp path");
        let weeks = weeks.to_string();
        crctl.ok(&["gen-data", "--bucket", staging_arg, "--weeks", &weeks, "--train-keywords", WEEK_KEYWORDS]);
        Weeks { folder: staging.join(layout::INCOMING_PREFIX) }
    }

    /// Puts week `week`'s file where train-service looks for new files.
    pub fn deliver(&self, bucket: &Path, week: u32) {
        let name = format!("week{week}.csv.gz");
        let incoming = bucket.join(layout::INCOMING_PREFIX);
        std::fs::create_dir_all(&incoming).expect("incoming folder");
        std::fs::copy(self.folder.join(&name), incoming.join(&name)).unwrap_or_else(|e| panic!("copy {name}: {e}"));
    }
}

/// A bucket with the committed config, a small prediction input for the batch
/// step, and the lifecycle rules of [`LIFECYCLE_YAML`]; no data ingested and no run.
pub fn lifecycle_bucket(crctl: &Crctl, bucket: &Path) {
    copy_tree(&workspace_root().join("bucket"), bucket, &["data", "model"]);
    let bucket_arg = bucket.to_str().expect("UTF-8 temp path");
    let sizes = ["--train-keywords", "60", "--eval-keywords", "20", "--predict-keywords", "60"];
    crctl.ok(&[&["gen-data", "--bucket", bucket_arg][..], &sizes].concat());
    std::fs::write(bucket.join("config/v1/lifecycle.yaml"), LIFECYCLE_YAML).expect("write lifecycle.yaml");
}

/// One train-service process on a bucket, and `crctl` pointed at it.
#[derive(Debug)]
pub struct TrainProcess {
    pub service: Service,
    pub crctl: Crctl,
}

impl TrainProcess {
    /// Starts train-service on `bucket` with a short cycle lease, aborting at
    /// `fail_at` if given; its log goes to `log_dir/train-service.log`.
    pub fn start(bins: &Path, bucket: &Path, log_dir: &Path, fail_at: Option<&str>) -> Self {
        std::fs::create_dir_all(log_dir).expect("log folder");
        let addr = free_addr();
        let mut env = vec![
            ("TRAIN_ADDR", addr.clone()),
            ("BUCKET_URL", bucket.to_str().expect("UTF-8 temp path").to_owned()),
            ("MODEL_VER", "v1".to_owned()),
            ("CYCLE_LEASE_SECS", LEASE_SECS.to_string()),
            ("RUST_LOG", "info".to_owned()),
        ];
        if let Some(step) = fail_at {
            env.push(("CRS_FAIL_AT", step.to_owned()));
        }
        let service = Service::start(bins, "train-service", &env, log_dir);
        // serve-service is not started: crctl only talks to train-service here.
        let crctl = Crctl::new(bins, &addr, &free_addr());
        let mut process = TrainProcess { service, crctl };
        let TrainProcess { service, crctl } = &mut process;
        wait_until(STARTUP, "train-service to report SERVING", || {
            service.check_running()?;
            let health = crctl.run(&["health", "--service", "train"]);
            if health.success() { Ok(()) } else { Err(health.to_string()) }
        });
        process
    }

    /// Asks for a cycle; the id of the cycle started or already running, or
    /// the reason there is none (a process that aborted may not answer).
    pub fn cycle(&self) -> Result<String, String> {
        start_cycle(&self.crctl)
    }
}

/// `crctl cycle` through `crctl`: the id of the cycle started or already running.
pub fn start_cycle(crctl: &Crctl) -> Result<String, String> {
    let output = crctl.run(&["--json", "cycle"]);
    if !output.success() {
        return Err(output.to_string());
    }
    let cycle: Value = serde_json::from_str(&output.stdout).map_err(|e| format!("{e}: {output}"))?;
    cycle["cycle_id"].as_str().filter(|id| !id.is_empty()).map(str::to_owned).ok_or_else(|| output.to_string())
}

/// A cycle's record as stored, if it is there.
pub fn cycle_record(bucket: &Path, cycle_id: &str) -> Option<Value> {
    let bytes = std::fs::read(bucket.join("cycles/v1").join(format!("{cycle_id}.json"))).ok()?;
    Some(serde_json::from_slice(&bytes).expect("a cycle record is JSON"))
}

/// Every cycle record of v1, oldest first.
pub fn cycle_records(bucket: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(bucket.join("cycles/v1")) else { return Vec::new() };
    let mut records: Vec<Value> = entries
        .map(|e| std::fs::read(e.expect("folder entry").path()).expect("read a cycle record"))
        .map(|bytes| serde_json::from_slice(&bytes).expect("a cycle record is JSON"))
        .collect();
    records.sort_by(|a, b| a["cycle_id"].as_str().cmp(&b["cycle_id"].as_str()));
    records
}

/// Waits for cycle `cycle_id` to end and returns its record.
pub fn wait_for_cycle(bucket: &Path, cycle_id: &str, process: &mut Service) -> Value {
    wait_until(CYCLE, &format!("cycle {cycle_id} to end"), || {
        process.check_running()?;
        match cycle_record(bucket, cycle_id) {
            Some(record) if record["state"] != "running" => Ok(record),
            Some(record) => Err(format!("at step {}", record["step"])),
            None => Err("no record yet".to_owned()),
        }
    })
}

/// The text of every object under `prefix`, sorted by key.
fn texts_under(bucket: &Path, prefix: &str) -> Vec<(String, String)> {
    let folder = bucket.join(prefix);
    let Ok(entries) = std::fs::read_dir(&folder) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("folder entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files.iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), read_text(p))).collect()
}

/// The ledger and the ingested rows agree: every rows object belongs to an
/// entry that ingested rows and every such entry has its object; every incoming
/// file's content is ingested exactly once; and the ingested data holds as many
/// rows as the incoming files, none twice. Returns the number of rows.
pub fn check_ingestion(bucket_dir: &Path) -> u64 {
    let bucket = Bucket::open(bucket_dir.to_str().expect("UTF-8 temp path")).expect("bucket");
    let entries = block_on(ledger(&bucket)).expect("the ledger reads");
    let with_rows: BTreeSet<u64> =
        entries.iter().filter(|e| e.outcome == Outcome::Ingested && e.rows.used > 0).map(|e| e.seq).collect();
    let objects: BTreeSet<u64> = block_on(bucket.list(&BucketKey::parse("data/ingested").expect("key")))
        .expect("list the ingested rows")
        .iter()
        .map(|key| {
            let name = key.as_str().rsplit('/').next().expect("a name");
            name.strip_suffix(".csv.gz").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("stray object {key}"))
        })
        .collect();
    assert_eq!(objects, with_rows, "rows objects and the ledger entries that ingested rows differ: {entries:#?}");
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=entries.len() as u64).collect::<Vec<_>>(), "ledger numbers have gaps");

    // A copied bucket's files have new etags, so they may be in the ledger again,
    // as the same content; each file's content is ingested exactly once.
    let incoming = texts_under(bucket_dir, layout::INCOMING_PREFIX);
    for (name, _) in &incoming {
        let bytes = std::fs::read(bucket_dir.join(layout::INCOMING_PREFIX).join(name)).expect("read an incoming file");
        let sha256 = sha256_hex(&bytes);
        let ingested = entries.iter().filter(|e| e.sha256 == sha256 && e.outcome == Outcome::Ingested).count();
        assert_eq!(ingested, 1, "{name} is ingested {ingested} times: {entries:#?}");
    }
    let incoming_rows: usize = incoming.iter().map(|(_, text)| text.lines().skip(1).count()).sum();
    let data = block_on(ingested_data(&bucket)).expect("the ingested rows read").expect("rows were ingested");
    let text = String::from_utf8(data.bytes.to_vec()).expect("UTF-8 rows");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    let distinct: BTreeSet<&str> = rows.iter().copied().collect();
    assert_eq!(distinct.len(), rows.len(), "a row was ingested twice");
    let used: u64 = entries.iter().map(|e| e.rows.used).sum();
    assert_eq!(rows.len() as u64, used, "the ledger's counts and the rows differ");
    assert_eq!(rows.len(), incoming_rows, "the incoming files' rows are not all ingested once");
    used
}

/// Production points at a complete run that loads (checksum, format and
/// structure checked), every listed run loads, and the history's numbers run
/// 1, 2, 3 ... without a gap or a repeat. Returns production and the history.
pub fn check_production(bucket_dir: &Path) -> (RunId, Vec<crs_platform::registry::events::Event>) {
    let bucket = Bucket::open(bucket_dir.to_str().expect("UTF-8 temp path")).expect("bucket");
    let catalog = Catalog::new(ModelStore::new(bucket.clone()));
    block_on(async {
        let history = catalog.history(v1()).await.expect("the history reads");
        let seqs: Vec<u64> = history.events().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "history numbers have gaps or repeats");
        let files = bucket.list(&layout::ModelKey::new(v1()).events()).await.expect("list the history");
        assert_eq!(files.iter().filter_map(sequence_number).count(), seqs.len(), "every event file is an event");
        let production = history.production().cloned().expect("a production run");
        catalog.store().load(v1(), &production).await.unwrap_or_else(|e| panic!("production {production}: {e}"));
        for run in catalog.store().runs(v1()).await.expect("the runs list") {
            catalog.store().load(v1(), &run.run_id).await.unwrap_or_else(|e| panic!("run {}: {e}", run.run_id));
        }
        (production, history.events().to_vec())
    })
}

/// The run each promotion in `events` moved production to, in order.
pub fn promotions(events: &[crs_platform::registry::events::Event]) -> Vec<(String, RunId)> {
    events
        .iter()
        .filter_map(|e| match &e.change {
            Change::Promote { run_id, .. } => Some((e.by.clone(), run_id.clone())),
            _ => None,
        })
        .collect()
}
