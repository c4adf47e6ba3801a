//! The OpenAPI 3 document of the REST API, served at `GET /v2/openapi.json`
//! and committed as `docs/openapi-serve.json` (a test keeps the two equal).
//! Its paths are `crs_proto::SERVE_REST_ROUTES`, its statuses the ones each
//! route answers with (`crs_server::status` for the errors), and the two
//! routes that need the bearer token say so.

use crs_domain::models::ModelVer;
use crs_proto::{Access, RestRoute, SERVE_REST_ROUTES};
use serde_json::{Map, Value, json};

/// The binary tensor data extension's header, as Triton's documentation spells it.
const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

/// The V2 datatypes a tensor may declare.
const DATATYPES: [&str; 14] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES",
    "BF16",
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in SERVE_REST_ROUTES {
        let operations = paths.entry(route.path).or_insert_with(|| json!({}));
        operations[route.method.to_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "serve-service: the Open Inference Protocol (KServe V2) over HTTP/REST",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The KServe V2 Predict Protocol's REST API with Triton's binary tensor data and model repository extensions. A model's name is its model version (v0, v1, v2); its version is the id of the run it serves. Errors are {\"error\": \"...\"} with the status of their kind; health is told by the status alone.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        },
    })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema_name: &str) -> Value {
    json!({ "application/json": { "schema": schema(schema_name) } })
}

fn error(description: &str) -> Value {
    json!({ "description": description, "content": json_content("Error") })
}

fn path_parameter(name: &str) -> Value {
    let schema = if name == "model" {
        json!({ "type": "string", "enum": ModelVer::all().map(|v| v.name()).collect::<Vec<_>>() })
    } else {
        json!({ "type": "string" })
    };
    let description = match name {
        "model" => "The model: a model version",
        _ => "The model's version: the id of the run it serves",
    };
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": schema })
}

