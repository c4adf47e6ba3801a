//! The small in-memory types the data contract hands to the science side.

use std::sync::Arc;

use super::schema::Device;

/// Keyword × device rows with their attribute values: what every model version
/// predicts from. Values are 0 or 1; the constructors below keep it so.
#[derive(Clone, Debug)]
pub struct KeywordRows {
    pub entity_id: Vec<i64>,
    pub device: Vec<Device>,
    attribute_names: Arc<[String]>,
    /// Row-major, one byte per attribute.
    attributes: Vec<u8>,
}

/// Why one row handed in by a caller (not read from a file) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowProblem {
    #[error("unknown device {0:?} (expected {expected})", expected = Device::expected_names())]
    UnknownDevice(String),
    #[error("has {found} attribute values but {expected} attribute names")]
    WrongLength { found: usize, expected: usize },
    #[error("attribute '{attribute}' must be 0 or 1, found {value}")]
    NotBinary { attribute: String, value: u32 },
}

impl KeywordRows {
    pub fn new(attribute_names: Arc<[String]>) -> Self {
        KeywordRows { entity_id: Vec::new(), device: Vec::new(), attribute_names, attributes: Vec::new() }
    }

    pub fn with_capacity(attribute_names: Arc<[String]>, rows: usize) -> Self {
        let width = attribute_names.len();
        KeywordRows {
            entity_id: Vec::with_capacity(rows),
            device: Vec::with_capacity(rows),
            attribute_names,
            attributes: Vec::with_capacity(rows * width),
        }
    }

    /// Assembles rows whose values the data contract has already validated.
    pub(crate) fn from_valid_parts(
        entity_id: Vec<i64>,
        device: Vec<Device>,
        attribute_names: Arc<[String]>,
        attributes: Vec<u8>,
    ) -> Self {
        debug_assert_eq!(entity_id.len(), device.len());
        debug_assert_eq!(attributes.len(), entity_id.len() * attribute_names.len());
        KeywordRows { entity_id, device, attribute_names, attributes }
    }

    /// Appends a row given by a caller, checking it against the data contract.
    pub fn push_checked(&mut self, entity_id: i64, device: &str, values: &[u32]) -> Result<(), RowProblem> {
        let device = Device::parse(device).ok_or_else(|| RowProblem::UnknownDevice(device.to_owned()))?;
        if values.len() != self.attribute_names.len() {
            return Err(RowProblem::WrongLength { found: values.len(), expected: self.attribute_names.len() });
        }
        if let Some((i, &value)) = values.iter().enumerate().find(|(_, v)| **v > 1) {
            return Err(RowProblem::NotBinary { attribute: self.attribute_names[i].clone(), value });
        }
        self.entity_id.push(entity_id);
        self.device.push(device);
        self.attributes.extend(values.iter().map(|&v| v as u8));
        Ok(())
    }

    /// Appends a row whose values the caller has already validated as 0/1.
    pub(crate) fn push_valid(&mut self, entity_id: i64, device: Device, values: impl IntoIterator<Item = u8>) {
        self.entity_id.push(entity_id);
        self.device.push(device);
        self.attributes.extend(values);
        debug_assert_eq!(self.attributes.len(), self.entity_id.len() * self.attribute_names.len());
    }

    pub fn len(&self) -> usize {
        self.entity_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entity_id.is_empty()
    }

    pub fn attribute_names(&self) -> &[String] {
        &self.attribute_names
    }

    /// The attribute names as held, to build rows with the same ones without copying them.
    pub fn shared_attribute_names(&self) -> &Arc<[String]> {
        &self.attribute_names
    }

    /// The attribute values of one row, in [`Self::attribute_names`] order.
    pub fn attributes(&self, row: usize) -> &[u8] {
        let width = self.attribute_names.len();
        &self.attributes[row * width..(row + 1) * width]
    }

    /// Appends the rows of `other`, whose attribute names must be these.
    pub fn append(&mut self, other: &KeywordRows) {
        assert_eq!(self.attribute_names, other.attribute_names, "appended rows must have the same attributes");
        self.entity_id.extend_from_slice(&other.entity_id);
        self.device.extend_from_slice(&other.device);
        self.attributes.extend_from_slice(&other.attributes);
    }

