//! The numbers behind a run's report: calibration, cumulative gains and
//! residuals by device, all click-weighted, on the rows a model is judged on.

use serde::{Deserialize, Serialize};

use crate::data::{Device, Observations};

/// Predicted against observed rate in one bin of predictions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Click-weighted mean prediction of the bin.
    pub predicted: f64,
    /// Conversions over clicks of the bin.
    pub observed: f64,
    pub clicks: f64,
}

/// Rows sorted by prediction and cut into `bins` bins of about equal clicks.
pub fn calibration(predicted: &[f64], rows: &Observations, bins: usize) -> Vec<CalibrationBin> {
    let order = by_prediction(predicted);
    let total: f64 = rows.clicks.iter().sum();
    let per_bin = total / bins.max(1) as f64;
    let mut out = Vec::new();
    let (mut clicks, mut conversions, mut weighted) = (0.0, 0.0, 0.0);
    for (n, &i) in order.iter().enumerate() {
        clicks += rows.clicks[i];
        conversions += rows.conversions[i];
        weighted += rows.clicks[i] * predicted[i];
        if (clicks >= per_bin || n + 1 == order.len()) && clicks > 0.0 {
            out.push(CalibrationBin { predicted: weighted / clicks, observed: conversions / clicks, clicks });
            (clicks, conversions, weighted) = (0.0, 0.0, 0.0);
        }
    }
    out
}

/// Cumulative gains: share of conversions found against share of clicks taken,
/// taking rows from the highest predicted rate down; `points + 1` points from (0, 0).
pub fn cumulative_gains(predicted: &[f64], rows: &Observations, points: usize) -> Vec<(f64, f64)> {
    let mut order = by_prediction(predicted);
    order.reverse();
    let total_clicks: f64 = rows.clicks.iter().sum();
    let total_conversions: f64 = rows.conversions.iter().sum();
    let mut out = vec![(0.0, 0.0)];
    if total_clicks <= 0.0 || total_conversions <= 0.0 {
        return out;
    }
    let step = total_clicks / points.max(1) as f64;
    let (mut clicks, mut conversions, mut next) = (0.0, 0.0, step);
    for &i in &order {
        clicks += rows.clicks[i];
        conversions += rows.conversions[i];
        while clicks >= next - 1e-9 && out.len() <= points {
            out.push((clicks / total_clicks, conversions / total_conversions));
            next += step;
        }
    }
    out
}

/// Click-weighted mean residual (observed minus predicted rate) and mean
/// absolute residual per device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceResiduals {
    pub device: Device,
    pub clicks: f64,
    pub mean_residual: f64,
    pub mean_abs_residual: f64,
}

pub fn residuals_by_device(predicted: &[f64], rows: &Observations) -> Vec<DeviceResiduals> {
    Device::ALL
        .iter()
        .filter_map(|&device| {
            let (mut clicks, mut residual, mut absolute) = (0.0, 0.0, 0.0);
            for i in (0..rows.len()).filter(|&i| rows.rows.device[i] == device) {
                let r = rows.conversions[i] / rows.clicks[i] - predicted[i];
                clicks += rows.clicks[i];
                residual += rows.clicks[i] * r;
                absolute += rows.clicks[i] * r.abs();
            }
            (clicks > 0.0).then(|| DeviceResiduals {
                device,
                clicks,
                mean_residual: residual / clicks,
                mean_abs_residual: absolute / clicks,
            })
        })
        .collect()
}

fn by_prediction(predicted: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..predicted.len()).collect();
    order.sort_by(|&a, &b| predicted[a].total_cmp(&predicted[b]));
    order
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data::KeywordRows;

    fn rows(rates: &[(f64, f64)]) -> Observations {
        let mut keyword_rows = KeywordRows::new(Arc::from(vec!["att1".to_owned()]));
        for (i, _) in rates.iter().enumerate() {
            keyword_rows.push_checked(i as i64, "Computer", &[0]).unwrap();
        }
        Observations {
            rows: keyword_rows,
            clicks: rates.iter().map(|r| r.0).collect(),
            conversions: rates.iter().map(|r| r.1).collect(),
        }
    }

    #[test]
    fn a_perfect_model_is_calibrated_and_finds_conversions_first() {
        let data = rows(&[(100.0, 1.0), (100.0, 5.0), (100.0, 20.0), (100.0, 40.0)]);
        let predicted = [0.01, 0.05, 0.2, 0.4];
        let bins = calibration(&predicted, &data, 4);
        assert_eq!(bins.len(), 4);
        assert!(bins.iter().all(|b| (b.predicted - b.observed).abs() < 1e-12), "{bins:?}");
        let gains = cumulative_gains(&predicted, &data, 4);
        assert_eq!(gains.first(), Some(&(0.0, 0.0)));
        assert!((gains[1].1 - 40.0 / 66.0).abs() < 1e-12, "{gains:?}");
        let residuals = residuals_by_device(&predicted, &data);
        assert_eq!(residuals.len(), 1);
        assert!(residuals[0].mean_abs_residual.abs() < 1e-12);
    }
}