/// One route's operation.
fn operation(route: &RestRoute) -> Value {
    let rpc = route.rpc.and_then(|rpc| rpc.rsplit('/').next()).unwrap_or("OpenApi");
    let versioned = route.path.contains("{version}");
    let (summary, mut responses): (&str, Value) = match rpc {
        "ServerLive" => ("Whether the server answers (200)", json!({ "200": { "description": "Live" } })),
        "ServerReady" => (
            "Whether the default model version serves a run",
            json!({ "200": { "description": "Ready" }, "400": { "description": "Not ready" } }),
        ),
        "ModelReady" => (
            "Whether the model serves a run (that run, if the version is given)",
            json!({
                "200": { "description": "Ready" },
                "400": { "description": "Not ready" },
                "404": error("Unknown model"),
            }),
        ),
        "ServerMetadata" => (
            "The server's name, version and protocol extensions",
            json!({ "200": { "description": "Server metadata", "content": json_content("ServerMetadata") } }),
        ),
        "ModelMetadata" => (
            "The model's served run and its input and output tensors",
            json!({
                "200": { "description": "Model metadata", "content": json_content("ModelMetadata") },
                "404": error("Unknown model, model not loaded, or not serving that version"),
            }),
        ),
        "ModelInfer" => (
            "The conversion rate of each row, as JSON or binary tensor data",
            json!({
                "200": {
                    "description": "The rates: output cr, FP64 [N]",
                    "headers": { "Inference-Header-Content-Length": {
                        "description": "With binary output: the length of the JSON before the binary data",
                        "schema": { "type": "integer", "minimum": 0 },
                    } },
                    "content": {
                        "application/json": { "schema": schema("InferResponse") },
                        "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
                    },
                },
                "400": error("Invalid request: the message names the tensor and, for values, the row"),
                "404": error("Unknown model, model not loaded, or not serving that version"),
                "413": error("Body larger than MAX_MESSAGE_BYTES"),
            }),
        ),
        "RepositoryIndex" => (
            "Every model version: the loaded ones READY with their run, the others UNAVAILABLE",
            json!({
                "200": { "description": "The index", "content": json_content("RepositoryIndex") },
                "400": error("Invalid request body"),
                "413": error("Body larger than MAX_MESSAGE_BYTES"),
            }),
        ),
        "RepositoryModelLoad" => (
            "Loads the model version at its production run and follows its production alias",
            json!({
                "200": { "description": "Loaded" },
                "400": error("Invalid request body"),
                "404": error("Unknown model, or no production run"),
                "409": error("MAX_LOADED_MODELS or MAX_MODEL_MEMORY_MB reached, or the run cannot be used"),
                "413": error("Body larger than MAX_MESSAGE_BYTES"),
                "503": error("The bucket cannot be read now"),
            }),
        ),
        "RepositoryModelUnload" => (
            "Empties the model version's slot until its next load",
            json!({
                "200": { "description": "Unloaded" },
                "400": error("Invalid request body"),
                "404": error("Unknown model, or not loaded"),
                "413": error("Body larger than MAX_MESSAGE_BYTES"),
            }),
        ),
        _ => (
            "This document",
            json!({ "200": { "description": "The OpenAPI document", "content": { "application/json": { "schema": { "type": "object" } } } } }),
        ),
    };
    let name = |base: &str| if versioned { format!("{base}Version") } else { base.to_owned() };
    let mut operation = json!({ "summary": summary, "operationId": name(&lower_first(rpc)) });
    let parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(path_parameter)
        .collect();
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    match rpc {
        "ModelInfer" => {
            let header = json!({
                "name": HEADER_LENGTH,
                "in": "header",
                "required": false,
                "description": "Binary tensor data extension: the length of the JSON at the start of the body; the inputs with a binary_data_size parameter follow it, in order",
                "schema": { "type": "integer", "minimum": 0 },
            });
            operation["parameters"].as_array_mut().expect("a model parameter").push(header);
            operation["requestBody"] = json!({
                "required": true,
                "content": {
                    "application/json": { "schema": schema("InferRequest") },
                    "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
                },
            });
        }
        "RepositoryIndex" => {
            operation["requestBody"] = json!({ "required": false, "content": json_content("RepositoryIndexRequest") });
        }
        "RepositoryModelLoad" | "RepositoryModelUnload" => {
            operation["requestBody"] = json!({ "required": false, "content": json_content("RepositoryModelRequest") });
        }
        _ => {}
    }
    if route.access() == Access::Token {
        operation["security"] = json!([{ "bearer": [] }]);
        responses["401"] = json!({
            "description": "Missing or wrong bearer token (when the server has one)",
            "headers": { "WWW-Authenticate": { "schema": { "type": "string" } } },
            "content": json_content("Error"),
        });
    }
    operation["responses"] = responses;
    operation
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

fn schemas() -> Value {
    let parameters = json!({
        "type": "object",
        "description": "Names to strings, numbers or booleans",
        "additionalProperties": { "anyOf": [{ "type": "string" }, { "type": "number" }, { "type": "boolean" }] },
    });
    let shape = json!({ "type": "array", "items": { "type": "integer", "minimum": 0 } });
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": { "error": { "type": "string" } },
        },
        "Parameters": parameters,
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": { "type": "string" },
                "version": { "type": "string" },
                "extensions": { "type": "array", "items": { "type": "string" } },
            },
        },
        "TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": { "type": "string" },
                "datatype": { "type": "string", "enum": DATATYPES },
                "shape": { "type": "array", "items": { "type": "integer", "minimum": -1 } },
                "parameters": schema("Parameters"),
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": { "type": "string" },
                "versions": { "type": "array", "items": { "type": "string" } },
                "platform": { "type": "string" },
                "inputs": { "type": "array", "items": schema("TensorMetadata") },
                "outputs": { "type": "array", "items": schema("TensorMetadata") },
            },
        },
        "TensorData": {
            "type": "array",
            "description": "The elements in row-major order, flat or nested as the shape",
            "items": {},
        },
        "RequestInput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "description": "data, or (binary tensor data extension) a binary_data_size parameter",
            "properties": {
                "name": { "type": "string" },
                "shape": shape,
                "datatype": { "type": "string", "enum": DATATYPES },
                "parameters": schema("Parameters"),
                "data": schema("TensorData"),
            },
        },
        "RequestOutput": {
            "type": "object",
            "required": ["name"],
            "properties": { "name": { "type": "string" }, "parameters": schema("Parameters") },
        },
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": { "type": "string" },
                "parameters": schema("Parameters"),
                "inputs": { "type": "array", "items": schema("RequestInput") },
                "outputs": { "type": "array", "items": schema("RequestOutput") },
            },
        },
        "ResponseOutput": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": { "type": "string" },
                "shape": shape,
                "datatype": { "type": "string", "enum": DATATYPES },
                "parameters": schema("Parameters"),
                "data": schema("TensorData"),
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": { "type": "string" },
                "model_version": { "type": "string" },
                "id": { "type": "string" },
                "parameters": schema("Parameters"),
                "outputs": { "type": "array", "items": schema("ResponseOutput") },
            },
        },
        "RepositoryIndexRequest": {
            "type": "object",
            "properties": { "ready": { "type": "boolean", "description": "Only the models ready for inferencing" } },
        },
        "RepositoryIndex": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "state", "reason"],
                "properties": {
                    "name": { "type": "string" },
                    "version": { "type": "string" },
                    "state": { "type": "string", "enum": [crate::inference::READY, crate::inference::UNAVAILABLE] },
                    "reason": { "type": "string" },
                },
            },
        },
        "RepositoryModelRequest": {
            "type": "object",
            "description": "Parameters (Triton's config, unload_dependents, ...) are taken and change nothing",
            "properties": { "parameters": schema("Parameters") },
        },
    })
}
