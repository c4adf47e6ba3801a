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
        let mut matrix = Array2::<f32>::zeros((rows.len(), self.width()));
        for (i, mut out) in matrix.rows_mut().into_iter().enumerate() {
            if let Some(slot) = self.devices.iter().position(|d| *d == rows.device[i]) {
                out[slot] = 1.0;
            }
            let values = rows.attributes(i);
            for &(column, source) in &sources {
                out[column] = f32::from(values[source]);
            }
        }
        Ok(Features { matrix, devices: rows.device.clone() })
    }

    /// [`Self::transform`] of rows given as attribute columns, named by `names`,
    /// each as long as `devices`. Batches read columns: building the matrix
    /// straight from them skips a row-major copy of every chunk.
    pub fn transform_columns(
        &self,
        names: &[String],
        columns: &[&[i32]],
        devices: &[Device],
        required: &[String],
    ) -> Result<Features, FeatureError> {
        debug_assert_eq!(names.len(), columns.len());
        debug_assert!(columns.iter().all(|c| c.len() == devices.len()));
        let sources: Vec<(usize, &[i32])> =
            self.sources(names, required)?.into_iter().map(|(column, source)| (column, columns[source])).collect();
        let mut matrix = Array2::<f32>::zeros((devices.len(), self.width()));
        for (i, mut out) in matrix.rows_mut().into_iter().enumerate() {
            if let Some(slot) = self.devices.iter().position(|d| *d == devices[i]) {
                out[slot] = 1.0;
            }
            // Validated cells are 0 or 1, exactly what `transform` writes for them.
            for &(column, values) in &sources {
                out[column] = values[i] as f32;
            }
        }
        Ok(Features { matrix, devices: devices.to_vec() })
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
    fn transform_columns_matches_transform() {
        let pipeline = FeaturePipeline {
            devices: vec![Device::Computer, Device::Tablet],
            attributes: vec!["att2".into(), "att1".into(), "att4".into()],
        };
        let input =
            rows(&["att1", "att9", "att2"], &[(Device::Computer, &[1, 0, 0]), (Device::Smartphone, &[0, 1, 1])]);
        let names: Vec<String> = input.attribute_names().to_vec();
        let columns: Vec<Vec<i32>> =
            (0..names.len()).map(|j| (0..input.len()).map(|i| i32::from(input.attributes(i)[j])).collect()).collect();
        let slices: Vec<&[i32]> = columns.iter().map(Vec::as_slice).collect();
        let required = ["att1".to_owned()];
        let from_rows = pipeline.transform(&input, &required).unwrap();
        let from_columns = pipeline.transform_columns(&names, &slices, &input.device, &required).unwrap();
        assert_eq!(from_columns.matrix, from_rows.matrix);
        assert_eq!(from_columns.devices, from_rows.devices);
        let err = pipeline.transform_columns(&names, &slices, &input.device, &["att4".to_owned()]).unwrap_err();
        assert_eq!(err, FeatureError::MissingAttributes(vec!["att4".into()]));
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
