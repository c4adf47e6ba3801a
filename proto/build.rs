//! Compiles the .proto files with protox (no system protoc needed), generates the
//! tonic code into OUT_DIR, and writes the descriptor set that server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &["crs/train/v1/train.proto", "crs/serve/v1/serve.proto", "inference/grpc_service.proto"];

/// Fields serialized by a helper in `src/json.rs` rather than as stored: enum
/// numbers by their names, timestamps as RFC 3339 text.
const JSON_FIELDS: &[(&str, &str)] = &[
    (".crs.train.v1.TrainingJob.state", "crate::json::job_state"),
    (".crs.train.v1.TrainingJob.stage", "crate::json::stage"),
    (".crs.train.v1.TrainingJob.created_at", "crate::json::time"),
    (".crs.train.v1.TrainingJob.started_at", "crate::json::time"),
    (".crs.train.v1.TrainingJob.finished_at", "crate::json::time"),
    (".crs.train.v1.ModelRun.created_at", "crate::json::time"),
    (".crs.train.v1.ModelRun.trained_at", "crate::json::time"),
    (".crs.train.v1.ModelRun.stage_at", "crate::json::time"),
    (".crs.train.v1.LedgerEntry.at", "crate::json::time"),
    (".crs.train.v1.Cycle.state", "crate::json::cycle_state"),
    (".crs.train.v1.Cycle.started_at", "crate::json::time"),
    (".crs.train.v1.Cycle.finished_at", "crate::json::time"),
    (".crs.serve.v1.ModelInfo.loaded_at", "crate::json::time"),
    (".crs.serve.v1.LoadedModel.loaded_at", "crate::json::time"),
    (".crs.serve.v1.ModelInfo.trained_at", "crate::json::time"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("crs_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    // Every message serializes to JSON with its proto field names, for `crctl --json`.
    let mut build = tonic_prost_build::configure().message_attribute(".crs", "#[derive(serde::Serialize)]");
    for (field, function) in JSON_FIELDS {
        build = build.field_attribute(field, format!("#[serde(serialize_with = \"{function}\")]"));
    }
    // Only a batch over a prefix has these: a single-file batch's JSON stays as it was.
    build = build
        .field_attribute(
            ".crs.serve.v1.PredictBatchResponse.files",
            "#[serde(skip_serializing_if = \"Vec::is_empty\")]",
        )
        .field_attribute(
            ".crs.serve.v1.PredictBatchResponse.summary_key",
            "#[serde(skip_serializing_if = \"String::is_empty\")]",
        )
        .field_attribute(
            ".crs.serve.v1.PredictBatchResponse.inputs",
            "#[serde(skip_serializing_if = \"crate::json::is_zero\")]",
        );
    // Oneofs are enums of their own; the import stream's is never printed, but
    // its message derives Serialize with the rest.
    build = build.enum_attribute(".crs.train.v1.ImportModelRequest.part", "#[derive(serde::Serialize)]");
    // Only import jobs have one: other jobs' JSON stays as it was.
    build = build
        .field_attribute(".crs.train.v1.TrainingJob.imported", "#[serde(skip_serializing_if = \"Option::is_none\")]");
    // Listed under the version that names it.
    build = build.field_attribute(".crs.train.v1.ModelRun.model_ver", "#[serde(skip_serializing)]");
    build.compile_fds(descriptors)?;
    Ok(())
}
