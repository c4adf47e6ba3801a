//! v1: conversion-rate regression trees grown with linfa-trees (see `tree.rs`
//! for how a classifier library grows a rate tree), optionally bagged.

use serde::{Deserialize, Serialize};

use super::tree::{GrowParams, RateTree, Sample};
use super::{FitError, ModelVersion, ParamError, Predictor, Progress, TrainingSet};
use crate::features::Features;
use crate::rng::SplitMix64;

#[derive(Debug)]
pub struct V1;

/// How a tree's splits are found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Growth {
    /// Split by split, each the best by click-weighted squared error.
    #[default]
    Exact,
    /// One linfa fit with class weights balanced; linfa prunes the splits whose
    /// children sit on the same side of the overall rate.
    Balanced,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Deepest level of splits, 1 to 30.
    pub max_depth: usize,
    /// Fewest training clicks on each side of a split, at least 1.
    pub min_leaf_clicks: f64,
    /// Pseudo-clicks at the parent's rate added to each node's rate, at least 0.
    pub shrinkage: f64,
    /// Trees averaged, 1 to 500. Above 1, each is grown on a bootstrap sample of the rows.
    pub trees: usize,
    pub growth: Growth,
    /// Seed of the bootstrap samples.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params { max_depth: 8, min_leaf_clicks: 100.0, shrinkage: 50.0, trees: 1, growth: Growth::Exact, seed: 42 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    pub trees: Vec<RateTree>,
}

impl Predictor for Forest {
    fn memory_bytes(&self) -> usize {
        size_of::<Self>() + self.trees.iter().map(|t| size_of_val(t) + size_of_val(t.nodes.as_slice())).sum::<usize>()
    }

    fn predict(&self, features: &Features) -> Vec<f64> {
        let scale = 1.0 / self.trees.len() as f64;
        features
            .matrix
            .rows()
            .into_iter()
            .map(|row| self.trees.iter().map(|t| t.predict_row(row)).sum::<f64>() * scale)
            .collect()
    }

    /// Per column, the click-weighted squared change of the rate its splits
    /// make, summed over the forest: how much of the fit each column carries.
    fn importance(&self) -> Vec<(usize, f64)> {
        let mut total = std::collections::BTreeMap::<usize, f64>::new();
        for tree in &self.trees {
            for node in &tree.nodes {
                let Some(split) = &node.split else { continue };
                let gain: f64 = [split.left, split.right]
                    .iter()
                    .map(|&child| {
                        let child = &tree.nodes[child];
                        child.clicks * (child.rate - node.rate).powi(2)
                    })
                    .sum();
                *total.entry(split.feature).or_default() += gain;
            }
        }
        total.into_iter().collect()
    }

    fn used_features(&self) -> Vec<usize> {
        let used: std::collections::BTreeSet<usize> = self
            .trees
            .iter()
            .flat_map(|t| t.nodes.iter().filter_map(|n| n.split.as_ref().map(|s| s.feature)))
            .collect();
        used.into_iter().collect()
    }
}

impl ModelVersion for V1 {
    const NAME: &'static str = "v1";
    const SUMMARY: &'static str = "click-weighted regression trees on linfa-trees, leaf rates shrunk to the parent";
    type Params = Params;
    type Fitted = Forest;

    fn check(p: &Params) -> Result<(), ParamError> {
        if !(1..=30).contains(&p.max_depth) {
            return Err(ParamError::out_of_range("max_depth", "between 1 and 30", p.max_depth));
        }
        if !(p.min_leaf_clicks >= 1.0 && p.min_leaf_clicks.is_finite()) {
            return Err(ParamError::out_of_range("min_leaf_clicks", "a number of at least 1", p.min_leaf_clicks));
        }
        if !(p.shrinkage >= 0.0 && p.shrinkage.is_finite()) {
            return Err(ParamError::out_of_range("shrinkage", "a number of at least 0", p.shrinkage));
        }
        if !(1..=500).contains(&p.trees) {
            return Err(ParamError::out_of_range("trees", "between 1 and 500", p.trees));
        }
        Ok(())
    }

    fn fit(p: &Params, data: &TrainingSet, _: &mut dyn FnMut(Progress)) -> Result<Forest, FitError> {
        let grow = GrowParams { max_depth: p.max_depth, min_leaf_clicks: p.min_leaf_clicks, shrinkage: p.shrinkage };
        let grow_one = |clicks: &[f64], conversions: &[f64]| {
            let sample = Sample { x: data.features.matrix.view(), clicks, conversions };
            match p.growth {
                Growth::Exact => RateTree::grow_exact(sample, &grow),
                Growth::Balanced => RateTree::grow_balanced(sample, &grow),
            }
        };
        if p.trees == 1 {
            return Ok(Forest { trees: vec![grow_one(&data.clicks, &data.conversions)?] });
        }
        let mut rng = SplitMix64::new(p.seed);
        let n = data.clicks.len();
        let mut trees = Vec::with_capacity(p.trees);
        for _ in 0..p.trees {
            // A bootstrap sample as weights: each row counted as often as it is drawn.
            let mut draws = vec![0u32; n];
            for _ in 0..n {
                draws[rng.below(n)] += 1;
            }
            let clicks: Vec<f64> = data.clicks.iter().zip(&draws).map(|(c, &d)| c * f64::from(d)).collect();
            let conversions: Vec<f64> = data.conversions.iter().zip(&draws).map(|(c, &d)| c * f64::from(d)).collect();
            trees.push(grow_one(&clicks, &conversions)?);
        }
        Ok(Forest { trees })
    }

    fn validate(forest: &Forest, width: usize) -> Result<(), String> {
        if forest.trees.is_empty() {
            return Err("the forest has no trees".into());
        }
        for (i, tree) in forest.trees.iter().enumerate() {
            tree.validate(width).map_err(|e| format!("tree {i}: {e}"))?;
        }
        Ok(())
    }
}