    /// The rows at `indices` (all for `None`) with only the attributes `names`,
    /// in that order; `None` if these rows lack one of them.
    pub fn project(&self, indices: Option<&[usize]>, names: Arc<[String]>) -> Option<KeywordRows> {
        // Usually the model's own names in its order: then no lookup at all.
        let columns: Vec<usize> = if self.attribute_names[..] == names[..] {
            (0..names.len()).collect()
        } else {
            let at: std::collections::HashMap<&str, usize> =
                self.attribute_names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
            names.iter().map(|name| at.get(name.as_str()).copied()).collect::<Option<_>>()?
        };
        let all: Vec<usize>;
        let indices = match indices {
            Some(indices) => indices,
            None => {
                all = (0..self.len()).collect();
                &all
            }
        };
        let mut out = KeywordRows::with_capacity(names, indices.len());
        for &i in indices {
            let values = self.attributes(i);
            out.push_valid(self.entity_id[i], self.device[i], columns.iter().map(|&c| values[c]));
        }
        Some(out)
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> KeywordRows {
        let mut out = KeywordRows::with_capacity(self.attribute_names.clone(), indices.len());
        for &i in indices {
            out.push_valid(self.entity_id[i], self.device[i], self.attributes(i).iter().copied());
        }
        out
    }
}

/// Keyword × device rows with clicks and conversions summed over weeks: what
/// models learn from and are scored on. `cr = conversions / clicks`, clicks > 0.
#[derive(Clone, Debug)]
pub struct Observations {
    pub rows: KeywordRows,
    pub clicks: Vec<f64>,
    pub conversions: Vec<f64>,
}

impl Observations {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn total_clicks(&self) -> f64 {
        self.clicks.iter().sum()
    }

    pub fn select(&self, indices: &[usize]) -> Observations {
        Observations {
            rows: self.rows.select(indices),
            clicks: indices.iter().map(|&i| self.clicks[i]).collect(),
            conversions: indices.iter().map(|&i| self.conversions[i]).collect(),
        }
    }

    /// Splits by keyword so that no `entity_id` lands on both sides: about
    /// `holdout_fraction` of the keywords go to the second set. The same seed
    /// gives the same split on any machine.
    pub fn split_by_entity(&self, holdout_fraction: f64, seed: u64) -> (Observations, Observations) {
        let (mut train, mut holdout) = (Vec::new(), Vec::new());
        for (i, &entity) in self.rows.entity_id.iter().enumerate() {
            let draw = crate::rng::unit_hash(entity as u64, seed);
            if draw < holdout_fraction { holdout.push(i) } else { train.push(i) }
        }
        (self.select(&train), self.select(&holdout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Arc<[String]> {
        (1..=n).map(|i| format!("att{i}")).collect()
    }

    #[test]
    fn push_checked_names_the_problem() {
        let mut rows = KeywordRows::new(names(3));
        assert_eq!(rows.push_checked(1, "Computer", &[0, 1, 0]), Ok(()));
        assert_eq!(rows.push_checked(2, "Phone", &[0, 1, 0]), Err(RowProblem::UnknownDevice("Phone".into())));
        assert_eq!(rows.push_checked(2, "Tablet", &[0, 1]), Err(RowProblem::WrongLength { found: 2, expected: 3 }));
        let err = rows.push_checked(2, "Tablet", &[0, 1, 2]).unwrap_err();
        assert_eq!(err.to_string(), "attribute 'att3' must be 0 or 1, found 2");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows.attributes(0), &[0, 1, 0]);
    }

    #[test]
    fn project_picks_rows_and_reorders_or_drops_attributes_by_name() {
        let mut rows = KeywordRows::new(names(3));
        rows.push_valid(1, Device::Computer, [1, 0, 0]);
        rows.push_valid(2, Device::Tablet, [0, 1, 1]);
        let same = rows.project(Some(&[1]), names(3)).unwrap();
        assert_eq!((same.entity_id.as_slice(), same.attributes(0)), (&[2][..], &[0, 1, 1][..]));
        let other: Arc<[String]> = vec!["att3".to_owned(), "att1".to_owned()].into();
        let reordered = rows.project(None, other.clone()).unwrap();
        assert_eq!(reordered.attribute_names(), &other[..]);
        assert_eq!((reordered.attributes(0), reordered.attributes(1)), (&[0, 1][..], &[1, 0][..]));
        assert!(rows.project(None, vec!["att9".to_owned()].into()).is_none());
    }

    #[test]
    fn split_by_entity_keeps_keywords_on_one_side() {
        let mut rows = KeywordRows::new(names(1));
        let mut clicks = Vec::new();
        for entity in 0..1000 {
            for device in Device::ALL {
                rows.push_valid(entity, device, [1]);
                clicks.push(1.0);
            }
        }
        let obs = Observations { rows, conversions: vec![0.0; clicks.len()], clicks };
        let (train, holdout) = obs.split_by_entity(0.2, 7);
        let train_ids: std::collections::HashSet<_> = train.rows.entity_id.iter().collect();
        assert!(holdout.rows.entity_id.iter().all(|e| !train_ids.contains(e)));
        assert_eq!(train.len() + holdout.len(), obs.len());
        let share = holdout.len() as f64 / obs.len() as f64;
        assert!((0.15..0.25).contains(&share), "holdout share {share}");
        let (_, again) = obs.split_by_entity(0.2, 7);
        assert_eq!(again.rows.entity_id, holdout.rows.entity_id);
    }
}
