//! A regression tree whose nodes hold conversion rates, grown with linfa-trees.
//!
//! linfa-trees 0.8 only has a classifier with modal-class leaves that prunes
//! siblings predicting the same class. Each observation therefore becomes two
//! weighted samples, label 1 weighted by its conversions and label 0 by its
//! other clicks: weighted Gini on that binary label is the click-weighted squared
//! error of the rate, so linfa's split search is the regression criterion we want.
//! The rates themselves are then estimated from the training rows reaching each
//! node, shrunk toward the parent's rate.

use linfa::prelude::*;
use linfa_trees::{DecisionTree, SplitQuality, TreeNode};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Ix1};
use serde::{Deserialize, Serialize};

use super::FitError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateTree {
    /// `nodes[0]` is the root.
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub rate: f64,
    /// Training clicks that reached the node.
    pub clicks: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
}

/// Rows with `feature <= threshold` go left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub feature: usize,
    pub threshold: f32,
    pub left: usize,
    pub right: usize,
}

/// Weighted observations a tree is grown on.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    pub x: ArrayView2<'a, f32>,
    pub clicks: &'a [f64],
    pub conversions: &'a [f64],
}

#[derive(Clone, Copy, Debug)]
pub struct GrowParams {
    pub max_depth: usize,
    pub min_leaf_clicks: f64,
    /// Pseudo-clicks at the parent's rate added to every node's estimate.
    pub shrinkage: f64,
}

impl RateTree {
    pub fn predict_row(&self, row: ArrayView1<f32>) -> f64 {
        let mut node = &self.nodes[0];
        while let Some(split) = &node.split {
            node = &self.nodes[if row[split.feature] <= split.threshold { split.left } else { split.right }];
        }
        node.rate
    }

