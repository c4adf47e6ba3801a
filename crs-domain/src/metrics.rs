//! How good a conversion-rate prediction is, measured per click.

use serde::{Deserialize, Serialize};

/// Probabilities are clipped to [EPS, 1 - EPS] for the log-loss, so that a
/// model predicting exactly 0 gets a large, finite loss.
pub const LOGLOSS_EPS: f64 = 1e-9;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Click-weighted mean absolute error of the rate.
    pub wmae: f64,
    /// Click-weighted mean squared error of the rate.
    pub wmse: f64,
    /// Binomial log-loss per click.
    pub logloss: f64,
    /// Unweighted mean absolute error of the rate over rows.
    pub mae: f64,
}

/// Scores predicted rates against observed clicks and conversions (clicks > 0).
pub fn score(predicted: &[f64], clicks: &[f64], conversions: &[f64]) -> Metrics {
    assert_eq!(predicted.len(), clicks.len());
    assert_eq!(predicted.len(), conversions.len());
    let (mut abs, mut sq, mut loss, mut unweighted, mut total) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for ((&p, &n), &k) in predicted.iter().zip(clicks).zip(conversions) {
        let rate = k / n;
        let err = (p - rate).abs();
        abs += n * err;
        sq += n * err * err;
        unweighted += err;
        let q = p.clamp(LOGLOSS_EPS, 1.0 - LOGLOSS_EPS);
        loss -= k * q.ln() + (n - k) * (1.0 - q).ln();
        total += n;
    }
    let rows = predicted.len().max(1) as f64;
    let total = if total > 0.0 { total } else { 1.0 };
    Metrics { wmae: abs / total, wmse: sq / total, logloss: loss / total, mae: unweighted / rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_predictions_have_zero_error() {
        let m = score(&[0.5, 0.1], &[2.0, 10.0], &[1.0, 1.0]);
        assert_eq!(m.wmae, 0.0);
        assert_eq!(m.wmse, 0.0);
        assert_eq!(m.mae, 0.0);
    }

    #[test]
    fn errors_are_weighted_by_clicks() {
        // Rates 0.0 (1 click) and 1.0 (3 clicks); predicting 0.5 everywhere.
        let m = score(&[0.5, 0.5], &[1.0, 3.0], &[0.0, 3.0]);
        assert!((m.wmae - 0.5).abs() < 1e-12);
        assert!((m.wmse - 0.25).abs() < 1e-12);
        assert!((m.logloss - std::f64::consts::LN_2).abs() < 1e-12);
        // Unweighted: both rows are off by 0.5.
        assert!((m.mae - 0.5).abs() < 1e-12);
        // Predicting 1.0 for the first row is punished hard but finitely.
        let bad = score(&[1.0, 1.0], &[1.0, 3.0], &[0.0, 3.0]);
        assert!(bad.logloss > 5.0 && bad.logloss.is_finite());
    }
}
