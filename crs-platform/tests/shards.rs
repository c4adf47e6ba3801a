//! Batch predictions over a prefix, split between shards, on a local folder
//! and on S3 (moto): 3 shards over 7 files predict each file once, a shard
//! run again writes nothing new, and the summary appears only once every
//! shard is done.

use std::io::{Cursor, Read};
use std::sync::{Arc, OnceLock};

use crs_domain::data::TrainingTable;
use crs_domain::data::synth::{SynthSpec, write_prediction_input, write_training};
use crs_domain::evaluation::train_and_evaluate;
use crs_domain::models::{ModelVer, TrainedModel};
use crs_platform::predictions::batch::{BatchOptions, OUTPUT_HEADER};
use crs_platform::predictions::shards::{BatchSummary, FileRecord, Shard, ShardError, ShardModel, predict_shard};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_platform::storage::layout::{InputPrefix, OutputPrefix, RunId, ShardedOutput};
use crs_testkit::{Auth, S3Server};

const ATTRIBUTES: usize = 12;
const FILES: usize = 7;

fn model() -> Arc<TrainedModel> {
    static MODEL: OnceLock<Arc<TrainedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut csv = Vec::new();
            write_training(&SynthSpec { first_entity: 1, keywords: 300, attributes: ATTRIBUTES, seed: 5 }, &mut csv)
                .unwrap();
            let observations = TrainingTable::read("train.csv", Cursor::new(csv)).unwrap().observations().unwrap();
            let (train, eval) = observations.split_by_entity(0.2, 1);
            let v1 = ModelVer::parse("v1").unwrap();
            let params = v1.version().params("params.yaml", None).unwrap();
            Arc::new(train_and_evaluate(v1, &params, &train, &eval, |_| {}).unwrap().model)
        })
        .clone()
}

fn shard_model(run: &str) -> ShardModel {
    ShardModel { model: model(), model_ver: ModelVer::parse("v1").unwrap(), run_id: RunId::parse(run).unwrap() }
}

fn key(text: &str) -> BucketKey {
    BucketKey::parse(text).unwrap()
}

/// File `i`: its own keywords, so each output's rows are its input's.
fn input_file(i: usize) -> Vec<u8> {
    let mut csv = Vec::new();
    let spec = SynthSpec { first_entity: 10_000 * (i as i64 + 1), keywords: 20 + i, attributes: ATTRIBUTES, seed: 9 };
    write_prediction_input(&spec, &mut csv).unwrap();
    csv
}

/// Seven inputs under `data/predict/input/many/` (one in a subfolder, one plain
/// CSV, the rest gzip), and an object that is no input.
async fn write_inputs(bucket: &Bucket) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..FILES {
        let name = match i {
            3 => "day-2/part-3.csv".to_owned(),
            4 => "part-4.csv".to_owned(),
            _ => format!("part-{i}.csv.gz"),
        };
        let bytes = input_file(i);
        let bytes = if name.ends_with(".gz") { crs_testkit::gzip(&bytes) } else { bytes };
        let key = format!("data/predict/input/many/{name}");
        bucket.put(&BucketKey::parse(&key).unwrap(), bytes).await.unwrap();
        keys.push(key);
    }
    bucket.put(&key("data/predict/input/many/_SUCCESS"), Vec::new()).await.unwrap();
    keys.sort();
    keys
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut text).unwrap();
    text
}

async fn run_shard(bucket: &Bucket, shard: &str) -> crs_platform::predictions::shards::ShardReport {
    predict_shard(
        bucket,
        &shard_model("20261201T000000000Z-aaaaaa"),
        &InputPrefix::parse("data/predict/input/many/").unwrap(),
        &OutputPrefix::default(),
        shard.parse::<Shard>().unwrap(),
        BatchOptions::default(),
    )
    .await
    .unwrap()
}

/// Every object under the run's output folder, with its bytes.
async fn outputs(bucket: &Bucket, folder: &BucketKey) -> Vec<(String, bytes::Bytes)> {
    let mut all = Vec::new();
    for key in bucket.list(folder).await.unwrap() {
        let bytes = bucket.get(&key).await.unwrap();
        all.push((key.to_string(), bytes));
    }
    all
}

