//! The REST side's bodies: an inference request as JSON tensors or with
//! Triton's binary tensor data extension (a JSON header of
//! `Inference-Header-Content-Length` bytes, then each binary input's bytes in
//! the order of `inputs`), turned into the transport-neutral
//! [`InferRequest`], and the JSON (or JSON and binary) answers.

use crs_proto::inference::model_metadata_response::TensorMetadata;
use crs_proto::inference::repository_index_response::ModelIndex;
use crs_proto::inference::{InferParameter, ModelMetadataResponse, ServerMetadataResponse, infer_parameter};
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::inference::json_data::JsonData;
use crate::inference::tensors::{self, Contents, InputTensor};
use crate::inference::{InferRequest, Inferred};
use crate::status::ServeError;

/// The binary tensor data extension's header: the length of the JSON part of a body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";
/// An input's or output's parameter: the size of its binary data.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";
/// An output's parameter: answer it as binary data.
pub const BINARY_DATA: &str = "binary_data";
/// A request's parameter: answer every output as binary data unless the output says otherwise.
pub const BINARY_DATA_OUTPUT: &str = "binary_data_output";

fn invalid(message: String) -> ServeError {
    ServeError::InvalidRequest(message)
}

/// A JSON object read as `T`. serde's derived structs also take an array of
/// their fields in order, which the protocol has no place for: a request sent
/// that way is refused rather than guessed at.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

/// A body that must be one JSON object.
fn from_object<T: DeserializeOwned>(json: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice::<Object<T>>(json).map(|Object(value)| value)
}

/// An array of JSON objects (`inputs`, `outputs`).
fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    let objects = Vec::<Object<T>>::deserialize(deserializer)?;
    Ok(objects.into_iter().map(|Object(value)| value).collect())
}

/// An optional field that, when present, is not `null`: the protocol has no
/// null for them, and the document says so.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

fn present_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    objects(deserializer).map(Some)
}

/// `$parameters`: names to strings, numbers or booleans.
type Parameters = Map<String, Value>;

/// Checks that every parameter's value is a string, a number or a boolean.
fn check_parameters(parameters: Option<&Parameters>, owner: &str) -> Result<(), ServeError> {
    for (name, value) in parameters.into_iter().flatten() {
        if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(invalid(format!("{owner} parameter '{name}': must be a string, a number or a boolean")));
        }
    }
    Ok(())
}

fn bool_parameter(parameters: Option<&Parameters>, name: &str, owner: &str) -> Result<Option<bool>, ServeError> {
    match parameters.and_then(|p| p.get(name)) {
        None => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(other) => Err(invalid(format!("{owner} parameter '{name}': must be true or false, got {other}"))),
    }
}

/// `$inference_request`.
#[derive(Debug, Deserialize)]
pub struct RestInferRequest {
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    parameters: Option<Parameters>,
    #[serde(deserialize_with = "objects")]
    inputs: Vec<RestInput>,
    #[serde(default, deserialize_with = "present_objects")]
    outputs: Option<Vec<RestOutput>>,
}

/// `$request_input`.
#[derive(Debug, Deserialize)]
struct RestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default, deserialize_with = "present")]
    parameters: Option<Parameters>,
    #[serde(default, deserialize_with = "present")]
    data: Option<JsonData>,
}

/// `$request_output`.
#[derive(Debug, Deserialize)]
struct RestOutput {
    name: String,
    #[serde(default, deserialize_with = "present")]
    parameters: Option<Parameters>,
}

/// A parsed inference body: the request and the binary data after its JSON.
#[derive(Debug)]
pub struct InferBody<'b> {
    request: RestInferRequest,
    binary: &'b [u8],
}

impl<'b> InferBody<'b> {
    /// Splits `body` at `header_length` (the `Inference-Header-Content-Length`
    /// header, if sent) and parses its JSON.
    pub fn parse(body: &'b [u8], header_length: Option<usize>) -> Result<Self, ServeError> {
        let (json, binary) = match header_length {
            None => (body, &[][..]),
            Some(length) if length <= body.len() => body.split_at(length),
            Some(length) => {
                return Err(invalid(format!("{HEADER_LENGTH} is {length} but the body has only {} bytes", body.len())));
            }
        };
        let request: RestInferRequest =
            from_object(json).map_err(|e| invalid(format!("the request body is not a V2 inference request: {e}")))?;
        Ok(InferBody { request, binary })
    }

