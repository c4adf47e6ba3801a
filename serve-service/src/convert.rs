//! Wire types to domain types and back.

use std::collections::HashSet;
use std::sync::Arc;

use crs_domain::data::{KeywordRows, RowProblem};
use crs_domain::models::ModelVer;
use crs_platform::storage::layout::RunId;
use crs_proto::serve::{FeatureImportance, LoadedModel, ModelInfo, PredictRequest};
use crs_proto::timestamp;

use crate::model::Serving;
use crate::status::ServeError;

/// Checks a Predict request against the data contract and the row limit.
pub fn keyword_rows(request: &PredictRequest, max_rows: usize) -> Result<KeywordRows, ServeError> {
    let invalid = |message: String| ServeError::InvalidRequest(message);
    ServeError::check_rows(request.rows.len(), max_rows)?;
    let mut seen = HashSet::new();
    if let Some(twice) = request.attribute_names.iter().find(|name| !seen.insert(name.as_str())) {
        return Err(invalid(format!("attribute_names: '{twice}' appears twice")));
    }
    let names: Arc<[String]> = request.attribute_names.iter().cloned().collect();
    let mut rows = KeywordRows::with_capacity(names, request.rows.len());
    for (i, row) in request.rows.iter().enumerate() {
        rows.push_checked(row.entity_id, &row.device, &row.attribute_values).map_err(|problem| {
            let field = match &problem {
                RowProblem::UnknownDevice(_) => "device",
                RowProblem::WrongLength { .. } | RowProblem::NotBinary { .. } => "attribute_values",
            };
            invalid(format!("rows[{i}].{field}: {problem}"))
        })?;
    }
    Ok(rows)
}

/// The model version and run a request names; `None` where it leaves them empty.
pub fn model_choice(model_ver: &str, run_id: &str) -> Result<(Option<ModelVer>, Option<RunId>), ServeError> {
    let model_ver = match model_ver.trim() {
        "" => None,
        name => Some(ModelVer::parse(name)?),
    };
    let run_id = match run_id.trim() {
        "" => None,
        id => Some(RunId::parse(id)?),
    };
    Ok((model_ver, run_id))
}

/// One loaded version, for `ModelInfo.loaded`.
pub fn loaded_model(serving: &Serving, shadow_of: Option<ModelVer>) -> LoadedModel {
    LoadedModel {
        model_ver: serving.model_ver().to_string(),
        run_id: serving.run_id().to_string(),
        selection: serving.selection.describe(),
        loaded_at: Some(timestamp(serving.loaded_at)),
        memory_bytes: serving.memory_bytes(),
        shadow_of: shadow_of.map(|v| v.to_string()).unwrap_or_default(),
    }
}

pub fn model_info(serving: &Serving, loaded: Vec<LoadedModel>) -> ModelInfo {
    let metadata = &serving.run.metadata;
    ModelInfo {
        model_ver: metadata.model_ver.to_string(),
        run_id: metadata.run_id.to_string(),
        selection: serving.selection.describe(),
        loaded_at: Some(timestamp(serving.loaded_at)),
        trained_at: Some(timestamp(metadata.finished_at)),
        job_id: metadata.job_id.clone(),
        artifact_sha256: metadata.artifact.sha256.clone(),
        attribute_names: serving.run.model.required_attributes().to_vec(),
        eval_wmae: metadata.metrics.eval.model.wmae,
        eval_baseline_wmae: metadata.metrics.eval.device.wmae,
        importance: serving
            .run
            .model
            .importance()
            .into_iter()
            .map(|(feature, importance)| FeatureImportance { feature, importance })
            .collect(),
        memory_bytes: serving.memory_bytes(),
        loaded,
    }
}
