//! The rules a model version lives by (`config/<ver>/lifecycle.yaml`): when to
//! retrain, when a score or an input has drifted, and when a challenger may
//! replace the production champion. Only decisions live here; the platform and
//! train-service carry them out.

use serde::{Deserialize, Serialize};

use crate::data::EvalSource;
use crate::drift::InputShift;
use crate::metrics::Metrics;
use crate::models::ParamError;

/// When a cycle retrains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retrain {
    /// Whenever new rows were ingested.
    #[default]
    NewData,
    /// Only when the drift check says the score or the inputs drifted.
    Drift,
    /// When the production run is older than `schedule_hours`.
    Schedule,
}

/// Who moves `production` to a challenger that passed the gate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promotion {
    /// The cycle, at once.
    #[default]
    Auto,
    /// A person, with `crctl promote`; the candidate waits.
    Manual,
}

/// Drift thresholds: crossing any of them is drift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftThresholds {
    /// Largest increase of the production run's click-weighted log-loss on new
    /// weeks over its log-loss on the week held out from it at promotion.
    pub max_logloss_increase: f64,
    /// Largest share of new rows whose keyword the production run never saw.
    pub max_unseen_keyword_share: f64,
    /// Largest population stability index of the device mix or of any attribute
    /// (and, on live traffic, of the predicted rates).
    pub max_psi: f64,
    /// On live traffic, a PSI from this one up puts the version on watch:
    /// reported, no action.
    pub watch_psi: f64,
    /// Fewest captured rows a live check judges; fewer are reported, not judged.
    pub min_live_rows: usize,
}

impl Default for DriftThresholds {
    fn default() -> Self {
        DriftThresholds {
            max_logloss_increase: 0.01,
            max_unseen_keyword_share: 0.5,
            max_psi: 0.25,
            watch_psi: 0.1,
            min_live_rows: 200,
        }
    }
}

/// `config/<ver>/lifecycle.yaml`; a missing file means these defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    pub retrain: Retrain,
    /// With `retrain: schedule`, retrain when production is older than this.
    pub schedule_hours: f64,
    pub promotion: Promotion,
    /// How much lower (better) the challenger's log-loss must be than the champion's.
    pub margin: f64,
    /// Newest weeks held out: the challenger never trains on them, and champion
    /// and challenger are judged on them.
    pub holdout_weeks: usize,
    /// Weeks before the held-out ones a challenger trains on, newest first; 0
    /// means every week. A short window follows a drift faster.
    pub train_weeks: usize,
    pub drift: DriftThresholds,
    /// Batch-predict this input with the new production run after a promotion.
    pub batch_input: Option<String>,
    /// Archived and rejected runs kept per version (production history is always kept).
    pub keep_runs: usize,
    /// Days cycle records, cycle reports, records of ended training jobs and
    /// run folders never completed are kept.
    pub keep_days: f64,
    /// Days captured traffic (`capture/<ver>/`, serve-service's `CAPTURE_SAMPLE`)
    /// is kept, by the UTC date it was written on.
    pub capture_keep_days: f64,
    /// Days trend points (one per cycle: `trends/<ver>/`) are kept.
    pub trend_keep_days: f64,
    /// A labelled file in the bucket every run is scored on once, so that runs
    /// and cycles compare like with like; fixed until someone changes it.
    /// Unset: charts fall back to each run's own holdout score.
    pub reference_key: Option<String>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            retrain: Retrain::NewData,
            schedule_hours: 24.0 * 7.0,
            promotion: Promotion::Auto,
            margin: 0.0005,
            holdout_weeks: 1,
            train_weeks: 0,
            drift: DriftThresholds::default(),
            batch_input: None,
            keep_runs: 10,
            keep_days: 30.0,
            capture_keep_days: 30.0,
            trend_keep_days: 365.0,
            reference_key: None,
        }
    }
}

