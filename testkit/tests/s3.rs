//! What S3 changes, against a real S3-compatible server (moto on loopback):
//! conditional writes, multipart uploads that stay invisible until complete and
//! are aborted on failure, and refused or missing credentials failing fast with
//! the bucket named. Skipped (and passing) where moto cannot run, unless `CI` is set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crs_domain::models::ModelVer;
use crs_platform::error::{Classify, ErrorKind};
use crs_platform::lifecycle::lease::{Lease, LeaseError};
use crs_platform::predictions::batch::{BatchError, BatchOptions, predict_batch};
use crs_platform::registry::runs::ModelStore;
use crs_platform::storage::bucket::{Bucket, S3Env, StorageError};
use crs_platform::storage::layout::RunId;
use crs_testkit::{Auth, S3Server, fixture_dir, gunzip, key_of};

/// Refused or missing credentials must fail well within this: no three-minute retry loop.
const FAIL_FAST: Duration = Duration::from_secs(20);

async fn bucket_on(server: &S3Server) -> (String, Bucket) {
    let name = server.create_bucket().await;
    let bucket = Bucket::open_with(&format!("s3://{name}"), &server.env()).expect("open the bucket");
    (name, bucket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_racers_creating_one_key_or_taking_one_lease_exactly_one_wins() {
    let Some(server) = S3Server::start_or_skip(Auth::Off).await else { return };
    let (_, bucket) = bucket_on(&server).await;

    let key = key_of("history/v1/00000001.json");
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (bucket, key) = (bucket.clone(), key.clone());
            tokio::spawn(async move { bucket.create(&key, format!("writer {i}")).await })
        })
        .collect();
    let mut won = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        match racer.await.expect("racer") {
            Ok(()) => won.push(format!("writer {i}")),
            Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => panic!("writer {i}: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(bucket.get(&key).await.expect("read"), Bytes::from(won[0].clone()), "the winner's bytes stay");

    let racers: Vec<_> = (0..8)
        .map(|i| {
            let bucket = bucket.clone();
            let ttl = Duration::from_secs(60);
            tokio::spawn(async move { Lease::acquire(&bucket, "cycle-v1", &format!("racer {i}"), ttl).await })
        })
        .collect();
    let mut holders = 0;
    for racer in racers {
        match racer.await.expect("racer") {
            Ok(_) => holders += 1,
            Err(LeaseError::Busy { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(holders, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_writers_replacing_what_they_both_read_exactly_one_wins() {
    let Some(server) = S3Server::start_or_skip(Auth::Off).await else { return };
    let (_, bucket) = bucket_on(&server).await;
    let key = key_of("model/v1/LATEST");

    // Both find the key absent.
    let (a, b) = (bucket.get_versioned(&key).await.expect("read"), bucket.get_versioned(&key).await.expect("read"));
    assert!(a.is_none() && b.is_none());
    bucket.replace(&key, "run-a\n", a.as_ref()).await.expect("the first write wins");
    let lost = bucket.replace(&key, "run-b\n", b.as_ref()).await.unwrap_err();
    assert!(matches!(lost, StorageError::Conflict { .. }), "{lost}");

    // Both read the same version.
    let (a, b) = (bucket.get_versioned(&key).await.expect("read"), bucket.get_versioned(&key).await.expect("read"));
    bucket.replace(&key, "run-c\n", b.as_ref()).await.expect("the first write wins");
    let lost = bucket.replace(&key, "run-d\n", a.as_ref()).await.unwrap_err();
    assert!(matches!(lost, StorageError::Conflict { .. }), "{lost}");
    assert_eq!(bucket.get(&key).await.expect("read"), Bytes::from_static(b"run-c\n"));

    // LATEST moves only forward, whichever of two stores (two replicas) writes first.
    let model_ver = ModelVer::parse("v0").expect("version");
    let earlier = RunId::parse("20260101T000000000Z-aaaaaa").expect("run id");
    let later = RunId::parse("20260102T000000000Z-bbbbbb").expect("run id");
    let (one, two) = (ModelStore::new(bucket.clone()), ModelStore::new(bucket.clone()));
    for run in [&earlier, &later] {
        bucket.put(&key_of(&format!("model/v0/{run}/metadata.json")), "{}").await.expect("a run");
    }
    assert!(two.advance_latest(model_ver, &later).await.expect("advance LATEST"));
    assert!(!one.advance_latest(model_ver, &earlier).await.expect("advance LATEST"), "LATEST must not move back");
    assert_eq!(one.latest(model_ver).await.expect("LATEST"), Some(later));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_is_invisible_until_complete() {
    let Some(server) = S3Server::start_or_skip(Auth::Off).await else { return };
    let (name, bucket) = bucket_on(&server).await;
    let key = key_of("data/predict/output/v1/run/prediction_output.csv.gz");

    // S3's smallest part, and some more: one part is uploaded, the rest waits for finish.
    let part = 5 << 20;
    let mut upload = bucket.upload(&key, part).await.expect("start the upload");
    upload.put(Bytes::from(vec![7u8; part + 1000]));
    upload.wait_for_capacity(1).await.expect("the first part uploaded");

    assert_eq!(server.pending_uploads(&name).await, vec![key.to_string()], "the upload is under way");
    assert!(!bucket.exists(&key).await.expect("head"), "visible before completion");
    assert!(matches!(bucket.get(&key).await, Err(StorageError::NotFound { .. })));
    assert!(bucket.list(&key_of("data/predict/output")).await.expect("list").is_empty(), "listed before completion");

    upload.finish().await.expect("complete the upload");
    assert_eq!(bucket.get(&key).await.expect("complete object").len(), part + 1000);
    assert!(server.pending_uploads(&name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_leaves_neither_an_object_nor_a_pending_upload() {
    let Some(server) = S3Server::start_or_skip(Auth::Off).await else { return };
    let (name, bucket) = bucket_on(&server).await;
    let fixtures = ModelStore::new(Bucket::open(&fixture_dir().to_string_lossy()).expect("fixture bucket"));
    let model_ver = ModelVer::parse("v1").expect("version");
    let runs = std::fs::read_dir(fixture_dir().join("model/v1")).expect("committed v1 runs");
    let run_id = runs.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).next().expect("a v1 run");
    let run = fixtures.load(model_ver, &RunId::parse(&run_id).expect("run id")).await.expect("the committed v1 run");

    // The committed input, with a bad row at its end: earlier chunks are
    // predicted and their parts uploaded before the reader reaches it.
    let input = std::fs::read(fixture_dir().join("prediction_input.csv.gz")).expect("committed input");
    let mut text = gunzip(&input);
    let width = text.lines().next().expect("header").split(',').count();
    let bad: Vec<&str> = std::iter::once("1").chain(std::iter::repeat_n("0", width - 1)).collect();
    text.push_str(&bad.join(","));
    text.push('\n');
    let (input, output) = (key_of("data/predict/input/bad.csv"), key_of("data/predict/output/v1/bad/out.csv.gz"));
    bucket.put(&input, text).await.expect("upload the input");

    let options =
        BatchOptions { chunk_bytes: 16 << 10, handoff_bytes: 1 << 10, part_bytes: 1 << 10, ..Default::default() };
    let err = predict_batch(&bucket, Arc::clone(&run.model), &input, &output, options).await.unwrap_err();
    assert!(matches!(err, BatchError::Data(_)), "{err}");
    assert!(!bucket.exists(&output).await.expect("head"), "a failed batch left an object");
    assert_eq!(server.pending_uploads(&name).await, Vec::<String>::new(), "a failed batch left its upload pending");
}

/// A key moto's IAM does not know, as a mistyped secret would be.
fn wrong_keys(server: &S3Server) -> S3Env {
    let mut vars = server.vars();
    for (key, value) in &mut vars {
        if key == "AWS_SECRET_ACCESS_KEY" || key == "AWS_ACCESS_KEY_ID" {
            *value = "wrong".into();
        }
    }
    S3Env::Explicit(vars)
}

/// No keys at all: the client falls back to the instance-metadata endpoint.
fn no_keys(server: &S3Server) -> S3Env {
    S3Env::Explicit(server.vars().into_iter().filter(|(k, _)| !k.contains("_KEY")).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_or_missing_credentials_fail_within_seconds_naming_the_bucket() {
    let Some(server) = S3Server::start_or_skip(Auth::RefuseAll).await else { return };
    let url = "s3://crs-refused/prefix";
    for (what, env) in [("wrong keys", wrong_keys(&server)), ("no keys", no_keys(&server))] {
        let bucket = Bucket::open_with(url, &env).expect("opening checks nothing remote");
        let started = Instant::now();
        let err = bucket.check_access().await.unwrap_err();
        assert!(started.elapsed() < FAIL_FAST, "{what}: took {:?}", started.elapsed());
        let message = err.to_string();
        assert!(message.contains(url), "{what}: {message}");
        if what == "wrong keys" {
            assert!(matches!(err, StorageError::Denied { .. }), "{what}: {message}");
            assert!(message.contains("credentials"), "{message}");
            // Internal: the operator must fix the service's settings; retrying will not help.
            assert_eq!(err.kind(), ErrorKind::Internal);
        }
    }

    // The services refuse to start, saying why, rather than serve errors.
    let mut train: train_service::Config = crs_testkit::parse_config(&["--bucket-url", url]);
    train.common.s3_env = wrong_keys(&server);
    let mut serve: serve_service::Config = crs_testkit::parse_config(&["--bucket-url", url]);
    serve.common.s3_env = wrong_keys(&server);
    let listener = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind") };
    let started = Instant::now();
    let train =
        train_service::run(train, train_service::Listeners::new(listener().await), std::future::pending()).await;
    let serve =
        serve_service::run(serve, serve_service::Listeners::new(listener().await), std::future::pending()).await;
    assert!(started.elapsed() < FAIL_FAST * 2, "took {:?}", started.elapsed());
    for result in [train, serve] {
        let message = format!("{:#}", result.expect_err("startup must fail"));
        assert!(message.contains("BUCKET_URL") && message.contains(url), "{message}");
        assert!(message.contains("access refused"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_fails_within_seconds_naming_the_bucket() {
    // A port nobody listens on: every attempt is refused at once, so the time
    // taken is the retries' own.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let env = S3Env::Explicit(vec![
        ("AWS_ENDPOINT".into(), format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_ACCESS_KEY_ID".into(), "key".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "secret".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ]);
    let url = "s3://crs-unreachable";
    let bucket = Bucket::open_with(url, &env).expect("opening checks nothing remote");
    let started = Instant::now();
    let err = bucket.get(&key_of("model/v1/LATEST")).await.unwrap_err();
    assert!(started.elapsed() < FAIL_FAST, "took {:?}", started.elapsed());
    let message = err.to_string();
    // The bound `Bucket::open` sets; object_store's default is ten, for up to three minutes.
    assert!(message.contains("after 3 retries"), "{message}");
    assert!(message.contains(url) && message.contains("model/v1/LATEST"), "{message}");
    // Worth retrying later: the service answers UNAVAILABLE.
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{message}");
}