    /// The transport-neutral request: each input's JSON data or its slice of
    /// the binary data.
    pub fn infer_request<'a>(&'a self, model: &'a str, version: &'a str) -> Result<InferRequest<'a>, ServeError> {
        let request = &self.request;
        check_parameters(request.parameters.as_ref(), "request")?;
        let mut binary = self.binary;
        let mut inputs = Vec::with_capacity(request.inputs.len());
        for input in &request.inputs {
            let owner = format!("input '{}'", input.name);
            check_parameters(input.parameters.as_ref(), &owner)?;
            let size = input.parameters.as_ref().and_then(|p| p.get(BINARY_DATA_SIZE));
            let contents = match (&input.data, size) {
                (Some(_), Some(_)) => {
                    return Err(invalid(format!("{owner} has both data and the {BINARY_DATA_SIZE} parameter")));
                }
                (Some(data), None) => Contents::Json(data),
                (None, Some(size)) => {
                    let size = size.as_u64().and_then(|s| usize::try_from(s).ok()).ok_or_else(|| {
                        invalid(format!("{owner} parameter '{BINARY_DATA_SIZE}': must be a whole number of bytes"))
                    })?;
                    if size > binary.len() {
                        return Err(invalid(format!(
                            "{owner}: {BINARY_DATA_SIZE} is {size} but only {} bytes of binary data are left after the JSON ({HEADER_LENGTH} gives its length)",
                            binary.len()
                        )));
                    }
                    let (data, rest) = binary.split_at(size);
                    binary = rest;
                    Contents::Raw(data)
                }
                (None, None) => {
                    return Err(invalid(format!(
                        "{owner} has no data: give data, or {BINARY_DATA_SIZE} and the bytes after the JSON"
                    )));
                }
            };
            inputs.push(InputTensor { name: &input.name, datatype: &input.datatype, shape: &input.shape, contents });
        }
        if !binary.is_empty() {
            return Err(invalid(format!(
                "{} bytes of binary data after the JSON belong to no input (each binary input gives its {BINARY_DATA_SIZE})",
                binary.len()
            )));
        }
        let outputs = request.outputs.iter().flatten().map(|output| output.name.as_str()).collect();
        Ok(InferRequest { model, version, inputs, outputs })
    }

    /// Whether the answer's `cr` goes as binary data: the output's own
    /// `binary_data`, else the request's `binary_data_output`, else JSON.
    pub fn binary_answer(&self) -> Result<bool, ServeError> {
        let request = &self.request;
        let all = bool_parameter(request.parameters.as_ref(), BINARY_DATA_OUTPUT, "request")?.unwrap_or(false);
        let mut binary = all;
        for output in request.outputs.iter().flatten() {
            let owner = format!("output '{}'", output.name);
            check_parameters(output.parameters.as_ref(), &owner)?;
            if let Some(own) = bool_parameter(output.parameters.as_ref(), BINARY_DATA, &owner)? {
                binary = own;
            }
        }
        Ok(binary)
    }

    pub fn id(&self) -> Option<&str> {
        self.request.id.as_deref()
    }
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: String,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: [OutputTensor<'a>; 1],
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'static str,
    datatype: &'static str,
    shape: [usize; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a [f64]>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// An inference answer: the JSON, and the binary data after it when asked for.
#[derive(Debug)]
pub struct InferAnswer {
    pub json: Vec<u8>,
    pub binary: Option<Vec<u8>>,
}

/// `$inference_response` for `inferred`: `cr` as JSON data, or as binary data after the JSON.
pub fn infer_answer(inferred: &Inferred, id: Option<&str>, binary: bool) -> InferAnswer {
    let cr = &inferred.cr;
    let raw = binary.then(|| tensors::raw_rates(cr));
    let output = OutputTensor {
        name: tensors::CR,
        datatype: "FP64",
        shape: [cr.len()],
        parameters: raw.as_ref().map(|raw| BinarySize { binary_data_size: raw.len() }),
        data: (!binary).then_some(cr.as_slice()),
    };
    let response = InferResponse {
        model_name: inferred.serving.model_ver().to_string(),
        model_version: inferred.serving.run_id().to_string(),
        id,
        outputs: [output],
    };
    let json = serde_json::to_vec(&response).expect("a response of strings and finite or null numbers serializes");
    InferAnswer { json, binary: raw }
}

/// `$repository_index_request`: an empty body, or `{"ready": bool}`.
#[derive(Debug, Default, Deserialize)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

/// Whether an index request asks for the ready models alone.
pub fn index_ready_only(body: &[u8]) -> Result<bool, ServeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let request: IndexRequest =
        from_object(body).map_err(|e| invalid(format!("the request body is not a repository index request: {e}")))?;
    Ok(request.ready)
}

/// `$repository_load_request` / `$repository_unload_request`: an empty body,
/// or an object whose `parameters` (none of which changes what is done) are
/// strings, numbers or booleans.
pub fn check_repository_request(body: &[u8]) -> Result<(), ServeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct RepositoryRequest {
        #[serde(default, deserialize_with = "present")]
        parameters: Option<Parameters>,
    }
    let request: RepositoryRequest = from_object(body)
        .map_err(|e| invalid(format!("the request body is not a repository load or unload request: {e}")))?;
    check_parameters(request.parameters.as_ref(), "request")
}