impl LifecycleConfig {
    /// Reads and checks the YAML of `file` (`None`: the defaults).
    pub fn parse(file: &str, yaml: Option<&str>) -> Result<Self, ParamError> {
        let invalid = |message: String| ParamError::Invalid { file: file.to_owned(), message };
        let text = yaml.unwrap_or_default();
        let document: serde_norway::Value = serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let config: LifecycleConfig = if document.is_null() {
            Self::default()
        } else {
            serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?
        };
        config.check().map_err(|e| invalid(e.to_string()))?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ParamError> {
        let non_negative = |key: &'static str, value: f64| {
            if value >= 0.0 && value.is_finite() {
                Ok(())
            } else {
                Err(ParamError::out_of_range(key, "a number of at least 0", value))
            }
        };
        non_negative("margin", self.margin)?;
        non_negative("drift.max_logloss_increase", self.drift.max_logloss_increase)?;
        non_negative("drift.max_psi", self.drift.max_psi)?;
        non_negative("drift.watch_psi", self.drift.watch_psi)?;
        if !(0.0..=1.0).contains(&self.drift.max_unseen_keyword_share) {
            return Err(ParamError::out_of_range(
                "drift.max_unseen_keyword_share",
                "between 0 and 1",
                self.drift.max_unseen_keyword_share,
            ));
        }
        if !(self.schedule_hours > 0.0 && self.schedule_hours.is_finite()) {
            return Err(ParamError::out_of_range("schedule_hours", "a number above 0", self.schedule_hours));
        }
        if !(1..=52).contains(&self.holdout_weeks) {
            return Err(ParamError::out_of_range("holdout_weeks", "between 1 and 52", self.holdout_weeks));
        }
        non_negative("keep_days", self.keep_days)?;
        non_negative("capture_keep_days", self.capture_keep_days)?;
        non_negative("trend_keep_days", self.trend_keep_days)
    }
}

/// The drift check's numbers and verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Weeks scored: new weeks the production run was not trained on.
    pub weeks: Vec<i64>,
    /// The production run's log-loss on them.
    pub logloss: f64,
    /// Its log-loss on the week held out from it, recorded when it was promoted.
    pub reference_logloss: Option<f64>,
    pub shift: InputShift,
    pub drifted: bool,
    /// Which thresholds were crossed, in words.
    pub reasons: Vec<String>,
    /// What the numbers are compared with (absent in records from before it,
    /// which then read and write back unchanged).
    #[serde(default, skip_serializing_if = "DriftBasis::is_unknown")]
    pub basis: DriftBasis,
}

/// What a drift check compares against, so that its numbers say what they mean.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftBasis {
    /// The rows production was scored on at promotion (`reference_logloss`):
    /// for a first run from too few weeks, held-out keywords of the weeks it
    /// trained on, which flatters it against later weeks.
    pub logloss_on: Option<EvalSource>,
    /// The rows the new inputs are compared with, in words.
    pub inputs: String,
}

impl DriftBasis {
    /// A record from before the basis was recorded.
    pub fn is_unknown(&self) -> bool {
        self.logloss_on.is_none() && self.inputs.is_empty()
    }
}

/// Compares the production run's score on new weeks with its score at promotion,
/// and the new inputs with what it was trained on.
pub fn drift(
    weeks: Vec<i64>,
    scored: &Metrics,
    reference_logloss: Option<f64>,
    shift: InputShift,
    basis: DriftBasis,
    thresholds: &DriftThresholds,
) -> DriftReport {
    let mut reasons = Vec::new();
    if let Some(reference) = reference_logloss {
        let increase = scored.logloss - reference;
        if increase > thresholds.max_logloss_increase {
            let on = match basis.logloss_on {
                Some(EvalSource::Holdout) => " (its log-loss at promotion is on held-out keywords, not later weeks)",
                _ => "",
            };
            reasons.push(format!(
                "log-loss rose by {increase:.5} (from {reference:.5} to {:.5}; the limit is {}){on}",
                scored.logloss, thresholds.max_logloss_increase
            ));
        }
    }
    if shift.unseen_keyword_share > thresholds.max_unseen_keyword_share {
        reasons.push(format!(
            "{:.1}% of the new rows are keywords never seen (the limit is {:.1}%)",
            shift.unseen_keyword_share * 100.0,
            thresholds.max_unseen_keyword_share * 100.0
        ));
    }
    if shift.device_psi > thresholds.max_psi {
        reasons.push(format!("device mix PSI {:.3} (the limit is {})", shift.device_psi, thresholds.max_psi));
    }
    if let Some(worst) = shift.attribute_psi.first().filter(|a| a.psi > thresholds.max_psi) {
        reasons.push(format!("{} PSI {:.3} (the limit is {})", worst.attribute, worst.psi, thresholds.max_psi));
    }
    DriftReport {
        weeks,
        logloss: scored.logloss,
        reference_logloss,
        shift,
        drifted: !reasons.is_empty(),
        reasons,
        basis,
    }
}

/// Where a live check puts a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftLevel {
    /// Every number under `watch_psi` and its limits (or too few rows to judge).
    Quiet,
    /// A PSI of `watch_psi` or more: reported, no action.
    Watch,
    /// A limit crossed: drift, which `retrain: drift` acts on.
    Drift,
}

impl DriftLevel {
    /// Its name as records store it.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftLevel::Quiet => "quiet",
            DriftLevel::Watch => "watch",
            DriftLevel::Drift => "drift",
        }
    }
}

