//! The feature pipeline: keyword rows in, the model's matrix out. It is fitted on
//! the training rows and saved inside the model artifact, so serving applies the
//! exact transformation training used.
//!
//! A pipeline is a list of named matrix columns ([`Column`]): a device one-hot
//! (`device=Computer`), the device code (`device`: 0 Computer, 1 Smartphone, 2
//! Tablet, as the original service's output contract has it) or an attribute
//! (`att17`). Fitted pipelines put the one-hot devices first, then the
//! attributes; an imported model's pipeline is its own feature names in its own
//! order ([`FeaturePipeline::from_names`]).

use std::collections::HashMap;
use std::fmt;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::data::{DEVICE, Device, KeywordRows, attribute_number};

/// One matrix column, by what it is computed from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    /// 1 when the row's device is this one, else 0 (`device=Computer`).
    Device(Device),
    /// The row's device as its code: 0 Computer, 1 Smartphone, 2 Tablet (`device`).
    DeviceCode,
    /// An attribute's 0 or 1 (`att17`).
    Attribute(String),
}

impl Column {
    /// The column a feature name stands for, if the data contract has one.
    pub fn parse(name: &str) -> Option<Column> {
        if name == DEVICE {
            return Some(Column::DeviceCode);
        }
        if let Some(device) = name.strip_prefix("device=") {
            return Device::parse(device).map(Column::Device);
        }
        attribute_number(name).map(|_| Column::Attribute(name.to_owned()))
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Column::Device(device) => write!(f, "device={device}"),
            Column::DeviceCode => f.write_str(DEVICE),
            Column::Attribute(name) => f.write_str(name),
        }
    }
}

/// Fitted choice of columns and encodings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SavedPipeline", into = "SavedPipeline")]
pub struct FeaturePipeline {
    columns: Vec<Column>,
    /// The attribute columns, in matrix order.
    attributes: Vec<String>,
}

/// The pipeline as artifacts keep it. A fitted pipeline is its devices
/// (one-hot, in matrix order) and then its attributes, as it has always been
/// saved; any other layout also lists every column by name in `columns`.
#[derive(Serialize, Deserialize)]
struct SavedPipeline {
    devices: Vec<Device>,
    attributes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    columns: Option<Vec<String>>,
}

impl From<FeaturePipeline> for SavedPipeline {
    fn from(pipeline: FeaturePipeline) -> Self {
        let devices: Vec<Device> = pipeline
            .columns
            .iter()
            .map_while(|c| match c {
                Column::Device(d) => Some(*d),
                _ => None,
            })
            .collect();
        let fitted_layout = pipeline.columns[devices.len()..].iter().all(|c| matches!(c, Column::Attribute(_)));
        if fitted_layout {
            SavedPipeline { devices, attributes: pipeline.attributes, columns: None }
        } else {
            let columns = pipeline.columns.iter().map(ToString::to_string).collect();
            SavedPipeline { devices: Vec::new(), attributes: pipeline.attributes, columns: Some(columns) }
        }
    }
}

impl TryFrom<SavedPipeline> for FeaturePipeline {
    type Error = String;

    fn try_from(saved: SavedPipeline) -> Result<Self, String> {
        let pipeline = match saved.columns {
            None => {
                let devices = saved.devices.into_iter().map(Column::Device);
                let attributes = saved.attributes.into_iter().map(Column::Attribute);
                FeaturePipeline::of_columns(devices.chain(attributes).collect())
            }
            Some(names) => {
                let pipeline = FeaturePipeline::from_names(&names).map_err(|e| e.to_string())?;
                if !saved.devices.is_empty() || saved.attributes != pipeline.attributes {
                    return Err("the pipeline's devices and attributes do not match its columns".to_owned());
                }
                pipeline
            }
        };
        Ok(pipeline)
    }
}

/// The model's input: one matrix row per keyword row, with its device kept
/// beside it for models that use it directly.
#[derive(Clone, Debug)]
pub struct Features {
    pub matrix: Array2<f32>,
    pub devices: Vec<Device>,
}

impl Features {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    #[error("missing attribute column(s) the model needs: {}", .0.join(", "))]
    MissingAttributes(Vec<String>),
}

/// Why a model's feature names cannot be its matrix columns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureNameError {
    #[error(
        "feature {index} '{name}' maps to nothing in the data contract (the features are att<k>, device as the code 0 Computer, 1 Smartphone, 2 Tablet, and device=Computer, device=Smartphone, device=Tablet)"
    )]
    Unknown { index: usize, name: String },
    #[error("feature '{name}' appears twice (features {first} and {second})")]
    Twice { name: String, first: usize, second: usize },
}

/// Where a matrix's columns come from, worked out once per transform.
struct Sources {
    /// Per device (by [`Device::index`]), the column of its one-hot, if any.
    one_hot: [Option<usize>; 3],
    /// Columns holding the device code.
    codes: Vec<usize>,
    /// (matrix column, position in the caller's attribute names).
    attributes: Vec<(usize, usize)>,
}

