//! Imported versions: models trained in Python by xgboost or lightgbm, saved
//! by the library itself, and converted at import into the platform's own
//! [`forest`](crate::models::forest), which then predicts them as it predicts v2.
//!
//! A version is declared for imports in a bucket (`config/<ver>/model.yaml`,
//! `framework: xgboost` or `framework: lightgbm`); [`Imported`] is the
//! registry's face of such a version: it has no hyperparameters and no fit, and
//! loads the converted model ([`ImportedModel`]) from a run's artifact.
//!
//! [`import`] reads the library's file (`xgboost.rs`: its JSON or UBJSON;
//! `lightgbm.rs`: its text format), maps the model's feature names onto the data
//! contract ([`FeaturePipeline::from_names`]), and converts its trees exactly:
//!
//! - xgboost sends a row left when `x < threshold`, as the forest does; it adds
//!   the base score and the leaves in float32 in tree order and applies its
//!   float sigmoid, which [`Precision::F32`] and [`Link::Logistic`] reproduce bit
//!   for bit. Its `base_score` is stored as a probability for the logistic
//!   objectives and turned into a margin as xgboost does (`-ln(1/b - 1)` in float32).
//! - lightgbm sends a row left when `x <= threshold`: the forest's threshold is
//!   the next double above it, which decides every input the same way. Its sums
//!   are in f64 from 0 (the boost-from-average score is already in the first
//!   tree's leaves, and each tree's leaves already carry its `shrinkage`). A split
//!   whose missing values are zeros (`zero_as_missing`) sends a 0 the default way:
//!   since every input is a non-negative integer (0/1 attributes, device codes
//!   0..2), that is one more split at 0.5 in front of it.
//! - Inputs are never missing (a row has every column), so the default
//!   directions of NaN are never taken, as in xgboost's dense input with
//!   `missing=NaN`. Neither library keeps a training `base_margin`/`init_score`
//!   in the model, and neither do imported runs: predictions are without it,
//!   as the library's own `predict` is.
//!
//! Regression objectives predict the margin itself, clipped to [0, 1]: a rate.

mod lightgbm;
mod ubjson;
mod xgboost;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::forest::{self, Forest, ForestError, Link, Precision, Settings};
use super::template::{FitError, FittedModel, ParamError, Predictor, Progress, RegisteredVersion, TrainingSet};
use crate::features::{FeatureNameError, FeaturePipeline, Features};

/// The library an imported version's model files come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    Xgboost,
    Lightgbm,
}

impl Framework {
    pub const ALL: [Framework; 2] = [Framework::Xgboost, Framework::Lightgbm];

    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Xgboost => "xgboost",
            Framework::Lightgbm => "lightgbm",
        }
    }

    /// The file name an imported model of this library is kept under in its run.
    pub fn file_name(self, ubjson: bool) -> &'static str {
        match (self, ubjson) {
            (Framework::Xgboost, false) => "imported.json",
            (Framework::Xgboost, true) => "imported.ubj",
            (Framework::Lightgbm, _) => "imported.txt",
        }
    }
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Framework {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Framework::ALL
            .into_iter()
            .find(|f| f.as_str() == text)
            .ok_or_else(|| format!("unknown framework {text:?} (expected xgboost or lightgbm)"))
    }
}

