//! How far new data has moved from the data a model was trained on: the shift
//! of the inputs (unseen keywords, device mix, per-attribute population
//! stability index) and the change of the model's score.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::data::{Device, KeywordRows, Observations};

/// Shares below this are treated as this in the population stability index,
/// so that a category absent on one side gives a large, finite number.
const PSI_FLOOR: f64 = 1e-4;

/// The shift of the inputs from `reference` (what the model learnt from) to `new`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputShift {
    /// Share of the new rows whose keyword the reference never had.
    pub unseen_keyword_share: f64,
    /// Share of rows per device: reference, then new.
    pub device_mix: Vec<DeviceShare>,
    /// Population stability index of the device mix.
    pub device_psi: f64,
    /// Population stability index of each attribute's 0/1 share, largest first.
    pub attribute_psi: Vec<AttributePsi>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceShare {
    pub device: Device,
    pub reference: f64,
    pub new: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributePsi {
    pub attribute: String,
    pub psi: f64,
}

impl InputShift {
    pub fn max_attribute_psi(&self) -> f64 {
        self.attribute_psi.first().map_or(0.0, |a| a.psi)
    }
}

/// Population stability index between two distributions over the same categories.
pub fn psi(reference: &[f64], new: &[f64]) -> f64 {
    reference
        .iter()
        .zip(new)
        .map(|(&r, &n)| {
            let (r, n) = (r.max(PSI_FLOOR), n.max(PSI_FLOOR));
            (n - r) * (n / r).ln()
        })
        .sum()
}

fn shares(counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| if total > 0.0 { c / total } else { 0.0 }).collect()
}

/// Compares the rows of `new` with those of `reference`, by row (keyword ×
/// device), not by click: the question is whether the inputs look alike.
pub fn input_shift(reference: &Observations, new: &Observations) -> InputShift {
    row_shift(&reference.rows, &new.rows)
}

/// [`input_shift`] of rows without outcomes (served rows, say).
pub fn row_shift(reference: &KeywordRows, new: &KeywordRows) -> InputShift {
    let known: HashSet<i64> = reference.entity_id.iter().copied().collect();
    let unseen = new.entity_id.iter().filter(|e| !known.contains(e)).count();
    let unseen_keyword_share = if new.is_empty() { 0.0 } else { unseen as f64 / new.len() as f64 };

    let device_counts = |o: &KeywordRows| {
        let mut counts = [0.0; 3];
        for d in &o.device {
            counts[d.index()] += 1.0;
        }
        shares(&counts)
    };
    let (reference_mix, new_mix) = (device_counts(reference), device_counts(new));
    let device_mix = Device::ALL
        .iter()
        .map(|&d| DeviceShare { device: d, reference: reference_mix[d.index()], new: new_mix[d.index()] })
        .collect();

    let names: Vec<&String> =
        reference.attribute_names().iter().filter(|n| new.attribute_names().contains(n)).collect();
    let ones = |o: &KeywordRows, name: &str| {
        let Some(j) = o.attribute_names().iter().position(|n| n == name) else { return vec![0.0, 0.0] };
        let on = (0..o.len()).filter(|&i| o.attributes(i)[j] == 1).count() as f64;
        shares(&[o.len() as f64 - on, on])
    };
    let mut attribute_psi: Vec<AttributePsi> = names
        .into_iter()
        .map(|name| AttributePsi { attribute: name.clone(), psi: psi(&ones(reference, name), &ones(new, name)) })
        .collect();
    attribute_psi.sort_by(|a, b| b.psi.total_cmp(&a.psi));
    InputShift { unseen_keyword_share, device_psi: psi(&reference_mix, &new_mix), device_mix, attribute_psi }
}

/// Bins of [`rate_psi`]: deciles of the reference rates.
const RATE_BINS: usize = 10;

/// Population stability index of predicted rates: `live` against
/// `reference`, in bins at the deciles of `reference`.
pub fn rate_psi(reference: &[f64], live: &[f64]) -> f64 {
    if reference.is_empty() || live.is_empty() {
        return 0.0;
    }
    let mut sorted = reference.to_vec();
    sorted.sort_by(f64::total_cmp);
    let edges: Vec<f64> = (1..RATE_BINS).map(|i| sorted[i * sorted.len() / RATE_BINS]).collect();
    let binned = |rates: &[f64]| {
        let mut counts = vec![0.0; RATE_BINS];
        for rate in rates {
            counts[edges.partition_point(|edge| edge <= rate)] += 1.0;
        }
        shares(&counts)
    };
    psi(&binned(reference), &binned(live))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data::KeywordRows;

    fn observations(rows: &[(i64, Device, [u8; 2])]) -> Observations {
        let names: Arc<[String]> = vec!["att1".to_owned(), "att2".to_owned()].into();
        let mut keyword_rows = KeywordRows::new(names);
        for (entity, device, values) in rows {
            let values: Vec<u32> = values.iter().map(|&v| u32::from(v)).collect();
            keyword_rows.push_checked(*entity, device.as_str(), &values).unwrap();
        }
        Observations { rows: keyword_rows, clicks: vec![10.0; rows.len()], conversions: vec![1.0; rows.len()] }
    }

    #[test]
    fn the_same_data_has_no_shift_and_other_data_has_some() {
        let reference = observations(&[(1, Device::Computer, [0, 1]), (2, Device::Tablet, [1, 1])]);
        let same = input_shift(&reference, &reference);
        assert_eq!(same.unseen_keyword_share, 0.0);
        assert!(same.device_psi.abs() < 1e-12 && same.max_attribute_psi().abs() < 1e-12);

        let new = observations(&[(3, Device::Computer, [1, 1]), (1, Device::Computer, [1, 1])]);
        let shift = input_shift(&reference, &new);
        assert_eq!(shift.unseen_keyword_share, 0.5);
        assert!(shift.device_psi > 0.5, "{shift:?}");
        assert_eq!(shift.attribute_psi[0].attribute, "att1");
        assert!(shift.attribute_psi[0].psi > 0.5 && shift.attribute_psi[1].psi.abs() < 1e-12, "{shift:?}");
        let mix: Vec<f64> = shift.device_mix.iter().map(|d| d.new).collect();
        assert_eq!(mix, vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn rates_alike_have_a_small_psi_and_rates_moved_a_large_one() {
        let reference: Vec<f64> = (0..1000).map(|i| f64::from(i) / 1000.0 * 0.1).collect();
        let alike: Vec<f64> = (0..500).map(|i| f64::from(i) / 500.0 * 0.1).collect();
        assert!(rate_psi(&reference, &alike) < 0.01, "{}", rate_psi(&reference, &alike));
        let moved: Vec<f64> = alike.iter().map(|r| r + 0.05).collect();
        assert!(rate_psi(&reference, &moved) > 1.0, "{}", rate_psi(&reference, &moved));
        assert_eq!(rate_psi(&[], &alike), 0.0);
    }
}