impl FeaturePipeline {
    fn of_columns(columns: Vec<Column>) -> Self {
        let attributes = columns
            .iter()
            .filter_map(|c| match c {
                Column::Attribute(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        FeaturePipeline { columns, attributes }
    }

    pub fn fit(rows: &KeywordRows) -> Self {
        let mut devices: Vec<Device> = Device::ALL.into_iter().filter(|d| rows.device.contains(d)).collect();
        devices.sort();
        let width = rows.attribute_names().len();
        let (mut seen_zero, mut seen_one) = (vec![false; width], vec![false; width]);
        for row in 0..rows.len() {
            for (j, &value) in rows.attributes(row).iter().enumerate() {
                if value == 0 { seen_zero[j] = true } else { seen_one[j] = true }
            }
        }
        let attributes = rows
            .attribute_names()
            .iter()
            .enumerate()
            .filter(|(j, _)| seen_zero[*j] && seen_one[*j])
            .map(|(_, name)| Column::Attribute(name.clone()));
        FeaturePipeline::of_columns(devices.into_iter().map(Column::Device).chain(attributes).collect())
    }

    /// A pipeline whose matrix columns are `names`, in order, each mapped onto
    /// the data contract by [`Column::parse`]: how a model trained elsewhere
    /// names its features.
    pub fn from_names(names: &[String]) -> Result<Self, FeatureNameError> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut columns = Vec::with_capacity(names.len());
        for (index, name) in names.iter().enumerate() {
            if let Some(first) = seen.insert(name, index) {
                return Err(FeatureNameError::Twice { name: name.clone(), first, second: index });
            }
            columns.push(Column::parse(name).ok_or_else(|| FeatureNameError::Unknown { index, name: name.clone() })?);
        }
        Ok(FeaturePipeline::of_columns(columns))
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The attribute columns, in matrix order. Fitted pipelines leave out
    /// attributes constant over the training rows: they carry no information.
    pub fn attributes(&self) -> &[String] {
        &self.attributes
    }

    /// The attribute matrix column `column` holds, if it holds one.
    pub fn attribute_at(&self, column: usize) -> Option<&str> {
        match self.columns.get(column) {
            Some(Column::Attribute(name)) => Some(name),
            _ => None,
        }
    }

    /// Column names of the matrix, e.g. `device=Computer`, `att17`.
    pub fn feature_names(&self) -> Vec<String> {
        self.columns.iter().map(ToString::to_string).collect()
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// The model's matrix for `rows`. Every attribute in `required` must be in
    /// `rows`; other pipeline attributes the rows lack are left at 0, which is
    /// safe only for columns the model never reads (see
    /// [`crate::models::TrainedModel::required_attributes`]).
    pub fn transform(&self, rows: &KeywordRows, required: &[String]) -> Result<Features, FeatureError> {
        let sources = self.sources(rows.attribute_names(), required)?;
        let width = self.width();
        // Each row is zeroed just before it is filled, while it is in cache: a
        // zeroed matrix filled afterwards took two passes over its memory.
        let mut cells = Vec::with_capacity(rows.len() * width);
        for i in 0..rows.len() {
            let start = cells.len();
            cells.resize(start + width, 0.0);
            let out = &mut cells[start..];
            sources.write_device(rows.device[i], out);
            let values = rows.attributes(i);
            for &(column, source) in &sources.attributes {
                out[column] = f32::from(values[source]);
            }
        }
        let matrix = Array2::from_shape_vec((rows.len(), width), cells).expect("one row of `width` cells per row");
        Ok(Features { matrix, devices: rows.device.clone() })
    }

    /// Where each column comes from, for rows whose attributes are `names`,
    /// after checking that `names` has every `required` one.
    fn sources(&self, names: &[String], required: &[String]) -> Result<Sources, FeatureError> {
        let positions: HashMap<&str, usize> = names.iter().enumerate().map(|(i, name)| (name.as_str(), i)).collect();
        let missing: Vec<String> = required.iter().filter(|a| !positions.contains_key(a.as_str())).cloned().collect();
        if !missing.is_empty() {
            return Err(FeatureError::MissingAttributes(missing));
        }
        let mut sources = Sources { one_hot: [None; 3], codes: Vec::new(), attributes: Vec::new() };
        for (column, kind) in self.columns.iter().enumerate() {
            match kind {
                Column::Device(device) => sources.one_hot[device.index()] = Some(column),
                Column::DeviceCode => sources.codes.push(column),
                Column::Attribute(name) => {
                    if let Some(&source) = positions.get(name.as_str()) {
                        sources.attributes.push((column, source));
                    }
                }
            }
        }
        Ok(sources)
    }
}

impl Sources {
    /// The device columns of one matrix row.
    fn write_device(&self, device: Device, row: &mut [f32]) {
        if let Some(column) = self.one_hot[device.index()] {
            row[column] = 1.0;
        }
        for &column in &self.codes {
            // Device::index is the contract's code: 0 Computer, 1 Smartphone, 2 Tablet.
            row[column] = device.index() as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn rows(names: &[&str], data: &[(Device, &[u32])]) -> KeywordRows {
        let names: Arc<[String]> = names.iter().map(|s| s.to_string()).collect();
        let mut rows = KeywordRows::new(names);
        for (i, (device, values)) in data.iter().enumerate() {
            rows.push_checked(i as i64, device.as_str(), values).unwrap();
        }
        rows
    }

    #[test]
    fn fit_drops_constant_attributes_and_unseen_devices() {
        let train = rows(&["att1", "att2", "att3"], &[(Device::Tablet, &[1, 0, 1]), (Device::Computer, &[1, 1, 0])]);
        let pipeline = FeaturePipeline::fit(&train);
        assert_eq!(pipeline.columns()[..2], [Column::Device(Device::Computer), Column::Device(Device::Tablet)]);
        assert_eq!(pipeline.attributes(), ["att2", "att3"]);
        assert_eq!(pipeline.feature_names(), vec!["device=Computer", "device=Tablet", "att2", "att3"]);
    }

    #[test]
    fn transform_reorders_columns_by_name() {
        let pipeline = FeaturePipeline::from_names(&names(&["device=Computer", "att2", "att1"])).unwrap();
        let input =
            rows(&["att1", "att9", "att2"], &[(Device::Computer, &[1, 0, 0]), (Device::Smartphone, &[0, 1, 1])]);
        let features = pipeline.transform(&input, pipeline.attributes()).unwrap();
        assert_eq!(features.matrix.row(0).to_vec(), vec![1.0, 0.0, 1.0]);
        assert_eq!(features.matrix.row(1).to_vec(), vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn transform_rejects_missing_attributes_by_name() {
        let pipeline = FeaturePipeline::from_names(&names(&["att1", "att5", "att7"])).unwrap();
        let input = rows(&["att1"], &[(Device::Computer, &[1])]);
        let err = pipeline.transform(&input, pipeline.attributes()).unwrap_err();
        assert_eq!(err.to_string(), "missing attribute column(s) the model needs: att5, att7");
    }

    #[test]
    fn named_columns_build_the_matrix_in_the_models_order() {
        let pipeline =
            FeaturePipeline::from_names(&names(&["att2", "device", "device=Tablet", "att1", "device=Computer"]))
                .unwrap();
        let input = rows(
            &["att1", "att2"],
            &[(Device::Computer, &[1, 0]), (Device::Smartphone, &[0, 1]), (Device::Tablet, &[1, 1])],
        );
        let features = pipeline.transform(&input, pipeline.attributes()).unwrap();
        assert_eq!(features.matrix.row(0).to_vec(), vec![0.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(features.matrix.row(1).to_vec(), vec![1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(features.matrix.row(2).to_vec(), vec![1.0, 2.0, 1.0, 1.0, 0.0]);
        assert_eq!(pipeline.feature_names(), ["att2", "device", "device=Tablet", "att1", "device=Computer"]);
        assert_eq!((pipeline.attribute_at(0), pipeline.attribute_at(1)), (Some("att2"), None));
    }

    #[test]
    fn names_outside_the_contract_and_repeated_names_are_refused() {
        let err = FeaturePipeline::from_names(&names(&["att1", "clicks"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "feature 1 'clicks' maps to nothing in the data contract (the features are att<k>, device as the code 0 Computer, 1 Smartphone, 2 Tablet, and device=Computer, device=Smartphone, device=Tablet)"
        );
        for unknown in ["att0", "att01", "Device", "device=Phone", "device=computer", ""] {
            assert!(FeaturePipeline::from_names(&names(&[unknown])).is_err(), "{unknown}");
        }
        let err = FeaturePipeline::from_names(&names(&["att1", "device", "att1"])).unwrap_err();
        assert_eq!(err.to_string(), "feature 'att1' appears twice (features 0 and 2)");
    }

    #[test]
    fn fitted_pipelines_save_as_they_always_have_and_named_ones_list_their_columns() {
        let fitted = FeaturePipeline::from_names(&names(&["device=Computer", "device=Tablet", "att2"])).unwrap();
        let saved = serde_json::to_string(&fitted).unwrap();
        assert_eq!(saved, r#"{"devices":["Computer","Tablet"],"attributes":["att2"]}"#);
        assert_eq!(serde_json::from_str::<FeaturePipeline>(&saved).unwrap(), fitted);
        let named = FeaturePipeline::from_names(&names(&["att2", "device"])).unwrap();
        let saved = serde_json::to_string(&named).unwrap();
        assert_eq!(saved, r#"{"devices":[],"attributes":["att2"],"columns":["att2","device"]}"#);
        assert_eq!(serde_json::from_str::<FeaturePipeline>(&saved).unwrap(), named);
        let edited = r#"{"devices":[],"attributes":["att3"],"columns":["att2","device"]}"#;
        let err = serde_json::from_str::<FeaturePipeline>(edited).unwrap_err().to_string();
        assert!(err.contains("do not match its columns"), "{err}");
    }
}
