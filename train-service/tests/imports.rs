//! Imported models end to end: versions declared in the bucket, model files
//! fitted by the pinned xgboost and lightgbm on the stack's data
//! (`fixtures/import_models.py`), streamed to ImportModel, gated like trained
//! runs, served (online and in batch) as the libraries predict them, and
//! rolled back; and the refusals, each with its message and no run left.

use std::path::Path;
use std::process::Command;

use crs_platform::storage::layout::EVAL_KEY;
use crs_proto::inference::ModelInferRequest;
use crs_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{GetModelRequest, LoadModelRequest, PredictBatchRequest};
use crs_proto::train::import_model_request::Part;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{
    ImportModelHeader, ImportModelRequest, JobState, ListModelsRequest, ModelVersionRuns, RollbackRequest, TrainingJob,
};
use crs_testkit::{Stack, gunzip, predict_request, wait_for_end};
use tonic::Code;
use tonic::transport::Channel;

mod common;

fn import_stream(
    model_ver: &str,
    file: &[u8],
    draft: bool,
) -> impl tokio_stream::Stream<Item = ImportModelRequest> + use<> {
    let header = ImportModelHeader { model_ver: model_ver.into(), draft, ..Default::default() };
    let mut messages = vec![ImportModelRequest { part: Some(Part::Header(header)) }];
    // Small chunks: the file arrives in several messages.
    messages.extend(file.chunks(4096).map(|c| ImportModelRequest { part: Some(Part::Chunk(c.to_vec())) }));
    tokio_stream::iter(messages)
}

async fn import(client: &mut TrainServiceClient<Channel>, model_ver: &str, file: &[u8]) -> TrainingJob {
    import_as(client, model_ver, file, false).await
}

async fn import_as(client: &mut TrainServiceClient<Channel>, model_ver: &str, file: &[u8], draft: bool) -> TrainingJob {
    let job = client.import_model(import_stream(model_ver, file, draft)).await.expect("import").into_inner();
    let job = wait_for_end(client, &job.job_id).await;
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    job
}

async fn runs(client: &mut TrainServiceClient<Channel>, model_ver: &str) -> ModelVersionRuns {
    let request = ListModelsRequest { model_ver: model_ver.into() };
    client.list_models(request).await.expect("list").into_inner().versions.remove(0)
}