/// Production's answers joined with labelled rows that arrived after it was
/// promoted, by (entity_id, device): its latest captured answer for each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelledLive {
    /// Labelled rows that found a captured answer.
    pub rows: usize,
    pub clicks: f64,
    /// The weeks of the labelled rows.
    pub weeks: Vec<i64>,
    /// Click-weighted log-loss of the captured answers on the labels.
    pub logloss: f64,
    /// Predicted conversions over observed ones (1 is calibrated).
    pub calibration: f64,
    /// Production's log-loss at promotion.
    pub reference_logloss: Option<f64>,
}

/// What production served since it was promoted, against what it learnt from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveDriftReport {
    /// Captured rows compared.
    pub rows: usize,
    pub shift: InputShift,
    /// PSI of the captured answers against production's rates on the rows it learnt from.
    pub prediction_psi: f64,
    pub labelled: Option<LabelledLive>,
    pub level: DriftLevel,
    /// Which thresholds were crossed (or reached `watch_psi`), in words.
    pub reasons: Vec<String>,
    /// The rows the live ones are compared with, in words.
    pub basis: String,
    /// The thresholds it was judged by (absent in records from before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<DriftThresholds>,
}

/// Judges production's live traffic: its inputs' and answers' shift (when
/// there are `min_live_rows`) and its log-loss on labels that came later.
pub fn live_drift(
    rows: usize,
    shift: InputShift,
    prediction_psi: f64,
    labelled: Option<LabelledLive>,
    basis: String,
    thresholds: &DriftThresholds,
) -> LiveDriftReport {
    let (mut drift, mut watch) = (Vec::new(), Vec::new());
    if rows >= thresholds.min_live_rows {
        let mut psis = vec![("device mix", shift.device_psi), ("predicted rate", prediction_psi)];
        if let Some(worst) = shift.attribute_psi.first() {
            psis.push((worst.attribute.as_str(), worst.psi));
        }
        for (name, value) in psis {
            if value > thresholds.max_psi {
                drift.push(format!("live {name} PSI {value:.3} (the limit is {})", thresholds.max_psi));
            } else if value >= thresholds.watch_psi {
                watch.push(format!("live {name} PSI {value:.3} (watch from {})", thresholds.watch_psi));
            }
        }
        if shift.unseen_keyword_share > thresholds.max_unseen_keyword_share {
            drift.push(format!(
                "{:.1}% of the live rows are keywords never seen (the limit is {:.1}%)",
                shift.unseen_keyword_share * 100.0,
                thresholds.max_unseen_keyword_share * 100.0
            ));
        }
    }
    if let Some(labelled) = &labelled
        && let Some(reference) = labelled.reference_logloss
        && labelled.logloss - reference > thresholds.max_logloss_increase
    {
        drift.push(format!(
            "live log-loss {:.5} on labels that came later, {:.5} over {reference:.5} at promotion (the limit is {})",
            labelled.logloss,
            labelled.logloss - reference,
            thresholds.max_logloss_increase
        ));
    }
    let level = if !drift.is_empty() {
        DriftLevel::Drift
    } else if !watch.is_empty() {
        DriftLevel::Watch
    } else {
        DriftLevel::Quiet
    };
    drift.extend(watch);
    LiveDriftReport {
        rows,
        shift,
        prediction_psi,
        labelled,
        level,
        reasons: drift,
        basis,
        thresholds: Some(thresholds.clone()),
    }
}

/// Champion and challenger, and the baselines, scored on the same held-out rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateScores {
    pub challenger: Metrics,
    /// `None` while the version has no production run.
    pub champion: Option<Metrics>,
    pub device_baseline: Metrics,
    pub global_baseline: Metrics,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    pub passed: bool,
    pub reason: String,
}

