//! The Open Inference Protocol over HTTP/REST (`SERVE_HTTP_ADDR`) against the
//! real server on 127.0.0.1:0: every endpoint; answers equal to gRPC's
//! `ModelInfer` and `Predict` for 1, 1,000 and MAX_PREDICT_ROWS rows, as JSON
//! (flat and nested) and as binary tensor data; every error class with its
//! status, and for a bad request the very message gRPC gives for it; the
//! token rules; TLS; the HTTP metrics; and the OpenAPI document, served and
//! committed alike.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use bytes::Bytes;
use crs_platform::service::security::{Secret, ServerSecurity, TokenSettings};
use crs_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crs_proto::inference::model_infer_request::InferRequestedOutputTensor;
use crs_proto::inference::{ModelInferRequest, ModelMetadataRequest, RepositoryIndexRequest, infer_parameter};
use crs_proto::serve::GetModelRequest;
use crs_testkit::v2::{HEADER_LENGTH, infer_request, length_prefixed, rates, rest_answer, rest_binary, rest_json};
use crs_testkit::v2::{grpc_client as grpc, input_rows as rows};
use crs_testkit::{HttpPorts, Stack, fixture_dir, parse_metrics, scrape, wait_until_serving};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// Every request of these tests ends within this long.
const WITHIN: Duration = Duration::from_secs(120);

type V2 = GrpcInferenceServiceClient<Channel>;

/// An HTTP answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The message of an `{"error": ...}` answer of `status`.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let json = self.json();
        let object = json.as_object().expect("an object");
        assert_eq!(object.len(), 1, "only the error: {json}");
        object["error"].as_str().expect("a message").to_owned()
    }

    /// The rates of an inference answer, JSON or binary.
    fn rates(&self) -> (Value, Vec<f64>) {
        assert_eq!(self.status, 200, "{self:?}");
        let header_length = self.header(HEADER_LENGTH).map(|v| v.parse().expect("a length"));
        let kind = if header_length.is_some() { "application/octet-stream" } else { "application/json" };
        assert_eq!(self.header("content-type"), Some(kind));
        rest_answer(&self.body, header_length)
    }
}

/// A REST client of one server.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(addr: std::net::SocketAddr) -> Self {
        let client = reqwest::Client::builder().no_proxy().timeout(WITHIN).build().expect("client");
        Api { base: format!("http://{addr}"), client }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("an answer");
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Answer { status, headers, body: response.bytes().await.expect("a body") }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.send(self.client.post(format!("{}{path}", self.base)).body(body)).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.post(path, body.to_string()).await
    }

    async fn post_binary(&self, path: &str, (body, header_length): (Vec<u8>, usize)) -> Answer {
        let request = self.client.post(format!("{}{path}", self.base)).header(HEADER_LENGTH, header_length).body(body);
        self.send(request).await
    }
}

