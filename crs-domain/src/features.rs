//! The feature pipeline: keyword rows in, the model's matrix out. It is fitted on
//! the training rows and saved inside the model artifact, so serving applies the
//! exact transformation training used.

use std::collections::HashMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::data::{Device, KeywordRows};

/// Fitted choice of columns and encodings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeaturePipeline {
    /// Devices one-hot encoded, in matrix order; a device training never saw
    /// gets all zeros.
    pub devices: Vec<Device>,
    /// Attribute columns the model reads, in matrix order after the devices.
    /// Attributes constant over the training rows carry no information and are left out.
    pub attributes: Vec<String>,
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

impl FeaturePipeline {
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
            .map(|(_, name)| name.clone())
            .collect();
        FeaturePipeline { devices, attributes }
    }

    /// Column names of the matrix, e.g. `device=Computer`, `att17`.
    pub fn feature_names(&self) -> Vec<String> {
        self.devices.iter().map(|d| format!("device={d}")).chain(self.attributes.iter().cloned()).collect()
    }

    pub fn width(&self) -> usize {
        self.devices.len() + self.attributes.len()
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
            if let Some(slot) = self.devices.iter().position(|d| *d == rows.device[i]) {
                out[slot] = 1.0;
            }
            let values = rows.attributes(i);
            for &(column, source) in &sources {
                out[column] = f32::from(values[source]);
            }
        }
        let matrix = Array2::from_shape_vec((rows.len(), width), cells).expect("one row of `width` cells per row");
        Ok(Features { matrix, devices: rows.device.clone() })
    }

    /// (matrix column, position in `names`) of every pipeline attribute in
    /// `names`, after checking that `names` has every `required` one.
    fn sources(&self, names: &[String], required: &[String]) -> Result<Vec<(usize, usize)>, FeatureError> {
        let positions: HashMap<&str, usize> = names.iter().enumerate().map(|(i, name)| (name.as_str(), i)).collect();
        let missing: Vec<String> = required.iter().filter(|a| !positions.contains_key(a.as_str())).cloned().collect();
        if !missing.is_empty() {
            return Err(FeatureError::MissingAttributes(missing));
        }
        Ok(self
            .attributes
            .iter()
            .enumerate()
            .filter_map(|(j, a)| positions.get(a.as_str()).map(|&source| (self.devices.len() + j, source)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

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
        assert_eq!(pipeline.devices, vec![Device::Computer, Device::Tablet]);
        assert_eq!(pipeline.attributes, vec!["att2", "att3"]);
        assert_eq!(pipeline.feature_names(), vec!["device=Computer", "device=Tablet", "att2", "att3"]);
    }

    #[test]
    fn transform_reorders_columns_by_name() {
        let pipeline =
            FeaturePipeline { devices: vec![Device::Computer], attributes: vec!["att2".into(), "att1".into()] };
        let input =
            rows(&["att1", "att9", "att2"], &[(Device::Computer, &[1, 0, 0]), (Device::Smartphone, &[0, 1, 1])]);
        let features = pipeline.transform(&input, &pipeline.attributes).unwrap();
        assert_eq!(features.matrix.row(0).to_vec(), vec![1.0, 0.0, 1.0]);
        assert_eq!(features.matrix.row(1).to_vec(), vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn transform_rejects_missing_attributes_by_name() {
        let pipeline =
            FeaturePipeline { devices: vec![], attributes: vec!["att1".into(), "att5".into(), "att7".into()] };
        let input = rows(&["att1"], &[(Device::Computer, &[1])]);
        let err = pipeline.transform(&input, &pipeline.attributes).unwrap_err();
        assert_eq!(err.to_string(), "missing attribute column(s) the model needs: att5, att7");
    }
}