/// The library's predictions of the stack's prediction input, per model file.
fn library_predictions(out: &Path) -> Vec<(String, Vec<f64>)> {
    let text = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let mut lines = text.lines();
    let mut columns: Vec<(String, Vec<f64>)> =
        lines.next().unwrap().split(',').map(|name| (name.to_owned(), Vec::new())).collect();
    for line in lines {
        for (field, (_, values)) in line.split(',').zip(&mut columns) {
            values.push(field.parse().unwrap());
        }
    }
    columns
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (row, (got, want)) in got.iter().zip(want).enumerate() {
        assert!((got - want).abs() <= 1e-6, "{what} row {row}: platform {got}, library {want}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_are_gated_served_as_their_library_predicts_and_rolled_back() {
    let stack = Stack::new().await;
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import_models.py");
    let status = Command::new("python3").arg(&script).arg(stack.bucket_dir()).arg(out.path()).status().unwrap();
    assert!(status.success(), "{} failed: pip install -r analytics/requirements.txt", script.display());
    let file = |name: &str| std::fs::read(out.path().join(name)).unwrap();
    let library = library_predictions(out.path());
    let predicted_by = |name: &str| library.iter().find(|(n, _)| n == name).unwrap().1.clone();

    stack.put("config/xgb-a/model.yaml", "framework: xgboost\n").await;
    stack.put("config/lgb-b/model.yaml", "framework: lightgbm\n").await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();

    // An xgboost model, the first of its version: production if not worse than the baselines.
    let first = import(&mut client, "xgb-a", &file("xgb_first.json")).await;
    let imported = first.imported.clone().expect("the job names its file");
    assert_eq!(imported.framework, "xgboost");
    let runs_a = runs(&mut client, "xgb-a").await;
    assert_eq!(runs_a.production_run_id, first.run_id, "{runs_a:?}");
    // The original file is kept in the run, with its sha256 in the metadata.
    let folder = format!("model/xgb-a/{}", first.run_id);
    assert_eq!(stack.get(&format!("{folder}/imported.json")).await.unwrap(), file("xgb_first.json"));
    let metadata: serde_json::Value =
        serde_json::from_slice(&stack.get(&format!("{folder}/metadata.json")).await.unwrap()).unwrap();
    assert_eq!(metadata["imported"]["sha256"], imported.sha256);
    assert_eq!(metadata["eval_data"]["key"], "data/train/eval.csv.gz");
    assert!(metadata["eval_data"]["sha256"].is_string());

    // A stronger lightgbm model in a version of its own.
    let lgb = import(&mut client, "lgb-b", &file("lgb_better.txt")).await;
    assert_eq!(runs(&mut client, "lgb-b").await.production_run_id, lgb.run_id);

    // serve-service serves both versions' production runs, as the libraries predict.
    let serve = stack.start_serve(stack.serve_config()).await;
    let mut serving = serve.client.clone();
    let mut inference = GrpcInferenceServiceClient::new(serve.channel());
    let input = stack.get("data/predict/input/prediction_input.csv.gz").await.unwrap();
    for (model_ver, name) in [("xgb-a", "xgb_first.json"), ("lgb-b", "lgb_better.txt")] {
        let load = LoadModelRequest { model_ver: model_ver.into(), run: "production".into() };
        serving.load_model(load).await.unwrap_or_else(|e| panic!("load {model_ver}: {e}"));
        let mut request = predict_request(&input);
        request.model_ver = model_ver.into();
        let online = serving.predict(request).await.unwrap().into_inner();
        assert_close(&format!("{model_ver} online"), &online.cr, &predicted_by(name));
        let v2 = v2_infer(&mut inference, &mut serving, model_ver, &predict_request(&input)).await;
        assert_close(&format!("{model_ver} V2"), &v2, &predicted_by(name));
        let batch = PredictBatchRequest {
            input_key: "data/predict/input/prediction_input.csv.gz".into(),
            model_ver: model_ver.into(),
            ..Default::default()
        };
        let written = serving.predict_batch(batch).await.unwrap().into_inner();
        let text = gunzip(&stack.get(&written.output_key).await.unwrap());
        let batch_cr: Vec<f64> =
            text.lines().skip(1).map(|line| line.rsplit(',').next().unwrap().parse().unwrap()).collect();
        assert_close(&format!("{model_ver} batch"), &batch_cr, &predicted_by(name));
    }

    // A weaker xgboost model into the first version: rejected, production stays.
    let worse = import(&mut client, "xgb-a", &file("xgb_worse.json")).await;
    let runs_a = runs(&mut client, "xgb-a").await;
    assert_eq!(runs_a.production_run_id, first.run_id, "{runs_a:?}");
    let stage = runs_a.runs.iter().find(|r| r.run_id == worse.run_id).unwrap().stage.clone();
    assert_eq!(stage, "rejected", "{runs_a:?}");

    // A stronger one is promoted, and a rollback brings the first back.
    let better = import(&mut client, "xgb-a", &file("xgb_better.json")).await;
    let runs_a = runs(&mut client, "xgb-a").await;
    assert_eq!(
        runs_a.production_run_id,
        better.run_id,
        "{:?}",
        runs_a.runs.iter().map(|r| (&r.stage, &r.stage_reason)).collect::<Vec<_>>()
    );
    follows(&mut serving, "xgb-a", &better.run_id).await;
    client.rollback(RollbackRequest { model_ver: "xgb-a".into(), ..Default::default() }).await.expect("rollback");
    assert_eq!(runs(&mut client, "xgb-a").await.production_run_id, first.run_id);
    follows(&mut serving, "xgb-a", &first.run_id).await;
}

fn python(script: &Path, args: &[&std::ffi::OsStr]) {
    let status = Command::new("python3").arg(script).args(args).status().unwrap();
    assert!(status.success(), "{} failed: pip install -r analytics/requirements.txt", script.display());
}

/// Service-level parity: xgboost and lightgbm models of several depths, tree
/// counts and objectives (`fixtures/serve_parity.py`), fitted by the pinned
/// libraries on the real keyword data when `CRS_REAL_DATA` names it (the
/// stack's generated data otherwise), imported, loaded and asked for every row
/// of the evaluation file online, through V2 and in batch (which writes each
/// keyword and device once): each answer is the
/// library's own `predict` within 1e-6 (after clipping to [0, 1] for the
/// regression objectives, whose library output may lie outside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_predictions_equal_the_librarys_on_every_evaluation_row() {
    let started = std::time::Instant::now();
    let stack = Stack::new().await;
    let out = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/serve_parity.py");
    let real = common::put_real_data_split(&stack).await;
    python(&script, &["fit".as_ref(), stack.bucket_dir().as_os_str(), out.path().as_os_str()]);
    let fitted = started.elapsed();
    let library = library_predictions(out.path());
    assert_eq!(library.len(), 5, "model files");

    stack.put("config/xgb-p/model.yaml", "framework: xgboost\n").await;
    stack.put("config/lgb-p/model.yaml", "framework: lightgbm\n").await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    let serve = stack.start_serve(stack.serve_config()).await;
    let mut serving = serve.client.clone();
    let mut inference = GrpcInferenceServiceClient::new(serve.channel());
    let rows = predict_request(&stack.get(EVAL_KEY).await.unwrap());
    let source = if real { "real" } else { "generated" };
    let mut first_row = std::collections::HashMap::new();
    for (index, row) in rows.rows.iter().enumerate() {
        first_row.entry((row.entity_id, row.device.as_str())).or_insert(index);
    }
    for (file, predicted) in &library {
        let model_ver = if file.starts_with("xgb") { "xgb-p" } else { "lgb-p" };
        // The platform predicts a rate: a regression's output clipped to [0, 1].
        let regression = file.contains("_sq_") || file.contains("_reg_");
        let want: Vec<f64> = predicted.iter().map(|&p| if regression { p.clamp(0.0, 1.0) } else { p }).collect();
        let job = import_as(&mut client, model_ver, &std::fs::read(out.path().join(file)).unwrap(), true).await;
        let load = LoadModelRequest { model_ver: model_ver.into(), run: job.run_id.clone() };
        serving.load_model(load).await.unwrap_or_else(|e| panic!("load {file}: {e}"));

        let mut request = rows.clone();
        (request.model_ver, request.run_id) = (model_ver.into(), job.run_id.clone());
        let online = serving.predict(request).await.unwrap_or_else(|e| panic!("{file} online: {e}")).into_inner();
        assert_eq!(online.run_id, job.run_id);
        assert_close(&format!("{file} online"), &online.cr, &want);
        let v2 = v2_infer(&mut inference, &mut serving, model_ver, &rows).await;
        assert_close(&format!("{file} V2"), &v2, &want);
        let batch = PredictBatchRequest {
            input_key: EVAL_KEY.into(),
            model_ver: model_ver.into(),
            run_id: job.run_id.clone(),
            ..Default::default()
        };
        let written = serving.predict_batch(batch).await.unwrap_or_else(|e| panic!("{file} batch: {e}")).into_inner();
        let text = gunzip(&stack.get(&written.output_key).await.unwrap());
        // A batch writes each (entity_id, device) once, the first row's: the file's weeks are one key.
        let (mut batch_cr, mut batch_want) = (Vec::new(), Vec::new());
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            let key = (fields[0].parse::<i64>().unwrap(), fields[1]);
            batch_cr.push(fields[2].parse::<f64>().unwrap());
            batch_want.push(want[first_row[&key]]);
        }
        assert_eq!(batch_cr.len(), first_row.len(), "{file} batch: one row per key");
        assert_close(&format!("{file} batch"), &batch_cr, &batch_want);
        let clipped = predicted.iter().filter(|p| !(0.0..=1.0).contains(*p)).count();
        println!(
            "{file}: {} {source} evaluation rows equal online and through V2, {} keys in batch ({clipped} clipped)",
            want.len(),
            batch_cr.len()
        );
    }
    println!(
        "fitted by the libraries in {:.1} s; the whole test {:.1} s",
        fitted.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The rows' rates through the Open Inference Protocol (typed tensors), the
/// version as the model's name, attributes in the model's order.
async fn v2_infer(
    inference: &mut GrpcInferenceServiceClient<Channel>,
    serving: &mut ServeServiceClient<Channel>,
    model_ver: &str,
    rows: &crs_proto::serve::PredictRequest,
) -> Vec<f64> {
    let request = GetModelRequest { model_ver: model_ver.into(), ..Default::default() };
    let attributes = serving.get_model(request).await.unwrap().into_inner().attribute_names;
    let request = ModelInferRequest {
        model_name: model_ver.into(),
        id: String::new(),
        ..crs_testkit::v2::infer_request(rows, &attributes, false)
    };
    let response = inference.model_infer(request).await.unwrap_or_else(|e| panic!("V2 {model_ver}: {e}")).into_inner();
    response.outputs[0].contents.as_ref().expect("typed contents").fp64_contents.clone()
}

/// Waits until serve-service answers for `model_ver` with `run`, as it follows production.
async fn follows(serving: &mut ServeServiceClient<Channel>, model_ver: &str, run: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let request = GetModelRequest { model_ver: model_ver.into(), ..Default::default() };
        if serving.get_model(request).await.map(|m| m.into_inner().run_id).ok().as_deref() == Some(run) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "serve-service did not follow {model_ver} to {run}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_imports_say_why_and_leave_no_run() {
    let stack = Stack::new().await;
    stack.put("config/xgb-r/model.yaml", "framework: xgboost\n").await;
    stack.put("config/lgb-r/model.yaml", "framework: lightgbm\n").await;
    let mut config = stack.train_config();
    config.max_import_bytes = 20_000;
    let train = stack.start_train(config).await;
    let mut client = train.client.clone();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crs-domain/tests/fixtures/imported");
    let fixture = |name: &str| std::fs::read(fixtures.join(name)).unwrap();
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("xgb-r", fixture("refused_xgb_unknown_name.json"), "feature 1 'clicks' maps to nothing in the data contract (the features are att<k>, device as the code 0 Computer, 1 Smartphone, 2 Tablet, and device=Computer, device=Smartphone, device=Tablet)".into()),
        ("lgb-r", fixture("refused_lgb_linear.txt"), "tree 0 is a linear tree (linear_tree): linear trees are not supported, only trees with constant leaves".into()),
        ("lgb-r", fixture("xgb_logistic.json"), "not a lightgbm model file: the first line is not \"tree\"".into()),
        ("xgb-r", fixture("lgb_zero_as_missing.txt"), "the model file is larger than the import size cap of 20000 bytes (MAX_IMPORT_BYTES)".into()),
        ("v1", fixture("xgb_logistic.json"), "model version v1 is trained by this build, not declared for imports: declare a version of its own in config/<ver>/model.yaml (framework: xgboost or lightgbm)".into()),
    ];
    for (model_ver, bytes, message) in cases {
        let status = client.import_model(import_stream(model_ver, &bytes, false)).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, message.as_str()), "{model_ver}");
    }
    let status = client.import_model(import_stream("xgb-none", b"{}", false)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("unknown model version \"xgb-none\""), "{}", status.message());
    assert!(status.message().ends_with("declared for imports in the bucket: lgb-r, xgb-r"), "{}", status.message());
    for model_ver in ["xgb-r", "lgb-r", "v1"] {
        assert!(stack.run_dirs(model_ver).is_empty(), "{model_ver} has a run");
    }
    // Training an imported version is refused too.
    let request = crs_proto::train::StartTrainingRequest { model_ver: "xgb-r".into(), ..Default::default() };
    let status = client.start_training(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "model version xgb-r is imported, not trained here: import a new model file (crctl import) instead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_of_an_imported_version_checks_drift_and_asks_for_a_new_import() {
    use crs_domain::data::synth::{ATTRIBUTES, SynthSpec, write_week};
    use crs_proto::train::{CycleState, PromoteRequest, RunCycleRequest};

    let stack = Stack::new().await;
    stack.put("config/xgb-c/model.yaml", "framework: xgboost\n").await;
    stack.put("config/xgb-c/lifecycle.yaml", "retrain: new_data\n").await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crs-domain/tests/fixtures/imported/xgb_logistic.json");
    let job = import(&mut client, "xgb-c", &std::fs::read(fixture).unwrap()).await;
    // Production whatever the gate said of a model fitted on other data: the cycle needs one.
    let promote = PromoteRequest {
        model_ver: "xgb-c".into(),
        run_id: job.run_id.clone(),
        reason: "test".into(),
        ..Default::default()
    };
    if runs(&mut client, "xgb-c").await.production_run_id != job.run_id {
        client.promote(promote).await.expect("promote");
    }
    let spec = SynthSpec { first_entity: 1, keywords: 200, attributes: ATTRIBUTES, seed: 3 };
    let mut served = Vec::new();
    for (week, drifted) in [(1, false), (2, true)] {
        let mut csv = Vec::new();
        write_week(&spec, week, drifted, &mut csv).unwrap();
        served.push(predict_request(&csv));
        stack.put(&format!("data/incoming/week{week}.csv"), csv).await;
    }
    // What production serves is captured, for the live check.
    let mut config = stack.serve_config();
    config.capture_sample = 1.0;
    let serve = stack.start_serve(config).await;
    let mut serving = serve.client.clone();
    let load = LoadModelRequest { model_ver: "xgb-c".into(), run: "production".into() };
    serving.load_model(load).await.expect("load xgb-c");
    let request = crs_proto::serve::PredictRequest { model_ver: "xgb-c".into(), ..served.remove(1) };
    serving.predict(request).await.expect("predict");
    serve.stop().await.expect("clean stop");
    let started = client.run_cycle(RunCycleRequest { model_ver: "xgb-c".into() }).await.expect("cycle").into_inner();
    let cycle = crs_testkit::wait_for_cycle(&mut client, started, std::time::Duration::from_secs(120)).await;
    assert_eq!(cycle.state(), CycleState::Succeeded, "{cycle:?}");
    assert!(
        cycle.decision.ends_with(
            "a retrain is due, but xgb-c is imported, not trained here: a new import is needed (crctl import)"
        ),
        "{}",
        cycle.decision
    );
    let record: serde_json::Value = serde_json::from_slice(&stack.get(&cycle.record_key).await.unwrap()).unwrap();
    assert!(record["drift"]["logloss"].as_f64().is_some(), "the drift check ran: {record:#}");
    // Trained elsewhere: what it learnt from is not in the bucket, what it was evaluated on is.
    let basis = "the file this imported run was evaluated on, data/train/eval.csv.gz";
    assert_eq!(
        (record["drift"]["basis"]["inputs"].as_str(), record["live"]["basis"].as_str()),
        (Some(basis), Some(basis))
    );
    let report = String::from_utf8(stack.get(&cycle.report_key).await.unwrap()).unwrap();
    let live = report.split("<h2 id=\"live\">Live traffic</h2>").nth(1).expect("a live section");
    let rows = record["live"]["rows"].as_u64().unwrap();
    assert!(live.contains(&format!("captured rows, compared with {basis}.")), "{live}");
    assert!(live.contains(&format!(" on {rows} captured rows")), "{live}");
    assert!(cycle.run_id.is_empty(), "nothing trained: {cycle:?}");
    assert_eq!(runs(&mut client, "xgb-c").await.runs.len(), 1);
}