    /// Checks what [`RateTree::predict_row`] relies on: every child comes after
    /// its parent (so a walk always ends), is in range and has one parent, every
    /// rate is in [0, 1], and every split reads a column below `width`.
    pub fn validate(&self, width: usize) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("the tree has no nodes".into());
        }
        let mut has_parent = vec![false; self.nodes.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            if !(0.0..=1.0).contains(&node.rate) {
                return Err(format!("node {id}: rate {} is not in [0, 1]", node.rate));
            }
            let Some(split) = &node.split else { continue };
            if split.feature >= width {
                return Err(format!("node {id}: splits on column {}, but the matrix has {width}", split.feature));
            }
            if !split.threshold.is_finite() {
                return Err(format!("node {id}: threshold {} is not finite", split.threshold));
            }
            for child in [split.left, split.right] {
                if child <= id || child >= self.nodes.len() {
                    return Err(format!(
                        "node {id}: child {child} must come after its parent and before {}",
                        self.nodes.len()
                    ));
                }
                if std::mem::replace(&mut has_parent[child], true) {
                    return Err(format!("node {child} has two parents"));
                }
            }
        }
        Ok(())
    }

    pub fn leaves(&self) -> usize {
        self.nodes.iter().filter(|n| n.split.is_none()).count()
    }

    /// Grows the tree split by split, each split found by a depth-1 linfa tree on
    /// the node's rows. Exact: a split survives whatever classes its children favour.
    pub fn grow_exact(sample: Sample<'_>, params: &GrowParams) -> Result<RateTree, FitError> {
        let mut tree = RateTree { nodes: vec![Node { rate: 0.0, clicks: 0.0, split: None }] };
        let all: Vec<usize> = (0..sample.clicks.len()).filter(|&i| sample.clicks[i] > 0.0).collect();
        let mut stack = vec![(0usize, all, 0usize)];
        while let Some((id, rows, depth)) = stack.pop() {
            if depth >= params.max_depth {
                continue;
            }
            let Some((feature, threshold)) = best_split(sample, &rows, params.min_leaf_clicks)? else { continue };
            let (left, right): (Vec<usize>, Vec<usize>) =
                rows.into_iter().partition(|&i| sample.x[[i, feature]] <= threshold);
            if left.is_empty() || right.is_empty() {
                continue;
            }
            let (l, r) = (tree.nodes.len(), tree.nodes.len() + 1);
            tree.nodes.push(Node { rate: 0.0, clicks: 0.0, split: None });
            tree.nodes.push(Node { rate: 0.0, clicks: 0.0, split: None });
            tree.nodes[id].split = Some(Split { feature, threshold, left: l, right: r });
            stack.push((r, right, depth + 1));
            stack.push((l, left, depth + 1));
        }
        tree.estimate_rates(sample, params.shrinkage);
        Ok(tree)
    }

    /// Grows the whole tree in one linfa fit with the two classes weighted to
    /// balance, so that nodes above and below the overall rate favour different
    /// classes and linfa's pruning keeps their splits.
    pub fn grow_balanced(sample: Sample<'_>, params: &GrowParams) -> Result<RateTree, FitError> {
        let rows: Vec<usize> = (0..sample.clicks.len()).filter(|&i| sample.clicks[i] > 0.0).collect();
        let features: Vec<usize> = (0..sample.x.ncols()).collect();
        let conversions: f64 = rows.iter().map(|&i| sample.conversions[i]).sum();
        let clicks: f64 = rows.iter().map(|&i| sample.clicks[i]).sum();
        let balance = if conversions > 0.0 { (clicks - conversions) / conversions } else { 1.0 };
        let dataset = two_sample_dataset(sample, &rows, &features, balance);
        let fitted = DecisionTree::params()
            .split_quality(SplitQuality::Gini)
            .max_depth(Some(params.max_depth))
            .min_weight_split(2.0)
            .min_weight_leaf((params.min_leaf_clicks * (1.0 + balance) / 2.0) as f32)
            .min_impurity_decrease(f32::EPSILON)
            .fit(&dataset)
            .map_err(|e| FitError::Library(e.to_string()))?;
        let mut tree = RateTree { nodes: Vec::new() };
        tree.copy_structure(fitted.root_node());
        tree.estimate_rates(sample, params.shrinkage);
        Ok(tree)
    }

    fn copy_structure(&mut self, node: &TreeNode<f32, usize>) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node { rate: 0.0, clicks: 0.0, split: None });
        if let [Some(left), Some(right)] = node.children()[..] {
            let (feature, threshold, _) = node.split();
            let left = self.copy_structure(left);
            let right = self.copy_structure(right);
            self.nodes[id].split = Some(Split { feature, threshold, left, right });
        }
        id
    }

    /// Sets every node's rate from the training rows reaching it, shrunk toward
    /// its parent's rate (the root toward the overall rate, which it equals).
    fn estimate_rates(&mut self, sample: Sample<'_>, shrinkage: f64) {
        let mut sums = vec![(0.0, 0.0); self.nodes.len()];
        for (i, row) in sample.x.rows().into_iter().enumerate() {
            let (n, k) = (sample.clicks[i], sample.conversions[i]);
            let mut id = 0;
            loop {
                sums[id].0 += n;
                sums[id].1 += k;
                match &self.nodes[id].split {
                    Some(s) => id = if row[s.feature] <= s.threshold { s.left } else { s.right },
                    None => break,
                }
            }
        }
        let mut stack = vec![(0usize, if sums[0].0 > 0.0 { sums[0].1 / sums[0].0 } else { 0.0 })];
        while let Some((id, prior)) = stack.pop() {
            let (n, k) = sums[id];
            let rate = if n + shrinkage > 0.0 { (k + shrinkage * prior) / (n + shrinkage) } else { prior };
            self.nodes[id].rate = rate.clamp(0.0, 1.0);
            self.nodes[id].clicks = n;
            if let Some(s) = &self.nodes[id].split {
                stack.push((s.left, rate));
                stack.push((s.right, rate));
            }
        }
    }
}

/// The best split of `rows` by click-weighted squared error, if any leaves at
/// least `min_leaf_clicks` on each side.
fn best_split(sample: Sample<'_>, rows: &[usize], min_leaf_clicks: f64) -> Result<Option<(usize, f32)>, FitError> {
    let clicks: f64 = rows.iter().map(|&i| sample.clicks[i]).sum();
    if rows.len() < 2 || clicks < 2.0 * min_leaf_clicks {
        return Ok(None);
    }
    // Only features that vary within the node can split it; skipping the rest
    // makes deep nodes cheap.
    let first = rows[0];
    let features: Vec<usize> =
        (0..sample.x.ncols()).filter(|&j| rows.iter().any(|&i| sample.x[[i, j]] != sample.x[[first, j]])).collect();
    if features.is_empty() {
        return Ok(None);
    }
    let dataset = two_sample_dataset(sample, rows, &features, 1.0);
    let stump = DecisionTree::params()
        .split_quality(SplitQuality::Gini)
        .max_depth(Some(1))
        .min_weight_split(2.0)
        .min_weight_leaf(min_leaf_clicks.max(f64::from(f32::EPSILON)) as f32)
        .min_impurity_decrease(f32::EPSILON)
        .fit(&dataset)
        .map_err(|e| FitError::Library(e.to_string()))?;
    // A stump whose two leaves favour the same class is pruned back to a leaf,
    // but its root keeps the split it found; a zero gain means it found none.
    let (feature, threshold, gain) = stump.root_node().split();
    Ok((gain > 0.0).then(|| (features[feature], threshold)))
}