pub fn server_metadata_json(metadata: &ServerMetadataResponse) -> Value {
    json!({ "name": metadata.name, "version": metadata.version, "extensions": metadata.extensions })
}

pub fn model_metadata_json(metadata: &ModelMetadataResponse) -> Value {
    json!({
        "name": metadata.name,
        "versions": metadata.versions,
        "platform": metadata.platform,
        "inputs": metadata.inputs.iter().map(tensor_json).collect::<Vec<_>>(),
        "outputs": metadata.outputs.iter().map(tensor_json).collect::<Vec<_>>(),
    })
}

fn tensor_json(tensor: &TensorMetadata) -> Value {
    let mut json = json!({ "name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape });
    if !tensor.parameters.is_empty() {
        let parameters: Map<String, Value> =
            tensor.parameters.iter().map(|(name, value)| (name.clone(), parameter_json(value))).collect();
        json["parameters"] = Value::Object(parameters);
    }
    json
}

fn parameter_json(parameter: &InferParameter) -> Value {
    use infer_parameter::ParameterChoice;
    match &parameter.parameter_choice {
        Some(ParameterChoice::BoolParam(value)) => json!(value),
        Some(ParameterChoice::Int64Param(value)) => json!(value),
        Some(ParameterChoice::StringParam(value)) => json!(value),
        Some(ParameterChoice::DoubleParam(value)) => json!(value),
        Some(ParameterChoice::Uint64Param(value)) => json!(value),
        None => Value::Null,
    }
}

pub fn repository_index_json(models: &[ModelIndex]) -> Value {
    let entries: Vec<Value> = models
        .iter()
        .map(|model| {
            let mut entry = json!({ "name": model.name, "state": model.state, "reason": model.reason });
            if !model.version.is_empty() {
                entry["version"] = json!(model.version);
            }
            entry
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(body: &InferBody<'_>) -> Result<Vec<(String, String)>, ServeError> {
        let request = body.infer_request("v1", "")?;
        Ok(request
            .inputs
            .iter()
            .map(|input| {
                let contents = match input.contents {
                    Contents::Raw(bytes) => format!("raw {bytes:?}"),
                    Contents::Json(data) => format!("json {}", data.elements.len()),
                    Contents::Typed(_) => "typed".to_owned(),
                };
                (input.name.to_owned(), contents)
            })
            .collect())
    }

    #[test]
    fn binary_inputs_take_their_bytes_in_order_and_json_ones_their_data() {
        let json = br#"{"inputs": [
            {"name": "a", "shape": [2], "datatype": "INT8", "parameters": {"binary_data_size": 2}},
            {"name": "b", "shape": [1], "datatype": "INT8", "data": [1]},
            {"name": "c", "shape": [3], "datatype": "INT8", "parameters": {"binary_data_size": 3}}
        ]}"#;
        let body = [&json[..], &[1, 2, 3, 4, 5]].concat();
        let parsed = InferBody::parse(&body, Some(json.len())).expect("parsed");
        let expected = [("a", "raw [1, 2]"), ("b", "json 1"), ("c", "raw [3, 4, 5]")];
        assert_eq!(inputs(&parsed).expect("inputs"), expected.map(|(n, c)| (n.to_owned(), c.to_owned())));

        let short = [&json[..], &[1, 2, 3, 4]].concat();
        let err = inputs(&InferBody::parse(&short, Some(json.len())).unwrap()).unwrap_err().to_string();
        assert!(err.contains("input 'c'") && err.contains("only 2 bytes"), "{err}");
        let long = [&json[..], &[1, 2, 3, 4, 5, 6]].concat();
        let err = inputs(&InferBody::parse(&long, Some(json.len())).unwrap()).unwrap_err().to_string();
        assert!(err.contains("1 bytes of binary data after the JSON belong to no input"), "{err}");
        let err = InferBody::parse(&body, Some(body.len() + 1)).unwrap_err().to_string();
        assert!(err.contains(HEADER_LENGTH), "{err}");
    }

    #[test]
    fn an_input_needs_data_or_a_binary_size_but_not_both() {
        for (input, needle) in [
            (r#"{"name": "a", "shape": [1], "datatype": "INT8"}"#, "input 'a' has no data"),
            (
                r#"{"name": "a", "shape": [1], "datatype": "INT8", "data": [1], "parameters": {"binary_data_size": 1}}"#,
                "both data and",
            ),
            (
                r#"{"name": "a", "shape": [1], "datatype": "INT8", "parameters": {"binary_data_size": -1}}"#,
                "whole number of bytes",
            ),
            (
                r#"{"name": "a", "shape": [1], "datatype": "INT8", "data": [1], "parameters": {"x": [1]}}"#,
                "input 'a' parameter 'x'",
            ),
        ] {
            let body = format!(r#"{{"inputs": [{input}]}}"#);
            let err = inputs(&InferBody::parse(body.as_bytes(), None).unwrap()).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn bodies_that_are_not_requests_say_so() {
        // Arrays where objects belong (serde would take a struct's fields in order) and nulls
        // where the protocol has none are refused too.
        let arrays_and_nulls = [
            r#"["x", {}, [], []]"#,
            r#"{"inputs": [["a", [1], "INT64", {}, [1]]]}"#,
            r#"{"inputs": [], "outputs": [["cr"]]}"#,
            r#"{"inputs": [], "parameters": null}"#,
            r#"{"inputs": [], "outputs": null}"#,
            r#"{"inputs": [], "id": null}"#,
            r#"{"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": null}]}"#,
        ];
        let plain = ["", "[]", "{}", r#"{"inputs": [], "id": 7}"#, r#"{"inputs": [{"name": "a"}]}"#, "{\"inputs\": ["];
        for body in plain.into_iter().chain(arrays_and_nulls) {
            let err = InferBody::parse(body.as_bytes(), None).unwrap_err().to_string();
            assert!(err.starts_with("the request body is not a V2 inference request"), "{body}: {err}");
        }
    }

    #[test]
    fn the_output_says_binary_over_the_request_and_json_is_the_default() {
        let answer = |parameters: &str, outputs: &str| {
            let body = format!(r#"{{"inputs": [], "parameters": {parameters}, "outputs": {outputs}}}"#);
            InferBody::parse(body.as_bytes(), None).unwrap().binary_answer()
        };
        assert!(!answer("{}", "[]").unwrap());
        assert!(answer(r#"{"binary_data_output": true}"#, "[]").unwrap());
        assert!(answer(r#"{"binary_data_output": true}"#, r#"[{"name": "cr"}]"#).unwrap());
        let own = r#"[{"name": "cr", "parameters": {"binary_data": false}}]"#;
        assert!(!answer(r#"{"binary_data_output": true}"#, own).unwrap());
        let own = r#"[{"name": "cr", "parameters": {"binary_data": true}}]"#;
        assert!(answer("{}", own).unwrap());
        let err = answer(r#"{"binary_data_output": "yes"}"#, "[]").unwrap_err().to_string();
        assert!(err.contains("must be true or false"), "{err}");
    }

    #[test]
    fn repository_bodies_may_be_empty_or_objects_of_scalar_parameters() {
        assert!(!index_ready_only(b"").unwrap());
        assert!(index_ready_only(b" {\"ready\": true} ").unwrap());
        assert!(index_ready_only(b"{\"ready\": 1}").is_err());
        assert!(index_ready_only(b"[]").is_err());
        assert!(index_ready_only(b"[true]").is_err());
        assert!(check_repository_request(b"[]").is_err());
        assert!(check_repository_request(br#"{"parameters": null}"#).is_err());
        assert!(check_repository_request(b"").is_ok());
        assert!(check_repository_request(br#"{"parameters": {"unload_dependents": false}}"#).is_ok());
        assert!(check_repository_request(br#"{"parameters": {"config": {"a": 1}}}"#).is_err());
        assert!(check_repository_request(b"[1]").is_err());
    }
}