/// The gate: the challenger must beat the baselines (ties count: v0 *is* the
/// device baseline) and, when there is a champion, beat it by `margin` on
/// click-weighted log-loss.
pub fn gate(scores: &GateScores, margin: f64) -> GateDecision {
    let challenger = scores.challenger.logloss;
    for (name, baseline) in [("device", &scores.device_baseline), ("global", &scores.global_baseline)] {
        if challenger > baseline.logloss {
            return GateDecision {
                passed: false,
                reason: format!("log-loss {challenger:.5} is worse than the {name} baseline's {:.5}", baseline.logloss),
            };
        }
    }
    match &scores.champion {
        None => GateDecision {
            passed: true,
            reason: format!("first production run: log-loss {challenger:.5}, not worse than the baselines"),
        },
        Some(champion) if challenger <= champion.logloss - margin => GateDecision {
            passed: true,
            reason: format!(
                "log-loss {challenger:.5} beats the champion's {:.5} by {:.5} (margin {margin})",
                champion.logloss,
                champion.logloss - challenger
            ),
        },
        Some(champion) => GateDecision {
            passed: false,
            reason: format!(
                "log-loss {challenger:.5} does not beat the champion's {:.5} by the margin {margin}",
                champion.logloss
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(logloss: f64) -> Metrics {
        Metrics { logloss, ..Metrics::default() }
    }

    #[test]
    fn defaults_and_bad_keys() {
        assert_eq!(LifecycleConfig::parse("l.yaml", None).unwrap(), LifecycleConfig::default());
        assert_eq!(LifecycleConfig::parse("l.yaml", Some("# nothing\n")).unwrap(), LifecycleConfig::default());
        let config =
            LifecycleConfig::parse("l.yaml", Some("retrain: drift\npromotion: manual\ndrift:\n  max_psi: 0.1\n"))
                .unwrap();
        assert_eq!((config.retrain, config.promotion, config.drift.max_psi), (Retrain::Drift, Promotion::Manual, 0.1));
        let err = LifecycleConfig::parse("l.yaml", Some("retrian: drift\n")).unwrap_err().to_string();
        assert!(err.starts_with("l.yaml: unknown field `retrian`"), "{err}");
        let err = LifecycleConfig::parse("l.yaml", Some("margin: -1\n")).unwrap_err().to_string();
        assert!(err.contains("'margin' must be a number of at least 0"), "{err}");
        let err = LifecycleConfig::parse("l.yaml", Some("drift:\n  max_unseen_keyword_share: 2\n")).unwrap_err();
        assert!(err.to_string().contains("drift.max_unseen_keyword_share"), "{err}");
    }

    #[test]
    fn a_rise_over_a_keyword_holdout_score_says_what_it_is_measured_against() {
        let shift =
            InputShift { unseen_keyword_share: 0.0, device_mix: vec![], device_psi: 0.0, attribute_psi: vec![] };
        let on = |source| DriftBasis { logloss_on: Some(source), inputs: "weeks [1]".to_owned() };
        let thresholds = DriftThresholds::default();
        let report = drift(vec![2], &metrics(0.30), Some(0.25), shift.clone(), on(EvalSource::Holdout), &thresholds);
        assert!(report.drifted, "{report:?}");
        assert!(report.reasons[0].ends_with("(its log-loss at promotion is on held-out keywords, not later weeks)"));
        let report = drift(vec![2], &metrics(0.30), Some(0.25), shift, on(EvalSource::NewestWeeks), &thresholds);
        assert!(report.drifted && !report.reasons[0].contains("held-out keywords"), "{report:?}");
        assert_eq!(serde_json::to_value(&report.basis).unwrap()["logloss_on"], "newest_weeks");
    }

    #[test]
    fn live_traffic_is_judged_with_enough_rows_watched_from_watch_psi_and_drifts_past_max_psi() {
        let shift = |device_psi| InputShift {
            unseen_keyword_share: 0.0,
            device_mix: vec![],
            device_psi,
            attribute_psi: vec![],
        };
        let thresholds = DriftThresholds::default();
        let level = |rows, psi| live_drift(rows, shift(psi), 0.0, None, String::new(), &thresholds).level;
        assert_eq!(level(199, 5.0), DriftLevel::Quiet, "too few rows to judge");
        assert_eq!(level(200, 0.05), DriftLevel::Quiet);
        assert_eq!(level(200, 0.15), DriftLevel::Watch);
        let drifted = live_drift(200, shift(0.3), 0.12, None, String::new(), &thresholds);
        assert_eq!(drifted.level, DriftLevel::Drift);
        assert_eq!(drifted.reasons.len(), 2, "the drift, then the watch: {drifted:?}");
        let labelled = LabelledLive {
            rows: 10,
            clicks: 100.0,
            weeks: vec![2],
            logloss: 0.3,
            calibration: 1.0,
            reference_logloss: Some(0.25),
        };
        let late = live_drift(10, shift(0.0), 0.0, Some(labelled), String::new(), &thresholds);
        assert_eq!(late.level, DriftLevel::Drift, "labels judge whatever the row count: {late:?}");
    }

    #[test]
    fn the_gate_wants_the_baselines_beaten_or_tied_and_the_champion_beaten_by_the_margin() {
        let scores = |challenger: f64, champion: Option<f64>| GateScores {
            challenger: metrics(challenger),
            champion: champion.map(metrics),
            device_baseline: metrics(0.22),
            global_baseline: metrics(0.23),
        };
        assert!(gate(&scores(0.22, None), 0.001).passed, "a tie with the device baseline counts");
        assert!(!gate(&scores(0.221, None), 0.001).passed);
        assert!(gate(&scores(0.210, Some(0.212)), 0.001).passed);
        let held = gate(&scores(0.2115, Some(0.212)), 0.001);
        assert!(!held.passed && held.reason.contains("does not beat the champion"), "{held:?}");
    }
}