/// `rest_json`'s body with the attributes nested row by row, as the shape is.
fn nested(mut body: Value, width: usize) -> Value {
    for input in body["inputs"].as_array_mut().expect("inputs") {
        if input["name"] == "attributes" {
            let flat = input["data"].as_array().expect("data").clone();
            input["data"] = Value::Array(flat.chunks(width).map(|row| Value::Array(row.to_vec())).collect());
        }
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_the_grpc_side_does() {
    let mut stack = Stack::new().await;
    let run_id = stack.train("v1").await;
    let (mut serve, ports) = stack.start_serve_with_http(stack.serve_config()).await;
    wait_until_serving(&serve).await;
    let mut v2 = grpc(serve.channel());
    let api = Api::new(ports.http);

    // Health, by status alone.
    for path in ["/v2/health/live", "/v2/health/ready", "/v2/models/v1/ready"] {
        let answer = api.get(path).await;
        assert_eq!((answer.status, answer.body.len()), (200, 0), "{path}: {answer:?}");
    }
    assert_eq!(api.get(&format!("/v2/models/v1/versions/{run_id}/ready")).await.status, 200);
    assert_eq!(api.get("/v2/models/v1/versions/20200101T000000000Z-000000/ready").await.status, 400);
    let not_loaded = api.get("/v2/models/v0/ready").await;
    assert_eq!((not_loaded.status, not_loaded.body.len()), (400, 0));
    assert!(api.get("/v2/models/v9/ready").await.error(404).contains("unknown model 'v9'"));

    // Server and model metadata: the gRPC answers, as JSON.
    let server = api.get("/v2").await.json();
    assert_eq!(server["name"], "serve-service");
    assert_eq!(server["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(server["extensions"], json!(["model_repository", "binary_tensor_data"]));
    let request = ModelMetadataRequest { name: "v1".into(), version: String::new() };
    let expected = v2.model_metadata(request).await.expect("gRPC metadata").into_inner();
    let tensor = |t: &crs_proto::inference::model_metadata_response::TensorMetadata| {
        let mut json = json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape });
        for (name, value) in &t.parameters {
            let Some(infer_parameter::ParameterChoice::StringParam(value)) = &value.parameter_choice else {
                panic!("{name}: not a string parameter");
            };
            json["parameters"][name] = json!(value);
        }
        json
    };
    let expected = json!({
        "name": expected.name,
        "versions": expected.versions,
        "platform": expected.platform,
        "inputs": expected.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "outputs": expected.outputs.iter().map(tensor).collect::<Vec<_>>(),
    });
    assert_eq!(api.get("/v2/models/v1").await.json(), expected);
    assert_eq!(api.get(&format!("/v2/models/v1/versions/{run_id}")).await.json(), expected);
    let attributes =
        serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner().attribute_names;
    assert_eq!(expected["inputs"][2]["parameters"]["attributes"], json!(attributes.join(",")));

    // Inference: JSON flat and nested, binary, equal to ModelInfer and Predict.
    let max_rows = stack.serve_config().max_predict_rows;
    for count in [1, 1_000, max_rows] {
        let predict = rows(&stack, count).await;
        let expected = serve.client.predict(predict.clone()).await.expect("predict").into_inner().cr;
        let raw = infer_request(&predict, &attributes, true);
        assert_eq!(rates(&v2.model_infer(raw.clone()).await.expect("ModelInfer").into_inner()), expected);
        let typed = infer_request(&predict, &attributes, false);
        let flat = rest_json(&typed);
        for (form, answer) in [
            ("JSON", api.post_json("/v2/models/v1/infer", &flat).await),
            ("nested JSON", api.post_json("/v2/models/v1/infer", &nested(flat.clone(), attributes.len())).await),
            ("binary", api.post_binary("/v2/models/v1/infer", rest_binary(&raw)).await),
            ("JSON at the run", api.post_json(&format!("/v2/models/v1/versions/{run_id}/infer"), &flat).await),
        ] {
            let (json, cr) = answer.rates();
            assert_eq!(cr, expected, "{count} rows, {form}: REST equals Predict and ModelInfer");
            assert_eq!(
                (&json["model_name"], &json["model_version"], &json["id"]),
                (&json!("v1"), &json!(run_id), &json!("req-1"))
            );
        }
    }

    // The outputs asked for, and how: binary per output or for all, JSON per output.
    let typed = infer_request(&rows(&stack, 3).await, &attributes, false);
    let mut body = rest_json(&typed);
    body["outputs"] = json!([{ "name": "cr", "parameters": { "binary_data": true } }]);
    assert!(api.post_json("/v2/models/v1/infer", &body).await.header(HEADER_LENGTH).is_some());
    body["parameters"] = json!({ "binary_data_output": true });
    body["outputs"] = json!([{ "name": "cr", "parameters": { "binary_data": false } }]);
    let answer = api.post_json("/v2/models/v1/infer", &body).await;
    assert_eq!((answer.header(HEADER_LENGTH), answer.rates().1.len()), (None, 3));
    body.as_object_mut().expect("object").remove("id");
    let (json, _) = api.post_json("/v2/models/v1/infer", &body).await.rates();
    assert!(json.get("id").is_none(), "no id asked, none answered: {json}");

    // The repository: the gRPC index; unload and load by REST, seen by gRPC.
    let index = v2.repository_index(RepositoryIndexRequest::default()).await.expect("index").into_inner();
    let expected: Vec<Value> = index
        .models
        .iter()
        .map(|m| {
            let mut entry = json!({ "name": m.name, "state": m.state, "reason": m.reason });
            if !m.version.is_empty() {
                entry["version"] = json!(m.version);
            }
            entry
        })
        .collect();
    assert_eq!(api.post("/v2/repository/index", "").await.json(), json!(expected));
    let ready = api.post_json("/v2/repository/index", &json!({ "ready": true })).await.json();
    assert_eq!(ready, json!([{ "name": "v1", "version": run_id, "state": "READY", "reason": "" }]));

    let unloaded = api
        .post_json("/v2/repository/models/v1/unload", &json!({ "parameters": { "unload_dependents": false } }))
        .await;
    assert_eq!((unloaded.status, unloaded.body.len()), (200, 0));
    assert_eq!(api.get("/v2/health/ready").await.status, 400);
    assert_eq!(api.get("/v2/models/v1/ready").await.status, 400);
    let request = ModelMetadataRequest { name: "v1".into(), version: String::new() };
    assert_eq!(v2.model_metadata(request).await.expect_err("unloaded").code(), tonic::Code::NotFound);
    let gone = api.post_json("/v2/models/v1/infer", &rest_json(&typed)).await.error(404);
    assert_eq!(gone, "model 'v1' is not loaded");
    let loaded = api.post("/v2/repository/models/v1/load", "{}").await;
    assert_eq!((loaded.status, loaded.body.len()), (200, 0));
    wait_until_serving(&serve).await;
    assert_eq!(api.post_json("/v2/models/v1/infer", &rest_json(&typed)).await.rates().1.len(), 3);

    // HEAD answers as GET without the body.
    let head = api.send(api.client.head(format!("{}/v2/health/ready", api.base))).await;
    assert_eq!(head.status, 200);

    // Every request was counted by route and status, and timed.
    let (_, _, text) = scrape(ports.metrics).await;
    let metrics = parse_metrics(&text);
    let count = |route: &str, method: &str, status: &str| {
        metrics.value("crs_serve_http_requests_total", &[("route", route), ("method", method), ("status", status)])
    };
    assert_eq!(count("/v2/models/{model}/infer", "POST", "200"), 13.0, "{text}");
    assert_eq!(count("/v2/models/{model}/versions/{version}/infer", "POST", "200"), 3.0, "{text}");
    assert_eq!(count("/v2/models/{model}/infer", "POST", "404"), 1.0, "{text}");
    assert_eq!(count("/v2/repository/models/{model}/unload", "POST", "200"), 1.0, "{text}");
    let timed = metrics.value(
        "crs_serve_http_request_duration_seconds_count",
        &[("route", "/v2/models/{model}/infer"), ("method", "POST")],
    );
    assert_eq!(timed, 14.0, "{text}");
    serve.stop().await.expect("clean stop");
}

/// The gRPC status of a bad `ModelInfer` request.
async fn grpc_error(v2: &mut V2, request: ModelInferRequest) -> tonic::Status {
    v2.model_infer(request).await.expect_err("a bad request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_gets_the_kind_status_and_the_grpc_message() {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let mut config = stack.serve_config();
    config.max_predict_rows = 50;
    config.common.http_body_timeout_secs = 1;
    let (mut serve, ports) = stack.start_serve_with_http(config).await;
    wait_until_serving(&serve).await;
    let mut v2 = grpc(serve.channel());
    let api = Api::new(ports.http);
    let attributes =
        serve.client.get_model(GetModelRequest::default()).await.expect("model").into_inner().attribute_names;
    let predict = rows(&stack, 3).await;
    let typed = infer_request(&predict, &attributes, false);
    let raw = infer_request(&predict, &attributes, true);

    // Each bad request, typed over gRPC and as JSON over REST, raw over gRPC and binary over REST.
    let mut typed_cases: Vec<(&str, ModelInferRequest)> = Vec::new();
    let mut raw_cases: Vec<(&str, ModelInferRequest)> = Vec::new();
    let mut case = |name: &'static str, raw_case: bool, change: &dyn Fn(&mut ModelInferRequest)| {
        let mut request = if raw_case { raw.clone() } else { typed.clone() };
        change(&mut request);
        if raw_case { raw_cases.push((name, request)) } else { typed_cases.push((name, request)) }
    };
    case("unknown model", false, &|r| r.model_name = "v9".into());
    case("model not loaded", true, &|r| r.model_name = "v0".into());
    case("another run", false, &|r| r.model_version = "20200101T000000000Z-000000".into());
    case("datatype", false, &|r| r.inputs[0].datatype = "INT32".into());
    case("datatype, raw", true, &|r| r.inputs[2].datatype = "FP32".into());
    case("rank", false, &|r| r.inputs[0].shape = vec![3, 1]);
    case("width", false, &|r| r.inputs[2].shape[1] += 1);
    case("rows disagree", false, &|r| r.inputs[1].shape = vec![2]);
    case("too few elements", false, &|r| {
        r.inputs[0].contents.as_mut().expect("contents").int64_contents.pop();
    });
    case("raw length", true, &|r| {
        r.raw_input_contents[0].pop();
    });
    case("raw BYTES cut", true, &|r| {
        r.raw_input_contents[1].pop();
    });
    case("raw BYTES left over", true, &|r| r.raw_input_contents[1].push(0));
    case("missing input", false, &|r| {
        r.inputs.remove(1);
    });
    case("unknown input", false, &|r| r.inputs[1].name = "devices".into());
    case("input twice", false, &|r| r.inputs[1] = r.inputs[0].clone());
    case("unknown output", false, &|r| {
        r.outputs = vec![InferRequestedOutputTensor { name: "rate".into(), ..Default::default() }]
    });
    case("device", false, &|r| {
        r.inputs[1].contents.as_mut().expect("contents").bytes_contents[2] = b"Phone".to_vec();
    });
    case("device not UTF-8, raw", true, &|r| {
        r.raw_input_contents[1] = length_prefixed(&[b"Computer\xff", b"Computer", b"Tablet"]);
    });
    let width = attributes.len();
    case("attribute 2", false, &|r| r.inputs[2].contents.as_mut().expect("contents").int_contents[width + 1] = 2);
    case("attribute -1, raw", true, &|r| r.raw_input_contents[2][0] = (-1i8) as u8);
    let big = infer_request(&rows(&stack, 51).await, &attributes, false);
    typed_cases.push(("row limit", big.clone()));
    raw_cases.push(("row limit, raw", infer_request(&rows(&stack, 51).await, &attributes, true)));

    for (name, request) in typed_cases {
        let status = grpc_error(&mut v2, request.clone()).await;
        let path = match request.model_version.as_str() {
            "" => format!("/v2/models/{}/infer", request.model_name),
            version => format!("/v2/models/{}/versions/{version}/infer", request.model_name),
        };
        let expected_status = if status.code() == tonic::Code::NotFound { 404 } else { 400 };
        let message = api.post_json(&path, &rest_json(&request)).await.error(expected_status);
        assert_eq!(message, status.message(), "{name}: REST JSON and gRPC typed say the same");
    }
    for (name, request) in raw_cases {
        let status = grpc_error(&mut v2, request.clone()).await;
        let path = format!("/v2/models/{}/infer", request.model_name);
        let expected_status = if status.code() == tonic::Code::NotFound { 404 } else { 400 };
        let message = api.post_binary(&path, rest_binary(&request)).await.error(expected_status);
        assert_eq!(message, status.message(), "{name}: REST binary and gRPC raw say the same");
    }

    // What only JSON can get wrong: an element's type, the nesting, the body itself.
    let infer = "/v2/models/v1/infer";
    let mut body = rest_json(&typed);
    body["inputs"][0]["data"][1] = json!("7");
    let message = api.post_json(infer, &body).await.error(400);
    assert_eq!(message, "input 'entity_id' row 1: expected an integer (INT64), found \"7\"");
    let mut body = rest_json(&typed);
    body["inputs"][2]["data"][width + 2] = json!(true);
    let message = api.post_json(infer, &body).await.error(400);
    assert_eq!(message, "input 'attributes' row 1, column 2: expected an integer (INT8), found true");
    let mut body = rest_json(&typed);
    body["inputs"][1]["data"][0] = json!(3);
    let message = api.post_json(infer, &body).await.error(400);
    assert_eq!(message, "input 'device' row 0: expected a string (BYTES), found 3");
    // One element a row where a row has every attribute: nested, but not as the shape is.
    let body = nested(rest_json(&typed), 1);
    let message = api.post_json(infer, &body).await.error(400);
    let expected =
        format!("input 'attributes': data is nested as [{}, 1], which is not the shape [3, {width}]", 3 * width);
    assert_eq!(message, expected);
    let mut body = rest_json(&typed);
    body["inputs"][0]["data"] = json!([[1, 2], [3]]);
    assert!(api.post_json(infer, &body).await.error(400).contains("ragged"));
    let mut body = rest_json(&typed);
    body["inputs"][0].as_object_mut().expect("input").remove("data");
    assert!(api.post_json(infer, &body).await.error(400).starts_with("input 'entity_id' has no data"));
    for bad in ["", "not json", "[]", r#"{"inputs": {}}"#, r#"{"inputs": [], "id": 7}"#] {
        let message = api.post(infer, bad).await.error(400);
        assert!(message.starts_with("the request body is not a V2 inference request"), "{bad}: {message}");
    }
    let (body, length) = rest_binary(&raw);
    let answer = api.post_binary(infer, (body.clone(), body.len() + 1)).await.error(400);
    assert!(answer.contains(HEADER_LENGTH), "{answer}");
    let mut longer = body.clone();
    longer.push(0);
    assert!(api.post_binary(infer, (longer, length)).await.error(400).contains("belong to no input"));
    let answer = api
        .send(api.client.post(format!("{}{infer}", api.base)).header(HEADER_LENGTH, "lots").body(body))
        .await
        .error(400);
    assert!(answer.contains("must be a number of bytes"), "{answer}");

    // Routes, methods, repository bodies.
    let missing = api.get("/v2/nowhere").await.error(404);
    assert!(missing.contains("GET /v2/nowhere") && missing.contains("/v2/openapi.json"), "{missing}");
    let wrong = api.get(infer).await;
    assert_eq!(wrong.header("allow"), Some("POST"));
    assert!(wrong.error(405).contains("does not take GET"));
    assert!(api.post("/v2/repository/index", "{\"ready\": 1}").await.error(400).contains("repository index"));
    let message = api.post("/v2/repository/models/v1/load", "{\"parameters\": {\"config\": {}}}").await.error(400);
    assert!(message.contains("parameter 'config'"), "{message}");
    let message = api.post("/v2/repository/models/v9/unload", "").await.error(404);
    assert!(message.contains("unknown model 'v9'"), "{message}");

    // Bodies: over MAX_MESSAGE_BYTES by their length or as they come, too slow, or cut short.
    let max = stack.serve_config().max_message_bytes;
    let head = |framing: String| format!("POST {infer} HTTP/1.1\r\nHost: test\r\n{framing}\r\n\r\n");
    let answer = exchange(ports.http, head(format!("Content-Length: {}", max + 1)), |_| async {}).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(&format!("larger than {max} bytes")) && answer.contains("MAX_MESSAGE_BYTES"), "{answer}");
    let answer = exchange(ports.http, head("Transfer-Encoding: chunked".into()), move |mut to| async move {
        let chunk = [format!("{:x}\r\n", 1 << 16).into_bytes(), vec![b' '; 1 << 16], b"\r\n".to_vec()].concat();
        for _ in 0..=max >> 16 {
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "streamed past the limit: {answer}");
    let answer = exchange(ports.http, head("Content-Length: 10".into()), |mut to| async move {
        let _ = to.write_all(b"{").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("did not arrive within 1s"), "{answer}");
    let answer = exchange(ports.http, head("Content-Length: 100".into()), |mut to| async move {
        let _ = to.write_all(b"{\"inputs\": [").await;
        let _ = to.shutdown().await;
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("could not be read whole"), "{answer}");

    // After all that, the service still answers.
    assert_eq!(api.post_binary(infer, rest_binary(&raw)).await.rates().1.len(), 3);
    serve.stop().await.expect("clean stop");
}

/// Sends `head` on a connection of its own, lets `feed` write to it, and
/// reads the answer until the server closes the connection (or the answer
/// has come and `feed` is still going after a second).
async fn exchange<F, Fut>(addr: std::net::SocketAddr, head: String, feed: F) -> String
where
    F: FnOnce(tokio::net::tcp::OwnedWriteHalf) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut from, mut to) = stream.into_split();
    to.write_all(head.as_bytes()).await.expect("the request head");
    let feeding = tokio::spawn(feed(to));
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let wait = if answer.is_empty() { WITHIN } else { Duration::from_secs(1) };
        match tokio::time::timeout(wait, from.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    feeding.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

fn secured(token: &str) -> ServerSecurity {
    ServerSecurity {
        token: TokenSettings { auth_token: Some(Secret::new(token)), auth_token_file: None },
        tls_cert: Some(fixture_dir().join("tls/server.pem")),
        tls_key: Some(fixture_dir().join("tls/server.key")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_token_guards_loads_and_unloads_and_repository_errors_get_their_status() {
    const TOKEN: &str = "rest-token-5e4d3c2b1a";
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let v0_run = stack.train("v0").await;
    let mut config = stack.serve_config();
    config.common.security = secured(TOKEN);
    config.max_loaded_models = 1;
    let (mut serve, ports) = stack.start_serve_with_http(config).await;
    let ca = std::fs::read(fixture_dir().join("tls/ca.pem")).expect("test CA");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(WITHIN)
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA")])
        .build()
        .expect("TLS client");
    let api = Api { base: format!("https://localhost:{}", ports.http.port()), client };
    crs_testkit::wait_until(WITHIN, "REST ready over TLS", || async {
        api.client.get(format!("{}/v2/health/ready", api.base)).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let plain = reqwest::Client::builder().no_proxy().timeout(WITHIN).build().expect("client");
    assert!(plain.get(format!("http://{}/v2/health/live", ports.http)).send().await.is_err(), "plaintext answered");

    // Reads and inference need no token; loads and unloads do, with a challenge.
    assert_eq!(api.get("/v2/models/v1").await.status, 200);
    assert_eq!(api.post("/v2/repository/index", "").await.status, 200);
    for path in ["/v2/repository/models/v1/unload", "/v2/repository/models/v0/load"] {
        for token in [None, Some("rest-token-guess")] {
            let mut request = api.client.post(format!("{}{path}", api.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let refused = api.send(request).await;
            assert_eq!(refused.header("www-authenticate"), Some("Bearer"), "{path}");
            assert_eq!(refused.error(401), "missing or wrong bearer token", "{path}");
        }
    }
    assert_eq!(api.get("/v2/models/v1/ready").await.status, 200, "the refused unload did nothing");
    let authorized = |path: &str| api.client.post(format!("{}{path}", api.base)).bearer_auth(TOKEN);

    // 409: beyond MAX_LOADED_MODELS; 404: no production run; 503: the run cannot be read now.
    let message = api.send(authorized("/v2/repository/models/v0/load")).await.error(409);
    assert!(message.contains("MAX_LOADED_MODELS=1"), "{message}");
    let unloaded = api.send(authorized("/v2/repository/models/v1/unload")).await;
    assert_eq!(unloaded.status, 200, "{unloaded:?}");
    // With room to load, a version without a production run is not found.
    let message = api.send(authorized("/v2/repository/models/v2/load")).await.error(404);
    assert!(message.contains("model v2 has no production run yet"), "{message}");
    let artifact = stack.bucket_dir().join(format!("model/v0/{v0_run}/model.json"));
    let kept = artifact.with_extension("kept");
    std::fs::rename(&artifact, &kept).expect("move the artifact away");
    std::os::unix::fs::symlink(&artifact, &artifact).expect("a symlink to itself, which cannot be opened");
    let message = api.send(authorized("/v2/repository/models/v0/load")).await.error(503);
    assert!(message.contains("model.json"), "{message}");
    std::fs::remove_file(&artifact).expect("remove the loop");
    std::fs::rename(&kept, &artifact).expect("the artifact back");
    let loaded = api.send(authorized("/v2/repository/models/v0/load")).await;
    assert_eq!(loaded.status, 200, "{loaded:?}");
    assert_eq!(api.get("/v2/models/v0/ready").await.status, 200);
    serve.trigger_shutdown();
    serve.stopped(WITHIN).await.expect("clean stop");
}

/// The committed copy of the OpenAPI document.
fn committed_openapi() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi-serve.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_covers_every_route_and_is_the_committed_one() {
    let stack = Stack::new().await;
    let (serve, HttpPorts { http, .. }) = stack.start_serve_with_http(stack.serve_config()).await;
    let served = Api::new(http).get("/v2/openapi.json").await;
    assert_eq!(served.status, 200);
    let document = served.json();
    assert_eq!(document, serve_service::openapi_document());

    let text = format!("{}\n", serde_json::to_string_pretty(&document).expect("JSON"));
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_openapi(), &text).expect("write docs/openapi-serve.json");
    }
    let committed = std::fs::read_to_string(committed_openapi()).unwrap_or_default();
    assert!(
        committed == text,
        "docs/openapi-serve.json differs from the served document; rerun this test with UPDATE_OPENAPI=1 to rewrite it"
    );

    let mut listed = Vec::new();
    for (path, operations) in document["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            listed.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routes: Vec<(String, String)> =
        crs_proto::SERVE_REST_ROUTES.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    listed.sort();
    routes.sort();
    assert_eq!(listed, routes, "the document lists every route, and nothing else");
    serve.stop().await.expect("clean stop");
}
