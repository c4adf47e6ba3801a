//! v2's hyperparameters: each tuning key one value or a list, the grid of
//! their combinations, and the range checks.

use serde::{Deserialize, Serialize};

use crate::models::ParamError;

/// One value or a list of values to search over. Written in YAML as `0.05` or `[0.05, 0.1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Grid<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> Grid<T> {
    pub fn values(&self) -> Vec<T> {
        match self {
            Grid::One(v) => vec![v.clone()],
            Grid::Many(vs) => vs.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Step size: each tree's leaf values are scaled by it. Above 0, at most 1.
    pub learning_rate: Grid<f64>,
    /// Deepest level of splits of each tree, 1 to 12.
    pub max_depth: Grid<usize>,
    /// Smallest sum of hessians (clicks × p × (1 − p)) in a leaf, at least 0.
    pub min_leaf_weight: Grid<f64>,
    /// L2 penalty on leaf values, at least 0.
    pub l2: Grid<f64>,
    /// Share of the rows each tree is grown on, above 0, at most 1 (1: all rows).
    pub subsample: Grid<f64>,
    /// Most trees in the model, 1 to 5000: a cap the search never exceeds, to
    /// trade accuracy for prediction speed.
    pub max_trees: usize,
    /// A fold stops adding trees after this many without a better validation
    /// log-loss, 1 to 1000.
    pub early_stopping_rounds: usize,
    /// Cross-validation folds, 2 to 20, keywords assigned by a hash of the entity_id.
    pub folds: usize,
    /// Seed of the fold assignment and of the row subsamples.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            learning_rate: Grid::One(0.1),
            max_depth: Grid::Many(vec![3, 4]),
            min_leaf_weight: Grid::One(1.0),
            l2: Grid::Many(vec![5.0, 50.0]),
            subsample: Grid::One(0.7),
            max_trees: 1000,
            early_stopping_rounds: 20,
            folds: 5,
            seed: 42,
        }
    }
}

/// The values of one grid point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub learning_rate: f64,
    pub max_depth: usize,
    pub min_leaf_weight: f64,
    pub l2: f64,
    pub subsample: f64,
}

impl Params {
    /// Every combination of the listed values, the last key varying fastest.
    pub fn grid(&self) -> Vec<Point> {
        let mut points = Vec::new();
        for learning_rate in self.learning_rate.values() {
            for max_depth in self.max_depth.values() {
                for min_leaf_weight in self.min_leaf_weight.values() {
                    for l2 in self.l2.values() {
                        for subsample in self.subsample.values() {
                            points.push(Point { learning_rate, max_depth, min_leaf_weight, l2, subsample });
                        }
                    }
                }
            }
        }
        points
    }
}

/// Range checks, naming the offending key.
pub(super) fn check(p: &Params) -> Result<(), ParamError> {
    fn each<T: Clone + ToString>(
        key: &'static str,
        grid: &Grid<T>,
        expected: &'static str,
        ok: impl Fn(&T) -> bool,
    ) -> Result<(), ParamError> {
        let values = grid.values();
        if values.is_empty() {
            return Err(ParamError::out_of_range(key, "a value or a non-empty list of values", "[]"));
        }
        match values.iter().find(|v| !ok(v)) {
            Some(v) => Err(ParamError::out_of_range(key, expected, v.to_string())),
            None => Ok(()),
        }
    }
    each("learning_rate", &p.learning_rate, "above 0 and at most 1", |v| *v > 0.0 && *v <= 1.0)?;
    each("max_depth", &p.max_depth, "between 1 and 12", |v| (1..=12).contains(v))?;
    each("min_leaf_weight", &p.min_leaf_weight, "a number of at least 0", |v| *v >= 0.0 && v.is_finite())?;
    each("l2", &p.l2, "a number of at least 0", |v| *v >= 0.0 && v.is_finite())?;
    each("subsample", &p.subsample, "above 0 and at most 1", |v| *v > 0.0 && *v <= 1.0)?;
    if !(1..=5000).contains(&p.max_trees) {
        return Err(ParamError::out_of_range("max_trees", "between 1 and 5000", p.max_trees));
    }
    if !(1..=1000).contains(&p.early_stopping_rounds) {
        return Err(ParamError::out_of_range("early_stopping_rounds", "between 1 and 1000", p.early_stopping_rounds));
    }
    if !(2..=20).contains(&p.folds) {
        return Err(ParamError::out_of_range("folds", "between 2 and 20", p.folds));
    }
    Ok(())
}
