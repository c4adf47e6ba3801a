//! Several model versions served at once (SERVE_MODELS, LoadModel, the model
//! repository): each answers with its own run, moves on its own, unloads on its
//! own, and no more than MAX_LOADED_MODELS are held.

use std::time::Duration;

use crs_domain::models::ModelVer;
use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crs_proto::inference::{
    ModelReadyRequest, RepositoryIndexRequest, RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
};
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::serve::{GetModelRequest, LoadModelRequest, PredictRequest};
use crs_proto::train::PromoteRequest;
use crs_testkit::{Stack, parse_metrics, predict_request, scrape, serving_status, wait_until_serving};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

fn v(name: &str) -> ModelVer {
    ModelVer::parse(name).expect("registered version")
}

async fn rows(stack: &Stack) -> PredictRequest {
    let mut request = predict_request(&stack.get(PREDICTION_INPUT_KEY).await.expect("input"));
    request.rows.truncate(50);
    request
}

fn with_model(request: &PredictRequest, model_ver: &str, run_id: &str) -> PredictRequest {
    PredictRequest { model_ver: model_ver.into(), run_id: run_id.into(), ..request.clone() }
}

/// Waits until `model_ver` answers with `run_id`.
async fn wait_for_run(client: &mut ServeServiceClient<Channel>, model_ver: &str, run_id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let request = GetModelRequest { model_ver: model_ver.into(), ..Default::default() };
        if let Ok(info) = client.get_model(request).await
            && info.get_ref().run_id == run_id
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{model_ver} never served run {run_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the request should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(needle), "{:?} does not contain {needle:?}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_versions_answer_with_their_own_runs_move_alone_and_unload_alone() {
    let mut stack = Stack::new().await;
    let v1_run = stack.train("v1").await;
    let v0_first = stack.train("v0").await;
    let mut config = stack.serve_config();
    config.serve_models = vec![v("v0").into()];
    let (mut serve, metrics_addr) = stack.start_serve_with_metrics(config).await;
    wait_until_serving(&serve).await;
    wait_for_run(&mut serve.client, "v0", &v0_first).await;

    let request = rows(&stack).await;
    let default = serve.client.predict(request.clone()).await.expect("default").into_inner();
    assert_eq!((default.model_ver.as_str(), default.run_id.as_str()), ("v1", v1_run.as_str()));
    let v0 = serve.client.predict(with_model(&request, "v0", "")).await.expect("v0").into_inner();
    assert_eq!((v0.model_ver.as_str(), v0.run_id.as_str()), ("v0", v0_first.as_str()));
    assert_ne!(v0.cr, default.cr, "two different models answered");
    let pinned = serve.client.predict(with_model(&request, "v1", &v1_run)).await.expect("pinned").into_inner();
    assert_eq!(pinned.cr, default.cr);
    assert_status(
        serve.client.predict(with_model(&request, "v0", &v1_run)).await,
        Code::NotFound,
        &format!("does not serve run {v1_run}"),
    );
    assert_status(serve.client.predict(with_model(&request, "v7", "")).await, Code::InvalidArgument, "v7");
    assert_status(serve.client.predict(with_model(&request, "v2", "")).await, Code::FailedPrecondition, "not loaded");

    // Counted under the model that answered.
    let metrics = parse_metrics(&scrape(metrics_addr).await.2);
    for model in ["v0", "v1"] {
        let ok = [("rpc", "Predict"), ("model", model), ("code", "OK")];
        assert!(metrics.value("crs_serve_requests_total", &ok) >= 1.0, "{model}");
    }
    let v2_not_loaded = [("rpc", "Predict"), ("model", "v2"), ("code", "FailedPrecondition")];
    assert_eq!(metrics.value("crs_serve_requests_total", &v2_not_loaded), 1.0);
    assert_eq!(metrics.get("crs_serve_model_loaded", &[("model", "v0"), ("run_id", &v0_first)]), Some(1.0));
    assert_eq!(metrics.get("crs_serve_model_loaded", &[("model", "v1"), ("run_id", &v1_run)]), Some(1.0));

    let info = serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner();
    assert_eq!((info.model_ver.as_str(), info.run_id.as_str()), ("v1", v1_run.as_str()));
    assert!(info.memory_bytes > 0);
    let loaded: Vec<(&str, &str)> = info.loaded.iter().map(|m| (m.model_ver.as_str(), m.run_id.as_str())).collect();
    assert_eq!(loaded, [("v0", v0_first.as_str()), ("v1", v1_run.as_str())]);
    assert!(info.loaded.iter().all(|m| m.memory_bytes > 0 && m.selection == "production" && m.shadow_of.is_empty()));

    // Moving v0's production alias moves v0 only.
    let v0_second = stack.train("v0").await;
    let mut train = stack.start_train(stack.train_config()).await;
    let promote = PromoteRequest {
        model_ver: "v0".into(),
        run_id: v0_second.clone(),
        reason: "test".into(),
        ..Default::default()
    };
    train.client.promote(promote).await.expect("promote");
    wait_for_run(&mut serve.client, "v0", &v0_second).await;
    let after = serve.client.predict(request.clone()).await.expect("default after").into_inner();
    assert_eq!((after.run_id.as_str(), &after.cr), (v1_run.as_str(), &default.cr));
    // And LoadModel re-points v0 alone, pinned.
    let load = LoadModelRequest { model_ver: "v0".into(), run: v0_first.clone() };
    let info = serve.client.load_model(load).await.expect("load v0").into_inner();
    assert_eq!(
        (info.model_ver.as_str(), info.run_id.as_str(), info.selection.as_str()),
        ("v0", v0_first.as_str(), v0_first.as_str())
    );
    let v0_again = serve.client.predict(with_model(&request, "v0", "")).await.expect("v0 again").into_inner();
    assert_eq!((v0_again.run_id.as_str(), &v0_again.cr), (v0_first.as_str(), &v0.cr));
    assert_eq!(serve.client.predict(request.clone()).await.expect("v1").into_inner().run_id, v1_run);

    // Unloading v0 leaves v1 serving.
    let mut v2 = GrpcInferenceServiceClient::new(serve.channel());
    let unload = RepositoryModelUnloadRequest { model_name: "v0".into(), ..Default::default() };
    v2.repository_model_unload(unload).await.expect("unload v0");
    assert_status(serve.client.predict(with_model(&request, "v0", "")).await, Code::FailedPrecondition, "unloaded");
    assert_eq!(serve.client.predict(request.clone()).await.expect("v1 still").into_inner().cr, default.cr);
    assert_eq!(serving_status(&mut serve.health()).await, ServingStatus::Serving);
    let ready = |name: &str| ModelReadyRequest { name: name.into(), ..Default::default() };
    assert!(!v2.model_ready(ready("v0")).await.expect("ready").into_inner().ready);
    assert!(v2.model_ready(ready("v1")).await.expect("ready").into_inner().ready);
    let index = v2.repository_index(RepositoryIndexRequest::default()).await.expect("index").into_inner();
    let states: Vec<(&str, &str)> = index.models.iter().map(|m| (m.name.as_str(), m.state.as_str())).collect();
    assert_eq!(states, [("v0", "UNAVAILABLE"), ("v1", "READY"), ("v2", "UNAVAILABLE")]);
    // After a poll that began after the unload (it followed v1's alias to a new run), v0 is
    // still unloaded; then a repository load brings back its production run.
    let v1_second = stack.train("v1").await;
    let promote = PromoteRequest {
        model_ver: "v1".into(),
        run_id: v1_second.clone(),
        reason: "test".into(),
        ..Default::default()
    };
    train.client.promote(promote).await.expect("promote v1");
    wait_for_run(&mut serve.client, "v1", &v1_second).await;
    assert!(serve.client.predict(with_model(&request, "v0", "")).await.is_err());
    let load = RepositoryModelLoadRequest { model_name: "v0".into(), ..Default::default() };
    v2.repository_model_load(load).await.expect("load v0");
    let back = serve.client.predict(with_model(&request, "v0", "")).await.expect("v0 back").into_inner();
    assert_eq!(back.run_id, v0_second);
    assert!(v2.model_ready(ready("v0")).await.expect("ready").into_inner().ready);
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_beyond_max_loaded_models_are_refused_until_one_is_unloaded() {
    let mut stack = Stack::new().await;
    let v1_run = stack.train("v1").await;
    let v0_run = stack.train("v0").await;

    // Configured beyond the limit: the service does not start.
    let mut config = stack.serve_config();
    config.serve_models = vec![v("v0").into(), v("v2").into()];
    config.max_loaded_models = 2;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = serve_service::run(config, serve_service::Listeners::new(listener), std::future::pending())
        .await
        .expect_err("too many models");
    assert!(err.to_string().contains("MAX_LOADED_MODELS is 2"), "{err}");

    let mut config = stack.serve_config();
    config.max_loaded_models = 1;
    let mut serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;
    let mut v2 = GrpcInferenceServiceClient::new(serve.channel());
    let load_v0 = LoadModelRequest { model_ver: "v0".into(), run: v0_run.clone() };
    assert_status(serve.client.load_model(load_v0.clone()).await, Code::FailedPrecondition, "MAX_LOADED_MODELS=1");
    let repository_v0 = RepositoryModelLoadRequest { model_name: "v0".into(), ..Default::default() };
    assert_status(v2.repository_model_load(repository_v0.clone()).await, Code::FailedPrecondition, "unload one first");
    // Reloading a version already held takes no new place.
    let load_v1 = LoadModelRequest { model_ver: "v1".into(), run: v1_run.clone() };
    serve.client.load_model(load_v1.clone()).await.expect("re-point v1");

    let unload = RepositoryModelUnloadRequest { model_name: "v1".into(), ..Default::default() };
    v2.repository_model_unload(unload).await.expect("unload v1");
    v2.repository_model_load(repository_v0).await.expect("v0 fits now");
    let request = rows(&stack).await;
    let answer = serve.client.predict(with_model(&request, "v0", "")).await.expect("v0").into_inner();
    assert_eq!(answer.run_id, v0_run);
    assert_status(serve.client.load_model(load_v1).await, Code::FailedPrecondition, "(v0)");
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_over_max_model_memory_is_refused_naming_the_figures() {
    const V1_RUN: &str = "20261201T210556681Z-9626e2";
    const V0_RUN: &str = "20261201T210556880Z-ebae9d";
    let stack = Stack::new().await;
    stack.install_fixture_runs();
    let load = |model_ver: &str, run: &str| LoadModelRequest { model_ver: model_ver.into(), run: run.into() };
    let mib = |bytes: u64| format!("{:.3}", bytes as f64 / f64::from(1 << 20));

    // Without a tight limit both load, and say what they hold.
    let args = ["--bucket-url", &stack.bucket_url, "--model-run", V1_RUN];
    let serve = stack.start_serve(crs_testkit::parse_config(&args)).await;
    wait_until_serving(&serve).await;
    let info = serve.client.clone().load_model(load("v0", V0_RUN)).await.expect("v0 loads").into_inner();
    let held = |ver: &str| info.loaded.iter().find(|m| m.model_ver == ver).expect("loaded").memory_bytes;
    let (v0, v1) = (held("v0"), held("v1"));
    assert!(v0 > 0 && v1 > v0, "v0 {v0} bytes, v1 {v1} bytes");
    serve.stop().await.expect("stops");

    // Room for v1 and half of v0.
    let limit = format!("{}", (v1 + v0 / 2) as f64 / f64::from(1 << 20));
    let args = ["--bucket-url", &stack.bucket_url, "--model-run", V1_RUN, "--max-model-memory-mb", &limit];
    let serve = stack.start_serve(crs_testkit::parse_config(&args)).await;
    wait_until_serving(&serve).await;
    let mut client = serve.client.clone();
    assert_status(
        client.load_model(load("v0", V0_RUN)).await,
        Code::FailedPrecondition,
        &format!(
            "cannot load model v0: its run {V0_RUN} takes {} MiB and the other loaded models {} MiB, over MAX_MODEL_MEMORY_MB=",
            mib(v0),
            mib(v1)
        ),
    );
    let not_loaded = client.get_model(GetModelRequest { model_ver: "v0".into(), ..Default::default() }).await;
    assert_status(not_loaded, Code::FailedPrecondition, "not loaded");
    // A version's own run is replaced, not added to: reloading v1 fits.
    let info = client.load_model(load("v1", V1_RUN)).await.expect("v1 reloads").into_inner();
    assert_eq!(info.run_id, V1_RUN);
}