/// Why a model file cannot be imported. Each names what it refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    #[error("not a {framework} model file: {reason}")]
    Unreadable { framework: Framework, reason: String },
    #[error("{framework} model format version {found} is not supported (this build reads {supported})")]
    FormatVersion { framework: Framework, found: String, supported: &'static str },
    #[error(
        "the model has no feature names: the platform matches features by name (att<k>, device, device=Computer, ...); fit it on a DataFrame with those columns, or give feature_names"
    )]
    NoFeatureNames,
    #[error(transparent)]
    FeatureName(#[from] FeatureNameError),
    #[error("{framework} objective {objective} is not supported (supported: {supported})")]
    Objective { framework: Framework, objective: String, supported: &'static str },
    #[error(
        "objective {objective} is a multi-class objective: multi-class models are not supported, the platform predicts one rate per row"
    )]
    MultiClassObjective { objective: String },
    #[error(
        "the model has {classes} classes: multi-class models are not supported, the platform predicts one rate per row"
    )]
    MultiClass { classes: usize },
    #[error(
        "the model has {targets} targets: multi-output models are not supported, the platform predicts one rate per row"
    )]
    MultiTarget { targets: usize },
    #[error(
        "objective {objective} is a ranking objective: ranking models are not supported, the platform predicts a rate per row"
    )]
    Ranking { objective: String },
    #[error(
        "tree {tree} node {node} is a categorical split: categorical splits are not supported (give categories as the data contract's 0/1 attributes or the device code)"
    )]
    CategoricalSplit { tree: usize, node: usize },
    #[error(
        "feature {index} '{name}' is categorical: categorical features are not supported (give categories as the data contract's 0/1 attributes or the device code)"
    )]
    CategoricalFeature { index: usize, name: String },
    #[error(
        "tree {tree} is a linear tree (linear_tree): linear trees are not supported, only trees with constant leaves"
    )]
    LinearTree { tree: usize },
    #[error("the booster is {booster}: only tree boosters (gbtree) are supported")]
    Booster { booster: String },
    #[error("the model averages its trees (random forest mode, average_output): not supported")]
    AverageOutput,
    #[error("tree {tree} node {node}: threshold {threshold} is not a finite number")]
    Threshold { tree: usize, node: usize, threshold: f64 },
    #[error("base_score {0} is not a usable base score for this objective")]
    BaseScore(String),
    #[error("tree {tree}: {problem}")]
    Tree { tree: usize, problem: String },
    #[error("{0}")]
    Structure(String),
    #[error("the model has no trees")]
    NoTrees,
    #[error(transparent)]
    Forest(#[from] ForestError),
}

/// What the library's file said about the model, kept with the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub framework: Framework,
    /// The file's format: xgboost's writing version (`3.2.0`), lightgbm's text format (`v4`).
    pub format: String,
    /// `json` or `ubjson` (xgboost), `text` (lightgbm).
    pub encoding: String,
    /// As the file names it, with its parameters (`binary sigmoid:1`).
    pub objective: String,
    /// The base score as the file stores it (xgboost's is a probability for logistic objectives).
    pub base_score: Option<String>,
    pub trees: usize,
    /// Deepest tree, in splits, after conversion.
    pub max_depth: usize,
    pub feature_names: Vec<String>,
}

/// An imported model as its run's artifact keeps it: the converted trees,
/// how they add up, and where they came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedData {
    pub source: Source,
    /// Matrix columns: the model's features.
    pub width: usize,
    pub base_score: f64,
    pub precision: Precision,
    pub link: Link,
    /// The library's split gain per matrix column (xgboost `loss_changes`, lightgbm `split_gain`).
    pub total_gain: Vec<f64>,
    pub trees: Vec<forest::Tree>,
}

/// An imported model: the saved trees and the forest built from them. It is
/// (de)serialised as [`ImportedData`], and deserialising validates it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "ImportedData", into = "ImportedData")]
pub struct ImportedModel {
    data: ImportedData,
    forest: Forest,
}

impl ImportedModel {
    pub fn data(&self) -> &ImportedData {
        &self.data
    }

    pub fn forest(&self) -> &Forest {
        &self.forest
    }
}

impl From<ImportedModel> for ImportedData {
    fn from(model: ImportedModel) -> Self {
        model.data
    }
}

impl TryFrom<ImportedData> for ImportedModel {
    type Error = String;

    fn try_from(data: ImportedData) -> Result<Self, String> {
        if data.total_gain.len() != data.width {
            return Err(format!("total_gain has {} entries for {} features", data.total_gain.len(), data.width));
        }
        if let Some(g) = data.total_gain.iter().find(|g| !g.is_finite()) {
            return Err(format!("total_gain has {g}, not a finite number"));
        }
        let settings =
            Settings { width: data.width, base_score: data.base_score, precision: data.precision, link: data.link };
        let forest = Forest::new(&data.trees, settings).map_err(|e| e.to_string())?;
        Ok(ImportedModel { data, forest })
    }
}

