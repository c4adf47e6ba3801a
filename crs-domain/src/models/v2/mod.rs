//! v2: gradient-boosted trees on the binomial log-loss of the rate, grown by
//! forust-ml. Each row's target is its observed rate and its weight its clicks,
//! so the loss is the click-weighted log-loss of the conversions.
//!
//! Every tuning key may be one value or a list (a grid). Each grid point is
//! scored by cross-validation with folds grouped by keyword, the number of
//! trees chosen by early stopping on the validation folds; the best point is
//! then refitted on every row with the tree count it chose.
//!
//! The trees are saved as plain node arrays (validated on load) and predicted
//! by the [`crate::models::forest`] built from them when the model is made, not
//! with forust.
//!
//! - `params`: the hyperparameters, their grid and range checks;
//! - `search`: the keyword-grouped folds and the search over the grid;
//! - `forust`: one forust fit, and its trees converted to the saved form;
//! - `booster`: the saved form, its checks, and prediction through the forest.

mod booster;
mod forust;
mod params;
mod search;

use std::collections::HashSet;

pub use booster::{Booster, BoosterData, FoldScore, Node, PointScore, Search, Tree};
pub use params::{Grid, Params, Point};

use super::{FitError, ModelVersion, ParamError, Progress, TrainingSet};
use forust::{Rows, convert, fit_booster};

#[derive(Debug)]
pub struct V2;

impl ModelVersion for V2 {
    const NAME: &'static str = "v2";
    const SUMMARY: &'static str =
        "gradient-boosted trees on the click-weighted log-loss (forust-ml), tuned by keyword-grouped cross-validation";
    type Params = Params;
    type Fitted = Booster;

    fn check(p: &Params) -> Result<(), ParamError> {
        params::check(p)
    }

    fn fit(p: &Params, data: &TrainingSet, progress: &mut dyn FnMut(Progress)) -> Result<Booster, FitError> {
        let rows = Rows::new(data)?;
        let (points, chosen) = search::search(p, &rows, progress)?;
        let trees = points[chosen].trees;
        progress(Progress::Refit { point: chosen + 1, trees });
        let all: Vec<usize> = (0..rows.len()).collect();
        let booster = fit_booster(p, &points[chosen].values, &rows, &all, trees, None, true)?;
        let keywords = data.groups.iter().collect::<HashSet<_>>().len();
        let search = Search { folds: p.folds, keywords, points, chosen };
        let data = convert(&booster, rows.cols, search)?;
        Booster::try_from(data).map_err(|e| FitError::Library(format!("forust produced an unusable tree: {e}")))
    }

    /// The search: every grid point with its folds' scores, and the one chosen.
    fn report(fitted: &Booster, _feature_names: &[String]) -> serde_json::Value {
        let data = fitted.data();
        serde_json::json!({
            "trees": data.trees.len(),
            "chosen": data.search.points[data.search.chosen].values,
            "search": data.search,
        })
    }

    fn validate(fitted: &Booster, n_features: usize) -> Result<(), String> {
        if fitted.data().n_features != n_features {
            return Err(format!(
                "the model was trained on {} features, its pipeline has {n_features}",
                fitted.data().n_features
            ));
        }
        Ok(())
    }
}