/// Two samples per observation: label 1 weighted by conversions (times
/// `positive_weight`), label 0 by the clicks that did not convert.
fn two_sample_dataset(
    sample: Sample<'_>,
    rows: &[usize],
    features: &[usize],
    positive_weight: f64,
) -> Dataset<f32, usize, Ix1> {
    let mut records = Array2::<f32>::zeros((2 * rows.len(), features.len()));
    let mut targets = Array1::<usize>::zeros(2 * rows.len());
    let mut weights = Array1::<f32>::zeros(2 * rows.len());
    for (r, &i) in rows.iter().enumerate() {
        let source = sample.x.row(i);
        for (c, &j) in features.iter().enumerate() {
            records[[2 * r, c]] = source[j];
            records[[2 * r + 1, c]] = source[j];
        }
        targets[2 * r] = 1;
        weights[2 * r] = (sample.conversions[i] * positive_weight) as f32;
        weights[2 * r + 1] = (sample.clicks[i] - sample.conversions[i]) as f32;
    }
    Dataset::new(records, targets).with_weights(weights)
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    /// Feature 0 separates rates 0.02 and 0.10; feature 1 is noise.
    fn two_groups() -> (Array2<f32>, Vec<f64>, Vec<f64>) {
        let x = array![[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]];
        let clicks = vec![500.0, 500.0, 500.0, 500.0, 500.0, 500.0];
        let conversions = vec![10.0, 10.0, 50.0, 50.0, 10.0, 50.0];
        (x, clicks, conversions)
    }

    #[test]
    fn exact_growth_finds_the_split_below_the_overall_rate() {
        let (x, clicks, conversions) = two_groups();
        let sample = Sample { x: x.view(), clicks: &clicks, conversions: &conversions };
        let params = GrowParams { max_depth: 3, min_leaf_clicks: 1.0, shrinkage: 0.0 };
        let tree = RateTree::grow_exact(sample, &params).unwrap();
        let root = tree.nodes[0].split.as_ref().expect("root splits");
        assert_eq!(root.feature, 0);
        assert!((tree.predict_row(x.row(0)) - 0.02).abs() < 1e-9);
        assert!((tree.predict_row(x.row(2)) - 0.10).abs() < 1e-9);
        // Feature 1 explains nothing once feature 0 is used.
        assert_eq!(tree.leaves(), 2);
    }

    #[test]
    fn shrinkage_pulls_leaves_toward_the_parent() {
        let (x, clicks, conversions) = two_groups();
        let sample = Sample { x: x.view(), clicks: &clicks, conversions: &conversions };
        let params = GrowParams { max_depth: 3, min_leaf_clicks: 1.0, shrinkage: 1500.0 };
        let tree = RateTree::grow_exact(sample, &params).unwrap();
        // Leaf with 1500 clicks at 0.02 and 1500 pseudo-clicks at 0.06.
        assert!((tree.predict_row(x.row(0)) - 0.04).abs() < 1e-9);
    }

    #[test]
    fn min_leaf_clicks_stops_splits() {
        let (x, clicks, conversions) = two_groups();
        let sample = Sample { x: x.view(), clicks: &clicks, conversions: &conversions };
        let params = GrowParams { max_depth: 3, min_leaf_clicks: 1600.0, shrinkage: 0.0 };
        let tree = RateTree::grow_exact(sample, &params).unwrap();
        assert_eq!(tree.leaves(), 1);
        assert!((tree.predict_row(x.row(0)) - 0.06).abs() < 1e-9);
    }

    #[test]
    fn balanced_growth_keeps_the_informative_split() {
        let (x, clicks, conversions) = two_groups();
        let sample = Sample { x: x.view(), clicks: &clicks, conversions: &conversions };
        let params = GrowParams { max_depth: 3, min_leaf_clicks: 1.0, shrinkage: 0.0 };
        let tree = RateTree::grow_balanced(sample, &params).unwrap();
        assert!((tree.predict_row(x.row(0)) - 0.02).abs() < 1e-9);
        assert!((tree.predict_row(x.row(3)) - 0.10).abs() < 1e-9);
    }
}