impl Predictor for ImportedModel {
    fn predict(&self, features: &Features) -> Vec<f64> {
        self.forest.predict(features.matrix.view())
    }

    fn used_features(&self) -> Vec<usize> {
        let used: BTreeSet<usize> = self
            .data
            .trees
            .iter()
            .flat_map(|t| t.nodes.iter())
            .filter_map(|n| match n {
                forest::Node::Split { feature, .. } => Some(*feature),
                forest::Node::Leaf { .. } => None,
            })
            .collect();
        used.into_iter().collect()
    }

    /// The library's total split gain per column.
    fn importance(&self) -> Vec<(usize, f64)> {
        self.data.total_gain.iter().copied().enumerate().filter(|(_, gain)| *gain > 0.0).collect()
    }

    /// The saved trees and the forest, both held.
    fn memory_bytes(&self) -> usize {
        let trees: usize =
            self.data.trees.iter().map(|t| size_of_val(t) + size_of_val(t.nodes.as_slice())).sum::<usize>();
        size_of::<Self>() + trees + size_of_val(self.data.total_gain.as_slice()) + self.forest.memory_bytes()
            - size_of::<Forest>()
    }
}

/// An imported file, converted: the pipeline its feature names make and the model.
#[derive(Debug)]
pub struct Conversion {
    pub features: FeaturePipeline,
    pub model: ImportedModel,
}

/// Reads `bytes` as a model file of `framework` and converts it exactly, or
/// says what in it cannot be served.
pub fn import(framework: Framework, bytes: &[u8]) -> Result<Conversion, ImportError> {
    let parsed = match framework {
        Framework::Xgboost => xgboost::parse(bytes)?,
        Framework::Lightgbm => lightgbm::parse(bytes)?,
    };
    let features = FeaturePipeline::from_names(&parsed.feature_names)?;
    let width = parsed.feature_names.len();
    let mut total_gain = vec![0.0; width];
    let mut trees = Vec::with_capacity(parsed.trees.len());
    for (t, tree) in parsed.trees.iter().enumerate() {
        for node in &tree.nodes {
            if let SourceNode::Split { feature, gain, .. } = node
                && let Some(total) = total_gain.get_mut(*feature)
                && gain.is_finite()
            {
                *total += gain;
            }
        }
        trees.push(emit(t, tree)?);
    }
    if trees.is_empty() {
        return Err(ImportError::NoTrees);
    }
    let max_depth = trees.iter().map(depth).max().unwrap_or(0);
    let source = Source { trees: trees.len(), max_depth, feature_names: parsed.feature_names.clone(), ..parsed.source };
    let data = ImportedData {
        source,
        width,
        base_score: parsed.base_score,
        precision: parsed.precision,
        link: parsed.link,
        total_gain,
        trees,
    };
    let settings =
        Settings { width: data.width, base_score: data.base_score, precision: data.precision, link: data.link };
    let forest = Forest::new(&data.trees, settings)?;
    Ok(Conversion { features, model: ImportedModel { data, forest } })
}

/// A library's model as its file gives it, before conversion.
struct Parsed {
    feature_names: Vec<String>,
    trees: Vec<SourceTree>,
    base_score: f64,
    precision: Precision,
    link: Link,
    /// Filled in but for the counts [`import`] works out.
    source: Source,
}

/// A tree in the library's own node numbering: node 0 is the root.
struct SourceTree {
    nodes: Vec<SourceNode>,
}

#[derive(Clone, Copy, Debug)]
enum SourceNode {
    Leaf { value: f64 },
    Split { feature: usize, rule: Rule, left: usize, right: usize, gain: f64 },
}

/// How a split of the source library decides, for inputs that are never missing.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// Left when `x < threshold` (xgboost, and the forest itself).
    LeftBelow(f64),
    /// Left when `x <= threshold` (lightgbm).
    LeftAtMost(f64),
    /// lightgbm's zero-as-missing: a 0 goes left when `default_left`, else
    /// right; any other value goes left when `x <= threshold`.
    ZeroDefault { threshold: f64, default_left: bool },
}

