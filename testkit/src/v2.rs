//! Open Inference Protocol requests for tests: prediction rows as V2 tensors
//! over gRPC (typed or raw contents), the same request over REST (JSON
//! tensors, or Triton's binary tensor data extension), and the rates of an
//! answer, so that tests can send one request every way and compare.

use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crs_proto::inference::model_infer_request::InferInputTensor;
use crs_proto::inference::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use crs_proto::serve::PredictRequest;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::{Stack, predict_request};

/// An Open Inference Protocol client on `channel` that takes messages as large as the tests send.
pub fn grpc_client(channel: Channel) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

/// `count` copies of the stack's prediction input rows, cycled.
pub async fn input_rows(stack: &Stack, count: usize) -> PredictRequest {
    let mut request = predict_request(&stack.get(PREDICTION_INPUT_KEY).await.expect("input"));
    let all = request.rows.clone();
    request.rows = all.iter().cycle().take(count).cloned().collect();
    request
}

/// The binary tensor data extension's header.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// `predict`'s rows as a `ModelInfer` request of model `v1`, id `req-1`, with
/// the attribute columns in `attributes`' order (the model's), as typed or raw contents.
pub fn infer_request(predict: &PredictRequest, attributes: &[String], raw: bool) -> ModelInferRequest {
    let columns: Vec<usize> = attributes
        .iter()
        .map(|name| predict.attribute_names.iter().position(|n| n == name).expect("the input has every attribute"))
        .collect();
    let n = predict.rows.len() as i64;
    let entity: Vec<i64> = predict.rows.iter().map(|r| r.entity_id).collect();
    let device: Vec<Vec<u8>> = predict.rows.iter().map(|r| r.device.clone().into_bytes()).collect();
    let values: Vec<i32> =
        predict.rows.iter().flat_map(|r| columns.iter().map(|&c| r.attribute_values[c] as i32)).collect();
    let tensor = |name: &str, datatype: &str, shape: Vec<i64>| InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    };
    let mut inputs = vec![
        tensor("entity_id", "INT64", vec![n]),
        tensor("device", "BYTES", vec![n]),
        tensor("attributes", "INT8", vec![n, attributes.len() as i64]),
    ];
    let mut request = ModelInferRequest { model_name: "v1".into(), id: "req-1".into(), ..Default::default() };
    if raw {
        request.raw_input_contents = vec![
            entity.iter().flat_map(|v| v.to_le_bytes()).collect(),
            length_prefixed(&device.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            values.iter().map(|&v| v as i8 as u8).collect(),
        ];
    } else {
        inputs[0].contents = Some(InferTensorContents { int64_contents: entity, ..Default::default() });
        inputs[1].contents = Some(InferTensorContents { bytes_contents: device, ..Default::default() });
        inputs[2].contents = Some(InferTensorContents { int_contents: values, ..Default::default() });
    }
    request.inputs = inputs;
    request
}

/// BYTES elements as raw contents: each a 4-byte little-endian length, then its bytes.
pub fn length_prefixed(elements: &[&[u8]]) -> Vec<u8> {
    elements.iter().flat_map(|e| (e.len() as u32).to_le_bytes().into_iter().chain(e.iter().copied())).collect()
}

/// The `cr` output of a gRPC answer, from raw or typed contents.
pub fn rates(response: &ModelInferResponse) -> Vec<f64> {
    assert_eq!(response.outputs.len(), 1, "{response:?}");
    let output = &response.outputs[0];
    assert_eq!((output.name.as_str(), output.datatype.as_str()), ("cr", "FP64"));
    match response.raw_output_contents.as_slice() {
        [] => output.contents.as_ref().expect("typed contents").fp64_contents.clone(),
        [raw] => {
            assert!(output.contents.is_none(), "raw and typed contents at once");
            raw_rates(raw)
        }
        more => panic!("{} raw outputs for one output tensor", more.len()),
    }
}

fn raw_rates(raw: &[u8]) -> Vec<f64> {
    assert_eq!(raw.len() % 8, 0, "FP64 data of {} bytes", raw.len());
    raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
}

/// The request's parts every REST form shares: id, outputs, and each input's
/// name, datatype and shape.
fn rest_header(request: &ModelInferRequest) -> Value {
    let inputs: Vec<Value> = request
        .inputs
        .iter()
        .map(|input| json!({ "name": input.name, "datatype": input.datatype, "shape": input.shape }))
        .collect();
    let mut header = json!({ "id": request.id, "inputs": inputs });
    if !request.outputs.is_empty() {
        let outputs: Vec<Value> = request.outputs.iter().map(|output| json!({ "name": output.name })).collect();
        header["outputs"] = Value::Array(outputs);
    }
    header
}

/// A typed gRPC request as the REST JSON body of the same request: each
/// input's contents as its `data`, flat (BYTES as strings, which must be UTF-8).
pub fn rest_json(request: &ModelInferRequest) -> Value {
    let mut body = rest_header(request);
    for (input, json) in request.inputs.iter().zip(body["inputs"].as_array_mut().expect("inputs")) {
        let contents = input.contents.clone().unwrap_or_default();
        json["data"] = match input.datatype.as_str() {
            "INT64" => json!(contents.int64_contents),
            "BYTES" => json!(
                contents
                    .bytes_contents
                    .iter()
                    .map(|b| String::from_utf8(b.clone()).expect("UTF-8 in a JSON test"))
                    .collect::<Vec<_>>()
            ),
            _ => json!(contents.int_contents),
        };
    }
    body
}

/// A raw gRPC request as the REST body of the same request with the binary
/// tensor data extension: the JSON (each input's `binary_data_size`), then
/// each input's raw contents; and the JSON's length, for [`HEADER_LENGTH`].
pub fn rest_binary(request: &ModelInferRequest) -> (Vec<u8>, usize) {
    let mut header = rest_header(request);
    for (raw, json) in request.raw_input_contents.iter().zip(header["inputs"].as_array_mut().expect("inputs")) {
        json["parameters"] = json!({ "binary_data_size": raw.len() });
    }
    header["parameters"] = json!({ "binary_data_output": true });
    let mut body = serde_json::to_vec(&header).expect("JSON");
    let length = body.len();
    for raw in &request.raw_input_contents {
        body.extend_from_slice(raw);
    }
    (body, length)
}

/// A REST inference answer: its JSON, and the rates of its `cr` output from
/// JSON data or from the binary data after a JSON of `header_length` bytes.
pub fn rest_answer(body: &[u8], header_length: Option<usize>) -> (Value, Vec<f64>) {
    let (json, binary) = body.split_at(header_length.unwrap_or(body.len()));
    let answer: Value = serde_json::from_slice(json).expect("a JSON answer");
    let output = &answer["outputs"][0];
    assert_eq!((output["name"].as_str(), output["datatype"].as_str()), (Some("cr"), Some("FP64")), "{answer}");
    let rates = match output.get("data") {
        Some(data) => {
            assert!(binary.is_empty(), "JSON data and binary data at once");
            data.as_array().expect("data").iter().map(|v| v.as_f64().expect("a number")).collect()
        }
        None => {
            assert_eq!(output["parameters"]["binary_data_size"].as_u64(), Some(binary.len() as u64), "{answer}");
            raw_rates(binary)
        }
    };
    assert_eq!(output["shape"], json!([rates.len()]), "{answer}");
    (answer, rates)
}
