//! v2's saved model: the trees as plain node arrays with the search record,
//! checked when read, and predicted through the [`Forest`] built from them.

use serde::{Deserialize, Serialize};

use super::params::Point;
use crate::features::Features;
use crate::models::Predictor;
use crate::models::forest::{self, Forest, Link, Precision, Settings};

/// How one grid point did in cross-validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointScore {
    pub values: Point,
    /// Trees chosen: where the mean validation log-loss over the folds is lowest.
    pub trees: usize,
    pub mean_logloss: f64,
    pub folds: Vec<FoldScore>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldScore {
    /// Trees grown before early stopping ended the fold.
    pub trees_grown: usize,
    /// Trees where this fold alone had its lowest validation log-loss.
    pub best_trees: usize,
    /// Validation log-loss per click at the point's chosen tree count.
    pub logloss: f64,
}

/// The record of the hyperparameter search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Search {
    pub folds: usize,
    pub keywords: usize,
    pub points: Vec<PointScore>,
    /// Index into `points` of the values the model was refitted with.
    pub chosen: usize,
}

/// A node of a saved tree. Children point forward in the tree's node array
/// (the root is node 0), so a split has `left` and `right` above its own index
/// and a leaf has both 0. A row goes left when its feature value is below
/// `threshold`. `value` is the leaf's log-odds contribution (0 on splits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub feature: usize,
    pub threshold: f64,
    pub left: usize,
    pub right: usize,
    pub value: f64,
}

impl Node {
    pub fn is_leaf(&self) -> bool {
        self.left == 0 && self.right == 0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// The saved form of a v2 model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoosterData {
    /// Matrix columns the model was trained on.
    pub n_features: usize,
    /// Log-odds every prediction starts from.
    pub base_score: f64,
    pub trees: Vec<Tree>,
    /// Total split gain per matrix column.
    pub total_gain: Vec<f64>,
    pub search: Search,
}

/// The fitted model: the saved trees plus the forest predictions run on. It is
/// (de)serialised as [`BoosterData`], and deserialising validates the trees.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "BoosterData", into = "BoosterData")]
pub struct Booster {
    data: BoosterData,
    forest: Forest,
}

impl Booster {
    pub fn data(&self) -> &BoosterData {
        &self.data
    }

    /// The forest built from the saved trees: f64 sums, logistic link.
    pub fn forest(&self) -> &Forest {
        &self.forest
    }
}

impl From<Booster> for BoosterData {
    fn from(booster: Booster) -> Self {
        booster.data
    }
}

impl TryFrom<BoosterData> for Booster {
    type Error = String;

    /// The forest checks the trees (indices in range and pointing forward, each
    /// node reached once, finite numbers, features within the model's width, at
    /// least one tree); the gains are checked here.
    fn try_from(data: BoosterData) -> Result<Self, String> {
        if data.total_gain.len() != data.n_features {
            return Err(format!("total_gain has {} entries for {} features", data.total_gain.len(), data.n_features));
        }
        if let Some(g) = data.total_gain.iter().find(|g| !g.is_finite()) {
            return Err(format!("total_gain has {g}, not a finite number"));
        }
        let trees: Vec<forest::Tree> = data.trees.iter().map(Tree::to_forest).collect();
        let settings = Settings {
            width: data.n_features,
            base_score: data.base_score,
            precision: Precision::F64,
            link: Link::Logistic,
        };
        let forest = Forest::new(&trees, settings).map_err(|e| e.to_string())?;
        Ok(Booster { data, forest })
    }
}

impl Tree {
    fn to_forest(&self) -> forest::Tree {
        let nodes = self
            .nodes
            .iter()
            .map(|n| match n.is_leaf() {
                true => forest::Node::Leaf { value: n.value },
                false => {
                    forest::Node::Split { feature: n.feature, threshold: n.threshold, left: n.left, right: n.right }
                }
            })
            .collect();
        forest::Tree { nodes }
    }
}

impl Predictor for Booster {
    /// The saved trees and the forest, both held.
    fn memory_bytes(&self) -> usize {
        let trees: usize = self.data.trees.iter().map(|t| size_of_val(t) + size_of_val(t.nodes.as_slice())).sum();
        // The forest's own size is part of `Self`.
        size_of::<Self>() + trees + size_of_val(self.data.total_gain.as_slice()) + self.forest.memory_bytes()
            - size_of::<Forest>()
    }

    fn predict(&self, features: &Features) -> Vec<f64> {
        self.forest.predict(features.matrix.view())
    }

    /// Total split gain per column, as forust measured it while growing the trees.
    fn importance(&self) -> Vec<(usize, f64)> {
        self.data.total_gain.iter().copied().enumerate().filter(|(_, gain)| *gain > 0.0).collect()
    }

    fn used_features(&self) -> Vec<usize> {
        let used: std::collections::BTreeSet<usize> =
            self.data.trees.iter().flat_map(|t| t.nodes.iter().filter(|n| !n.is_leaf()).map(|n| n.feature)).collect();
        used.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Device;

    fn sigmoid(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    fn tiny() -> BoosterData {
        let split = Node { feature: 1, threshold: 0.5, left: 1, right: 2, value: 0.0 };
        let leaf = |value| Node { feature: 0, threshold: 0.0, left: 0, right: 0, value };
        BoosterData {
            n_features: 2,
            base_score: -2.0,
            trees: vec![Tree { nodes: vec![split, leaf(-0.5), leaf(0.5)] }],
            total_gain: vec![0.0, 3.0],
            search: Search { folds: 2, keywords: 2, points: Vec::new(), chosen: 0 },
        }
    }

    #[test]
    fn a_hand_made_tree_predicts_by_its_threshold() {
        let model = Booster::try_from(tiny()).unwrap();
        let features =
            Features { matrix: ndarray::arr2(&[[0.0, 0.0], [0.0, 1.0]]), devices: vec![Device::Computer; 2] };
        assert_eq!(model.predict(&features), vec![sigmoid(-2.5), sigmoid(-1.5)]);
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        let mut data = tiny();
        data.trees[0].nodes[2].value = f64::NAN;
        assert_eq!(Booster::try_from(data).unwrap_err(), "tree 0 node 2: leaf value NaN is not a finite number");
        let mut data = tiny();
        data.trees[0].nodes[0].threshold = f64::INFINITY;
        assert_eq!(Booster::try_from(data).unwrap_err(), "tree 0 node 0: threshold inf is not a finite number");
        let mut data = tiny();
        data.base_score = f64::NAN;
        assert_eq!(Booster::try_from(data).unwrap_err(), "base_score is NaN, not a finite number");
        let mut data = tiny();
        data.total_gain.pop();
        assert_eq!(Booster::try_from(data).unwrap_err(), "total_gain has 1 entries for 2 features");
    }

    #[test]
    fn memory_counts_the_saved_trees_and_the_forest() {
        let one = Booster::try_from(tiny()).unwrap();
        let mut data = tiny();
        data.trees = vec![data.trees[0].clone(); 50];
        let fifty = Booster::try_from(data).unwrap();
        let saved_node = size_of::<Node>();
        // Each more tree: its three saved nodes and at least its two f64 leaves.
        assert!(fifty.memory_bytes() - one.memory_bytes() >= 49 * (3 * saved_node + 16));
    }
}