/// Most nodes one converted tree may have: conversion copies a subtree only
/// for zero-as-missing splits whose zeros go against their threshold.
const MAX_TREE_NODES: usize = 1 << 22;

/// What a node of the converted tree stands for, before it is written.
#[derive(Clone, Copy)]
enum Pending {
    /// Source node `i`.
    Node(usize),
    /// The non-zero half of a zero-default split at source node `i`.
    NonZero(usize),
}

/// Converts one source tree into the forest's form: children after their
/// parent (breadth first), each split a `x >= threshold` goes right.
fn emit(t: usize, tree: &SourceTree) -> Result<forest::Tree, ImportError> {
    let n = tree.nodes.len();
    if n == 0 {
        return Err(ImportError::Tree { tree: t, problem: "it has no nodes".to_owned() });
    }
    // A tree: every node but the root reached from exactly one split.
    let mut parents = vec![0usize; n];
    for (i, node) in tree.nodes.iter().enumerate() {
        if let SourceNode::Split { left, right, rule, .. } = *node {
            for child in [left, right] {
                if child >= n || child == 0 {
                    let problem = format!("node {i} has child {child}, outside the tree's {n} nodes");
                    return Err(ImportError::Tree { tree: t, problem });
                }
                parents[child] += 1;
            }
            let threshold = match rule {
                Rule::LeftBelow(x) | Rule::LeftAtMost(x) | Rule::ZeroDefault { threshold: x, .. } => x,
            };
            if !threshold.is_finite() {
                return Err(ImportError::Threshold { tree: t, node: i, threshold });
            }
        }
    }
    if let Some(i) = (1..n).find(|&i| parents[i] != 1) {
        let problem = format!("node {i} is reached from {} splits, not one", parents[i]);
        return Err(ImportError::Tree { tree: t, problem });
    }
    let mut nodes = vec![forest::Node::Leaf { value: 0.0 }];
    let mut queue = std::collections::VecDeque::from([(Pending::Node(0), 0usize)]);
    while let Some((pending, at)) = queue.pop_front() {
        if nodes.len() > MAX_TREE_NODES {
            let problem = format!("more than {MAX_TREE_NODES} nodes once converted");
            return Err(ImportError::Tree { tree: t, problem });
        }
        let (feature, threshold, left, right) = match (pending, tree.nodes[index_of(pending)]) {
            (Pending::Node(_), SourceNode::Leaf { value }) => {
                nodes[at] = forest::Node::Leaf { value };
                continue;
            }
            (Pending::Node(_), SourceNode::Split { feature, rule: Rule::LeftBelow(x), left, right, .. }) => {
                (feature, x, Pending::Node(left), Pending::Node(right))
            }
            (Pending::Node(_), SourceNode::Split { feature, rule: Rule::LeftAtMost(x), left, right, .. }) => {
                (feature, x.next_up(), Pending::Node(left), Pending::Node(right))
            }
            (
                Pending::Node(i),
                SourceNode::Split { feature, rule: Rule::ZeroDefault { threshold, default_left }, left, right, .. },
            ) => {
                // Inputs are non-negative integers: 0 is `x < 0.5`.
                let zero_goes_left = 0.0 <= threshold;
                let others_can_go_left = threshold >= 1.0;
                match (default_left == zero_goes_left, others_can_go_left) {
                    // Zeros go where the threshold sends them anyway.
                    (true, _) => (feature, threshold.next_up(), Pending::Node(left), Pending::Node(right)),
                    // Zeros go right against the threshold, and so does every other value.
                    (false, false) if !default_left => {
                        queue.push_front((Pending::Node(right), at));
                        continue;
                    }
                    // Zeros go left, every other value right (threshold below 0).
                    (false, false) => (feature, 0.5, Pending::Node(left), Pending::Node(right)),
                    // Zeros go right; others by the threshold.
                    (false, true) => (feature, 0.5, Pending::Node(right), Pending::NonZero(i)),
                }
            }
            (Pending::NonZero(_), SourceNode::Split { feature, rule, left, right, .. }) => {
                let threshold = match rule {
                    Rule::LeftBelow(x) => x,
                    Rule::LeftAtMost(x) | Rule::ZeroDefault { threshold: x, .. } => x.next_up(),
                };
                (feature, threshold, Pending::Node(left), Pending::Node(right))
            }
            (Pending::NonZero(_), SourceNode::Leaf { .. }) => unreachable!("only splits have a non-zero half"),
        };
        let children = nodes.len();
        nodes.push(forest::Node::Leaf { value: 0.0 });
        nodes.push(forest::Node::Leaf { value: 0.0 });
        nodes[at] = forest::Node::Split { feature, threshold, left: children, right: children + 1 };
        queue.push_back((left, children));
        queue.push_back((right, children + 1));
    }
    Ok(forest::Tree { nodes })
}