async fn three_shards_cover_every_file_once(bucket: &Bucket) {
    let inputs = write_inputs(bucket).await;
    let output = ShardedOutput::new(
        &OutputPrefix::default(),
        ModelVer::parse("v1").unwrap(),
        &RunId::parse("20261201T000000000Z-aaaaaa").unwrap(),
        &InputPrefix::parse("data/predict/input/many/").unwrap(),
    );

    // Shards 0 and 2 only: shard 1 is missing, so there is no summary yet.
    let first = run_shard(bucket, "0/3").await;
    let third = run_shard(bucket, "2/3").await;
    assert_eq!((first.inputs, third.inputs), (FILES, FILES));
    assert_eq!((first.summary.as_ref(), third.summary.as_ref()), (None, None));
    assert!(!bucket.exists(&output.summary()).await.unwrap(), "a summary with a shard missing");
    let owned = |report: &crs_platform::predictions::shards::ShardReport| -> Vec<String> {
        report.files.iter().map(|f| f.input_key.to_string()).collect()
    };
    assert_eq!(
        owned(&first),
        [inputs[0].as_str(), inputs[3].as_str(), inputs[6].as_str()],
        "shard 0 takes files 0, 3, 6 in key order"
    );
    assert_eq!(owned(&third), [inputs[2].as_str(), inputs[5].as_str()]);

    // Shard 0 again (a retried pod): every file skipped, nothing in the bucket changes.
    let before = outputs(bucket, output.folder()).await;
    let again = run_shard(bucket, "0/3").await;
    assert!(again.files.iter().all(|f| f.skipped), "{:?}", again.files);
    assert_eq!(again.rows_written(), first.rows_written(), "skipped files report their recorded rows");
    assert_eq!(outputs(bucket, output.folder()).await, before, "a shard run twice changed the outputs");

    // The last shard completes the batch: the summary lists every input once.
    let second = run_shard(bucket, "1/3").await;
    assert_eq!(owned(&second), [inputs[1].as_str(), inputs[4].as_str()]);
    assert_eq!(second.summary.as_ref(), Some(&output.summary()));
    let summary: BatchSummary = serde_json::from_slice(&bucket.get(&output.summary()).await.unwrap()).unwrap();
    let listed: Vec<&str> = summary.files.iter().map(|f| f.input_key.as_str()).collect();
    assert_eq!(listed, inputs.iter().map(String::as_str).collect::<Vec<_>>(), "each input once, in key order");
    assert_eq!(summary.ignored, ["data/predict/input/many/_SUCCESS"]);
    assert_eq!(summary.shards, 3);

    // Each output is named after its input, holds one line per input row, and has its record.
    for (i, file) in summary.files.iter().enumerate() {
        let name = file.input_key.strip_prefix("data/predict/input/many/").unwrap();
        let stem = name.strip_suffix(".gz").unwrap_or(name).strip_suffix(".csv").unwrap();
        assert_eq!(file.output_key, format!("{}/{stem}.csv.gz", output.folder()));
        let text = gunzip(&bucket.get(&key(&file.output_key)).await.unwrap());
        assert_eq!(text.lines().next(), Some(OUTPUT_HEADER));
        assert_eq!(text.lines().count() as u64, file.rows_written + 1);
        assert_eq!(file.rows_read, file.rows_written, "file {i}: distinct keys only");
        let record: FileRecord =
            serde_json::from_slice(&bucket.get(&ShardedOutput::record(&key(&file.output_key))).await.unwrap()).unwrap();
        assert_eq!(record.input_sha256, file.input_sha256);
        assert_eq!(record.run_id.as_str(), "20261201T000000000Z-aaaaaa");
    }
    let total: u64 = [&first, &second, &third].iter().map(|r| r.rows_written()).sum();
    assert_eq!(summary.rows_written, total);

    // An input that changes is predicted again by its shard alone; the summary
    // goes until that shard is done, then comes back.
    bucket.put(&key(&inputs[1]), crs_testkit::gzip(&input_file(9))).await.unwrap();
    let redo = run_shard(bucket, "1/3").await;
    let redone: Vec<bool> = redo.files.iter().map(|f| f.skipped).collect();
    assert_eq!(redone, [false, true], "only the changed file is predicted again");
    assert!(redo.summary.is_some(), "every file is done again");

    // With a different run, nothing of the first run's is reused.
    let other = predict_shard(
        bucket,
        &shard_model("20261202T000000000Z-bbbbbb"),
        &InputPrefix::parse("data/predict/input/many/").unwrap(),
        &OutputPrefix::default(),
        Shard::WHOLE,
        BatchOptions::default(),
    )
    .await
    .unwrap();
    assert!(other.files.iter().all(|f| !f.skipped) && other.files.len() == FILES);
    assert!(other.output.folder().as_str().contains("20261202T000000000Z-bbbbbb"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_over_seven_files_in_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::open(&dir.path().to_string_lossy()).unwrap();
    three_shards_cover_every_file_once(&bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_over_seven_files_on_s3() {
    let Some(server) = S3Server::start_or_skip(Auth::Off).await else { return };
    let name = server.create_bucket().await;
    let bucket = Bucket::open_with(&format!("s3://{name}/crs"), &server.env()).unwrap();
    three_shards_cover_every_file_once(&bucket).await;
}

#[tokio::test]
async fn a_prefix_without_inputs_or_with_two_inputs_for_one_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::open(&dir.path().to_string_lossy()).unwrap();
    let prefix = InputPrefix::parse("data/predict/input/many/").unwrap();
    let run = |bucket: Bucket| {
        let prefix = prefix.clone();
        async move {
            predict_shard(
                &bucket,
                &shard_model("r1"),
                &prefix,
                &OutputPrefix::default(),
                Shard::WHOLE,
                BatchOptions::default(),
            )
            .await
        }
    };
    let err = run(bucket.clone()).await.unwrap_err();
    assert!(matches!(err, ShardError::NoInputs(_)), "{err}");
    assert!(err.to_string().contains("no .csv or .csv.gz files under data/predict/input/many/"), "{err}");
    bucket.put(&key("data/predict/input/many/a.csv"), input_file(0)).await.unwrap();
    bucket.put(&key("data/predict/input/many/a.csv.gz"), crs_testkit::gzip(&input_file(1))).await.unwrap();
    let err = run(bucket.clone()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("data/predict/input/many/a.csv and data/predict/input/many/a.csv.gz would both be written"),
        "{err}"
    );
    assert!(bucket.list(&key("data/predict/output")).await.unwrap_or_default().is_empty(), "something was written");
}
