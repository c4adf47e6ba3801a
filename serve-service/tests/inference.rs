//! The Open Inference Protocol (KServe V2) beside `crs.serve.v1`: health,
//! metadata, inference equal to `Predict` in raw and typed form, the model
//! repository on the one slot, and every class of bad input answered with a
//! code and a message naming what is wrong.

use crs_proto::inference::model_infer_request::InferRequestedOutputTensor;
use crs_proto::inference::{
    ModelMetadataRequest, ModelReadyRequest, RepositoryIndexRequest, RepositoryModelLoadRequest,
    RepositoryModelUnloadRequest, ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest, infer_parameter,
};
use crs_proto::serve::GetModelRequest;
use crs_testkit::v2::{grpc_client as client, input_rows as rows};
use crs_testkit::v2::{infer_request, length_prefixed, rates};
use crs_testkit::{Stack, parse_metrics, scrape, serving_status, wait_until, wait_until_serving};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needles: &[&str]) {
    let status = result.expect_err("request must fail");
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(status.message().contains(needle), "{:?} does not mention {needle:?}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_inference_equal_to_predict_and_the_repository() {
    let mut stack = Stack::new().await;
    let run_id = stack.train("v1").await;
    let (mut serve, metrics) = stack.start_serve_with_metrics(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let mut v2 = client(serve.channel());

    let (v1, v1alpha) = crs_testkit::reflected_services(serve.channel()).await;
    let expected = [
        "crs.serve.v1.ServeService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "inference.GRPCInferenceService",
    ];
    assert_eq!(v1, expected, "grpc.reflection.v1 lists every service");
    assert_eq!(v1alpha, expected, "grpc.reflection.v1alpha lists every service");

    assert!(v2.server_live(ServerLiveRequest {}).await.expect("live").into_inner().live);
    assert!(v2.server_ready(ServerReadyRequest {}).await.expect("ready").into_inner().ready);
    let server = v2.server_metadata(ServerMetadataRequest {}).await.expect("server metadata").into_inner();
    assert_eq!(server.name, "serve-service");
    assert_eq!(server.extensions, ["model_repository"]);
    for version in ["", run_id.as_str()] {
        let request = ModelReadyRequest { name: "v1".into(), version: version.into() };
        assert!(v2.model_ready(request).await.expect("model ready").into_inner().ready, "version {version:?}");
    }
    let request = ModelReadyRequest { name: "v1".into(), version: "20200101T000000000Z-000000".into() };
    assert!(!v2.model_ready(request).await.expect("model ready").into_inner().ready);
    let request = ModelReadyRequest { name: "v0".into(), version: String::new() };
    assert!(!v2.model_ready(request).await.expect("v0 is known but not loaded").into_inner().ready);

    let info = serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner();
    let metadata = v2
        .model_metadata(ModelMetadataRequest { name: "v1".into(), version: String::new() })
        .await
        .expect("model metadata")
        .into_inner();
    assert_eq!((metadata.name.as_str(), metadata.versions.as_slice()), ("v1", [run_id.clone()].as_slice()));
    let inputs: Vec<(&str, &str, &[i64])> =
        metadata.inputs.iter().map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.as_slice())).collect();
    let k = info.attribute_names.len() as i64;
    assert_eq!(
        inputs,
        [("entity_id", "INT64", &[-1][..]), ("device", "BYTES", &[-1][..]), ("attributes", "INT8", &[-1, k][..])]
    );
    let listed = match metadata.inputs[2].parameters["attributes"].parameter_choice.as_ref() {
        Some(infer_parameter::ParameterChoice::StringParam(names)) => names.clone(),
        other => panic!("attributes parameter: {other:?}"),
    };
    assert_eq!(listed, info.attribute_names.join(","), "ModelMetadata lists the attributes in GetModel's order");
    assert_eq!(metadata.outputs.len(), 1);
    assert_eq!((metadata.outputs[0].name.as_str(), metadata.outputs[0].datatype.as_str()), ("cr", "FP64"));

    for count in [1, 1_000] {
        let predict = rows(&stack, count).await;
        let expected = serve.client.predict(predict.clone()).await.expect("predict").into_inner();
        for raw in [true, false] {
            let mut request = infer_request(&predict, &info.attribute_names, raw);
            if !raw {
                // Naming the output changes nothing; an empty list means every output.
                request.outputs = vec![InferRequestedOutputTensor { name: "cr".into(), ..Default::default() }];
            }
            let response = v2.model_infer(request).await.expect("infer").into_inner();
            assert_eq!(response.raw_output_contents.is_empty(), !raw, "answered in kind");
            assert_eq!((response.model_name.as_str(), response.model_version.as_str()), ("v1", run_id.as_str()));
            assert_eq!(response.id, "req-1");
            assert_eq!(response.outputs[0].shape, [count as i64]);
            assert_eq!(rates(&response), expected.cr, "{count} rows, raw {raw}: ModelInfer equals Predict");
        }
        // Pinned to the served run: the same answer.
        let mut request = infer_request(&predict, &info.attribute_names, true);
        request.model_version = run_id.clone();
        assert_eq!(rates(&v2.model_infer(request).await.expect("infer at the run").into_inner()), expected.cr);
    }

    let index = v2.repository_index(RepositoryIndexRequest::default()).await.expect("index").into_inner();
    let entries: Vec<(&str, &str, &str)> =
        index.models.iter().map(|m| (m.name.as_str(), m.version.as_str(), m.state.as_str())).collect();
    assert_eq!(entries, [("v0", "", "UNAVAILABLE"), ("v1", run_id.as_str(), "READY"), ("v2", "", "UNAVAILABLE")]);
    let request = RepositoryIndexRequest { ready: true, ..Default::default() };
    assert_eq!(v2.repository_index(request).await.expect("ready index").into_inner().models.len(), 1);

    // Unload: nothing served, health NOT_SERVING, and the poller does not bring it back.
    let unload = RepositoryModelUnloadRequest { model_name: "v1".into(), ..Default::default() };
    v2.repository_model_unload(unload.clone()).await.expect("unload");
    let mut health = serve.health();
    assert_eq!(serving_status(&mut health).await, ServingStatus::NotServing);
    assert!(!v2.server_ready(ServerReadyRequest {}).await.expect("ready").into_inner().ready);
    let one = infer_request(&rows(&stack, 1).await, &info.attribute_names, true);
    assert_status(v2.model_infer(one.clone()).await, Code::NotFound, &["model 'v1' is not loaded"]);
    assert_status(serve.client.predict(rows(&stack, 1).await).await, Code::FailedPrecondition, &["unloaded"]);
    assert_status(v2.repository_model_unload(unload).await, Code::NotFound, &["model 'v1' is not loaded"]);
    // Two whole polls after the unload it is still unloaded.
    let polls = async move || {
        let (_, _, text) = scrape(metrics).await;
        parse_metrics(&text).get("crs_serve_model_polls_total", &[]).unwrap_or(0.0)
    };
    let unloaded_at = polls().await;
    wait_until(std::time::Duration::from_secs(30), "two polls", || async move { polls().await >= unloaded_at + 2.0 })
        .await;
    assert!(!v2.server_ready(ServerReadyRequest {}).await.expect("ready").into_inner().ready);

    let load = RepositoryModelLoadRequest { model_name: "v1".into(), ..Default::default() };
    v2.repository_model_load(load).await.expect("load");
    wait_until_serving(&serve).await;
    assert_eq!(rates(&v2.model_infer(one).await.expect("infer after load").into_inner()).len(), 1);
    let load = RepositoryModelLoadRequest { model_name: "v0".into(), ..Default::default() };
    assert_status(v2.repository_model_load(load).await, Code::NotFound, &["model v0 has no production run yet"]);
    let load = RepositoryModelLoadRequest { model_name: "v9".into(), ..Default::default() };
    assert_status(v2.repository_model_load(load).await, Code::NotFound, &["unknown model 'v9'"]);
    serve.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inference_requests_name_the_tensor_and_row() {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let mut config = stack.serve_config();
    config.max_predict_rows = 50;
    let mut serve = stack.start_serve(config).await;
    wait_until_serving(&serve).await;
    let mut v2 = client(serve.channel());
    let attributes =
        serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner().attribute_names;
    let predict = rows(&stack, 3).await;
    let typed = infer_request(&predict, &attributes, false);
    let raw = infer_request(&predict, &attributes, true);
    let invalid = Code::InvalidArgument;

    // Unknown model or version.
    let mut request = raw.clone();
    request.model_name = "v9".into();
    assert_status(v2.model_infer(request).await, Code::NotFound, &["unknown model 'v9'"]);
    let mut request = raw.clone();
    request.model_name = "v0".into();
    assert_status(v2.model_infer(request).await, Code::NotFound, &["model 'v0' is not loaded"]);
    let mut request = raw.clone();
    request.model_version = "20200101T000000000Z-000000".into();
    assert_status(v2.model_infer(request).await, Code::NotFound, &["no loaded version '20200101T000000000Z-000000'"]);
    let request = ModelMetadataRequest { name: "nope".into(), version: String::new() };
    assert_status(v2.model_metadata(request).await, Code::NotFound, &["unknown model 'nope'"]);
    let request = ModelReadyRequest { name: "nope".into(), version: String::new() };
    assert_status(v2.model_ready(request).await, Code::NotFound, &["unknown model 'nope'"]);

    // Wrong datatype.
    let mut request = typed.clone();
    request.inputs[0].datatype = "INT32".into();
    assert_status(v2.model_infer(request).await, invalid, &["input 'entity_id'", "INT64", "INT32"]);
    let mut request = raw.clone();
    request.inputs[2].datatype = "FP32".into();
    assert_status(v2.model_infer(request).await, invalid, &["input 'attributes'", "INT8", "FP32"]);

    // Shape mismatches: a wrong rank, a wrong width, rows that disagree, contents of another size.
    let mut request = typed.clone();
    request.inputs[0].shape = vec![3, 1];
    assert_status(v2.model_infer(request).await, invalid, &["input 'entity_id'", "shape must be [N]"]);
    let mut request = typed.clone();
    request.inputs[2].shape = vec![3, attributes.len() as i64 + 1];
    assert_status(v2.model_infer(request).await, invalid, &["input 'attributes'", "one column per attribute"]);
    let mut request = typed.clone();
    request.inputs[1].shape = vec![2];
    assert_status(v2.model_infer(request).await, invalid, &["input 'device' has 2 rows", "'entity_id' has 3"]);
    let mut request = typed.clone();
    request.inputs[0].shape = vec![-3];
    assert_status(v2.model_infer(request).await, invalid, &["input 'entity_id'", "[-3]"]);
    let mut request = typed.clone();
    request.inputs[0].contents.as_mut().unwrap().int64_contents.pop();
    assert_status(v2.model_infer(request).await, invalid, &["input 'entity_id'", "3 elements", "hold 2"]);

    // Raw contents of the wrong length.
    let mut request = raw.clone();
    request.raw_input_contents[0].pop();
    assert_status(v2.model_infer(request).await, invalid, &["input 'entity_id'", "must be 24 bytes, got 23"]);
    let mut request = raw.clone();
    request.raw_input_contents[1].pop();
    assert_status(v2.model_infer(request).await, invalid, &["input 'device'", "row 2"]);
    let mut request = raw.clone();
    request.raw_input_contents[1].push(0);
    assert_status(v2.model_infer(request).await, invalid, &["input 'device'", "left over"]);
    let mut request = raw.clone();
    request.raw_input_contents[2].push(0);
    assert_status(v2.model_infer(request).await, invalid, &["input 'attributes'", "raw contents"]);
    let mut request = raw.clone();
    request.raw_input_contents.pop();
    assert_status(v2.model_infer(request).await, invalid, &["raw_input_contents has 2 entries for 3 inputs"]);
    let mut request = raw.clone();
    request.inputs[0].contents = typed.inputs[0].contents.clone();
    assert_status(v2.model_infer(request).await, invalid, &["input 'entity_id' has contents", "raw_input_contents"]);

    // Missing, unknown or repeated inputs; unknown outputs.
    let mut request = typed.clone();
    request.inputs.remove(1);
    assert_status(v2.model_infer(request).await, invalid, &["missing input 'device'"]);
    let mut request = typed.clone();
    request.inputs[1].name = "devices".into();
    assert_status(v2.model_infer(request).await, invalid, &["unknown input 'devices'"]);
    let mut request = typed.clone();
    request.inputs[1] = request.inputs[0].clone();
    assert_status(v2.model_infer(request).await, invalid, &["input 'entity_id' appears twice"]);
    let mut request = typed.clone();
    request.outputs = vec![InferRequestedOutputTensor { name: "rate".into(), ..Default::default() }];
    assert_status(v2.model_infer(request).await, invalid, &["unknown output 'rate'"]);

    // Invalid values: a device, a non-binary attribute (typed and raw), bytes that are not text.
    let mut request = typed.clone();
    request.inputs[1].contents.as_mut().unwrap().bytes_contents[2] = b"Phone".to_vec();
    assert_status(v2.model_infer(request).await, invalid, &["input 'device' row 2", "unknown device \"Phone\""]);
    let mut request = raw.clone();
    request.raw_input_contents[1] = length_prefixed(&[b"Computer\xff", b"Computer", b"Tablet"]);
    assert_status(v2.model_infer(request).await, invalid, &["input 'device' row 0", "UTF-8"]);
    let mut request = typed.clone();
    request.inputs[2].contents.as_mut().unwrap().int_contents[attributes.len() + 1] = 2;
    assert_status(
        v2.model_infer(request).await,
        invalid,
        &["input 'attributes' row 1, column 1", &format!("'{}'", attributes[1]), "found 2"],
    );
    let mut request = raw.clone();
    request.raw_input_contents[2][0] = (-1i8) as u8;
    assert_status(v2.model_infer(request).await, invalid, &["input 'attributes' row 0, column 0", "found -1"]);

    // The row limit.
    let big = infer_request(&rows(&stack, 51).await, &attributes, true);
    assert_status(v2.model_infer(big).await, invalid, &["request has 51 rows; the limit is 50"]);

    // After all that, the service still answers.
    assert_eq!(rates(&v2.model_infer(raw).await.expect("good request").into_inner()).len(), 3);
    serve.stop().await.expect("clean stop");
}