fn index_of(pending: Pending) -> usize {
    match pending {
        Pending::Node(i) | Pending::NonZero(i) => i,
    }
}

/// Splits on the longest path from the root of a converted tree.
fn depth(tree: &forest::Tree) -> usize {
    let mut depths = vec![0usize; tree.nodes.len()];
    for (i, node) in tree.nodes.iter().enumerate() {
        if let forest::Node::Split { left, right, .. } = *node {
            depths[left] = depths[i] + 1;
            depths[right] = depths[i] + 1;
        }
    }
    depths.into_iter().max().unwrap_or(0)
}

/// An imported version as the registry sees it: named by its bucket's
/// declaration, with no hyperparameters and no fit of its own.
#[derive(Debug)]
pub struct Imported {
    name: &'static str,
}

impl Imported {
    pub(super) fn new(name: &'static str) -> Self {
        Imported { name }
    }
}

impl RegisteredVersion for Imported {
    fn name(&self) -> &'static str {
        self.name
    }

    fn summary(&self) -> &'static str {
        "imported: an xgboost or lightgbm model file, converted into the platform's forest"
    }

    fn params(&self, file: &str, _yaml: Option<&str>) -> Result<serde_json::Value, ParamError> {
        Err(ParamError::Invalid { file: file.to_owned(), message: not_trained(self.name) })
    }

    fn fit(
        &self,
        _params: &serde_json::Value,
        _data: &TrainingSet,
        _progress: &mut dyn FnMut(Progress),
    ) -> Result<Box<dyn FittedModel>, FitError> {
        Err(FitError::Library(not_trained(self.name)))
    }

    fn load(&self, model: serde_json::Value, width: usize) -> Result<Box<dyn FittedModel>, String> {
        let model: ImportedModel = serde_json::from_value(model).map_err(|e| format!("not an imported model: {e}"))?;
        if model.data.width != width {
            return Err(format!("the model reads {} features, its pipeline has {width}", model.data.width));
        }
        Ok(Box::new(LoadedImport(model)))
    }

    fn imported(&self) -> bool {
        true
    }
}

/// What the services say when asked to train an imported version.
pub fn not_trained(name: &str) -> String {
    format!("model version {name} is imported, not trained here: import a new model file (crctl import) instead")
}

/// A loaded imported model as the services hold it.
#[derive(Debug)]
struct LoadedImport(ImportedModel);

impl FittedModel for LoadedImport {
    fn predict(&self, features: &Features) -> Vec<f64> {
        self.0.predict(features)
    }

    fn used_features(&self) -> Vec<usize> {
        self.0.used_features()
    }

    fn importance(&self) -> Vec<(usize, f64)> {
        self.0.importance()
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("imported models are plain serde data")
    }

    fn report(&self, _feature_names: &[String]) -> serde_json::Value {
        serde_json::to_value(&self.0.data.source).expect("the source record is plain serde data")
    }

    fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }
}

/// A converted model as a [`FittedModel`], for a [`crate::models::TrainedModel`].
pub fn fitted(model: ImportedModel) -> Box<dyn FittedModel> {
    Box::new(LoadedImport(model))
}

#[cfg(test)]
mod tests;