/// serve-service takes the versions a bucket declares in its settings as it
/// takes built-in ones: an imported version named in SERVE_MODELS (or as
/// MODEL_VER) is served from the start, without a LoadModel; a name neither
/// built in nor declared stops the start-up, naming the setting and the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_versions_named_in_the_settings_are_served_from_the_start() {
    use crs_testkit::wait_until_serving;

    let stack = Stack::new().await;
    stack.put("config/xgb-s/model.yaml", "framework: xgboost\n").await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crs-domain/tests/fixtures/imported/xgb_logistic.json");
    let job = import(&mut client, "xgb-s", &std::fs::read(fixture).unwrap()).await;
    // Production whatever the gate said of a model fitted on other data.
    if runs(&mut client, "xgb-s").await.production_run_id != job.run_id {
        let promote = crs_proto::train::PromoteRequest {
            model_ver: "xgb-s".into(),
            run_id: job.run_id.clone(),
            reason: "test".into(),
            ..Default::default()
        };
        client.promote(promote).await.expect("promote");
    }
    let input = stack.get("data/predict/input/prediction_input.csv.gz").await.unwrap();

    let mut config = stack.serve_config();
    config.serve_models = vec!["xgb-s".parse().expect("a version name")];
    let serve = stack.start_serve(config).await;
    let mut serving = serve.client.clone();
    follows(&mut serving, "xgb-s", &job.run_id).await;
    let mut request = predict_request(&input);
    request.model_ver = "xgb-s".into();
    let answer = serving.predict(request).await.expect("predict xgb-s").into_inner();
    assert_eq!((answer.model_ver.as_str(), answer.run_id.as_str()), ("xgb-s", job.run_id.as_str()));

    let mut config = stack.serve_config();
    config.model_ver = "xgb-s".parse().expect("a version name");
    let serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;
    let answer = serve.client.clone().predict(predict_request(&input)).await.expect("predict").into_inner();
    assert_eq!((answer.model_ver.as_str(), answer.run_id.as_str()), ("xgb-s", job.run_id.as_str()));

    for setting in ["SERVE_MODELS", "MODEL_VER"] {
        let mut config = stack.serve_config();
        let undeclared: serve_service::VersionName = "xgb-none".parse().expect("a version name");
        match setting {
            "SERVE_MODELS" => config.serve_models = vec![undeclared],
            _ => config.model_ver = undeclared,
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = serve_service::run(config, serve_service::Listeners::new(listener), std::future::pending())
            .await
            .expect_err("an undeclared version");
        let message = format!("{err:#}");
        assert!(message.starts_with(&format!("{setting}: unknown model version \"xgb-none\"")), "{message}");
        assert!(message.ends_with("declared for imports in the bucket: xgb-s"), "{message}");
    }
}
