//! One forest: the tree-ensemble evaluator every boosted-tree model predicts with
//! (v2, and models imported from other libraries once converted to its trees).
//!
//! **The trees it takes** are plain node arrays from any source ([`Tree`],
//! [`Node`]): node 0 is the root, children come after their parent, a split
//! reads one matrix column and sends a row right when `x >= threshold` and left
//! otherwise (so `x < threshold` goes left, and so does NaN), a leaf holds a
//! value. [`Forest::new`] validates them (indices in range and pointing forward,
//! each node reached once, finite numbers, columns below the width) and refuses
//! anything else with a [`ForestError`] naming the tree and node.
//!
//! **What it computes** for each row: the base score plus every tree's leaf
//! value, added one tree at a time in tree order ([`Precision::F64`]: in f64, as
//! v2 always has and lightgbm does; [`Precision::F32`]: base and leaves rounded
//! to f32 and summed as `acc_f32 += leaf_f32`, as xgboost does). That is the
//! margin ([`Forest::margins`]); [`Forest::predict`] then applies the forest's
//! [`Link`] in the same precision. The link lives here rather than with each
//! caller because xgboost's output is its float32 sigmoid of the float32 margin:
//! one place decides how that is computed.
//!
//! **How it computes it:** rows are taken [`BLOCK`] at a time. For each distinct
//! (column, threshold) condition of the forest the block's answers are packed
//! into one 64-bit mask; each tree of depth up to 8 is stored as a perfect tree
//! (shallower leaves padded with copies of their value), so the leaf a row
//! reaches is the number spelt by its decisions level by level, and those
//! numbers are worked out for the 64 rows at once with bitwise operations on the
//! masks. The sum then reads one leaf value per row and tree, in tree order.
//! Deeper trees are walked row by row. Both paths compare `f32` inputs with the
//! threshold rounded up to the next `f32`, which decides exactly as comparing in
//! f64 would, for any finite threshold.
//!
//! An importer builds one like this:
//!
//! ```
//! use crs_domain::models::forest::{Forest, Link, Node, Precision, Settings, Tree};
//!
//! // One split on column 1 (a device code 0, 1 or 2): below 1.5 left, else right.
//! let tree = Tree {
//!     nodes: vec![
//!         Node::Split { feature: 1, threshold: 1.5, left: 1, right: 2 },
//!         Node::Leaf { value: -0.25 },
//!         Node::Leaf { value: 0.75 },
//!     ],
//! };
//! let settings = Settings { width: 2, base_score: 0.5, precision: Precision::F32, link: Link::Identity };
//! let forest = Forest::new(&[tree], settings).unwrap();
//! let rows = ndarray::arr2(&[[0.0f32, 1.0], [0.0, 2.0]]);
//! assert_eq!(forest.margins(rows.view()), vec![0.25, 1.25]);
//! ```

mod block;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

/// Rows evaluated together: one bit of a `u64` condition mask each.
pub const BLOCK: usize = 64;

/// Deepest tree evaluated block-wise; deeper ones are walked row by row. A leaf
/// number of a depth-8 tree fits a byte.
pub const MAX_BLOCK_DEPTH: usize = 8;

/// A node as a model's trees give it (and as imported models save it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    /// Rows whose `feature` column is at least `threshold` go to `right`, the
    /// others to `left`. Both children come after this node.
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    Leaf {
        value: f64,
    },
}

/// One tree: `nodes[0]` is the root.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// How the base score and the leaf values are added up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// In f64 (v2, lightgbm).
    F64,
    /// Base and leaves rounded to f32, summed in f32 (xgboost).
    F32,
}

/// What [`Forest::predict`] makes of a row's margin, computed in the forest's precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// The margin itself.
    Identity,
    /// `1 / (1 + exp(-margin))`: log-odds to a probability. In
    /// [`Precision::F32`] it is xgboost's float sigmoid, bit for bit.
    Logistic,
    /// The margin clipped to [0, 1]: a regression on a rate.
    ClipToUnit,
}

/// Everything about a forest besides its trees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Matrix columns the trees may read: splits on a column at or beyond it are refused.
    pub width: usize,
    /// Added to every row before the trees.
    pub base_score: f64,
    pub precision: Precision,
    pub link: Link,
}

/// Why a set of trees cannot make a forest. The messages are what v2's artifact
/// checks have always said.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ForestError {
    #[error("the model has no trees")]
    NoTrees,
    #[error("base_score is {0}, not a finite number")]
    BaseScore(f64),
    #[error("tree {tree} has no nodes")]
    EmptyTree { tree: usize },
    #[error("tree {tree} node {node}: leaf value {value} is not a finite number")]
    LeafValue { tree: usize, node: usize, value: f64 },
    #[error("tree {tree} node {node}: child {child} is out of range (children come after their parent, below {nodes})")]
    ChildOutOfRange { tree: usize, node: usize, child: usize, nodes: usize },
    #[error("tree {tree} node {node}: both children are node {child}")]
    SameChildren { tree: usize, node: usize, child: usize },
    #[error("tree {tree} node {node}: feature {feature} is out of range (the model has {width})")]
    FeatureOutOfRange { tree: usize, node: usize, feature: usize, width: usize },
    #[error("tree {tree} node {node}: threshold {threshold} is not a finite number")]
    Threshold { tree: usize, node: usize, threshold: f64 },
    #[error("tree {tree} node {node} is reached from {parents} splits, not one")]
    Parents { tree: usize, node: usize, parents: usize },
}

/// A validated forest in its evaluation layout.
#[derive(Clone, Debug)]
pub struct Forest {
    settings: Settings,
    trees: usize,
    /// Distinct (column, threshold) conditions; shallow trees name them by index.
    conditions: Vec<Condition>,
    /// Per column, the threshold of its primary condition (infinity for columns
    /// no condition reads), padded to a multiple of 64 columns.
    column_thresholds: Vec<f32>,
    /// Trees in order, grouped for evaluation.
    segments: Vec<Segment>,
    /// Per shallow tree: its split conditions in level order (2^depth - 1),
    /// padding included: the row walk and the block's unrolled shallow trees read them.
    shallow_conditions: Vec<u32>,
    /// Per shallow tree: its real splits in level order, padding left out. A
    /// block decides deeper trees at these only: a padded place's rows all
    /// reach copies of one leaf value whatever it decides.
    splits: Vec<Split>,
    shallow: Vec<ShallowTree>,
    /// Nodes of the trees walked row by row.
    walk_nodes: Vec<WalkNode>,
    leaves: Leaves,
}

/// `x >= threshold` on an `f32` input; the threshold is the model's rounded up
/// to the next `f32`, which decides every `f32` input as the f64 comparison does.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Condition {
    feature: u32,
    threshold: f32,
    /// The first condition on its column: answered by the block's
    /// column-by-column comparison with [`Forest::column_thresholds`]. Others
    /// on the same column are compared one by one.
    primary: bool,
}

#[derive(Clone, Copy, Debug)]
struct ShallowTree {
    depth: u8,
    /// Start of its conditions in `shallow_conditions`.
    conditions: u32,
    /// Start of its real splits in `splits`.
    splits: u32,
    /// Per level, the end of that level's splits, counted from `splits`.
    level_ends: [u8; MAX_BLOCK_DEPTH],
    /// Start of its 2^depth leaf values.
    leaves: u32,
}

/// A split of a shallow tree at its place in the perfect tree (level order:
/// place `p`'s children are `2p + 1` and `2p + 2`).
#[derive(Clone, Copy, Debug)]
struct Split {
    condition: u32,
    place: u8,
}

/// A node of a tree walked row by row: a split reads `feature` and goes to
/// `left` or `left + 1`; a leaf has `feature == LEAF` and its value's index in `left`.
#[derive(Clone, Copy, Debug)]
struct WalkNode {
    threshold: f32,
    feature: u32,
    left: u32,
}

const LEAF: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
enum Segment {
    /// Consecutive shallow trees, `shallow[start..end]`.
    Shallow { start: u32, end: u32 },
    /// One deep tree whose root is `walk_nodes[root]`.
    Walked { root: u32 },
}

/// Leaf values in the forest's precision; shallow trees' first, then walked
/// trees', then [`u8::MAX`] + 1 zeros so that any tree's 256-entry window is in range.
#[derive(Clone, Debug)]
enum Leaves {
    F64(Vec<f64>),
    F32(Vec<f32>),
}

/// Most shallow trees whose leaf numbers are held at once (a 64 × 64-byte buffer).
const CHUNK: usize = 64;

impl Forest {
    pub fn new(trees: &[Tree], settings: Settings) -> Result<Self, ForestError> {
        let depths = validate(trees, &settings)?;
        let mut conditions: Vec<Condition> = Vec::new();
        let mut index: std::collections::HashMap<(u32, u32), u32> = std::collections::HashMap::new();
        let mut condition = |feature: usize, threshold: f64| -> u32 {
            let c = Condition { feature: feature as u32, threshold: f32_at_least(threshold), primary: false };
            *index.entry((c.feature, c.threshold.to_bits())).or_insert_with(|| {
                conditions.push(c);
                (conditions.len() - 1) as u32
            })
        };
        let mut shallow_conditions = Vec::new();
        let mut splits = Vec::new();
        let mut shallow = Vec::new();
        let mut walk_nodes = Vec::new();
        let mut values: Vec<f64> = Vec::new();
        let mut walked_values: Vec<f64> = Vec::new();
        let mut segments = Vec::new();
        for (tree, &depth) in trees.iter().zip(&depths) {
            if depth <= MAX_BLOCK_DEPTH {
                let mut at = ShallowTree {
                    depth: depth as u8,
                    conditions: shallow_conditions.len() as u32,
                    splits: splits.len() as u32,
                    level_ends: [0; MAX_BLOCK_DEPTH],
                    leaves: values.len() as u32,
                };
                let base_conditions = shallow_conditions.len();
                shallow_conditions.resize(base_conditions + (1 << depth) - 1, 0);
                let base_values = values.len();
                values.resize(base_values + (1 << depth), 0.0);
                let mut real = Vec::new();
                let perfect = Perfect {
                    tree,
                    depth,
                    conditions: &mut shallow_conditions[base_conditions..],
                    values: &mut values[base_values..],
                    real: &mut real,
                };
                perfect.fill(0, 0, 0, &mut condition);
                // Place order is level order.
                real.sort_by_key(|s: &Split| s.place);
                for (level, end) in at.level_ends.iter_mut().enumerate().take(depth) {
                    let last_place = (2usize << level) - 2;
                    *end = real.iter().take_while(|s| usize::from(s.place) <= last_place).count() as u8;
                }
                splits.extend(real);
                let i = shallow.len() as u32;
                shallow.push(at);
                match segments.last_mut() {
                    Some(Segment::Shallow { start, end }) if (*end - *start) < CHUNK as u32 => *end = i + 1,
                    _ => segments.push(Segment::Shallow { start: i, end: i + 1 }),
                }
            } else {
                let root = walk_nodes.len();
                segments.push(Segment::Walked { root: root as u32 });
                walk_tree(tree, &mut walk_nodes, &mut walked_values);
            }
        }
        let mut column_thresholds = vec![f32::INFINITY; settings.width.next_multiple_of(64)];
        let mut seen = vec![false; settings.width];
        for c in &mut conditions {
            let column = c.feature as usize;
            if !seen[column] {
                seen[column] = true;
                c.primary = true;
                column_thresholds[column] = c.threshold;
            }
        }
        // Walked leaves point past the shallow trees' values.
        let offset = values.len();
        for node in &mut walk_nodes {
            if node.feature == LEAF {
                node.left += offset as u32;
            }
        }
        values.extend(walked_values);
        values.resize(values.len() + 256, 0.0);
        let leaves = match settings.precision {
            Precision::F64 => Leaves::F64(values),
            Precision::F32 => Leaves::F32(values.iter().map(|&v| v as f32).collect()),
        };
        Ok(Forest {
            settings,
            trees: trees.len(),
            conditions,
            column_thresholds,
            segments,
            shallow_conditions,
            splits,
            shallow,
            walk_nodes,
            leaves,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Trees in the forest.
    pub fn len(&self) -> usize {
        self.trees
    }

    pub fn is_empty(&self) -> bool {
        self.trees == 0
    }

    /// The bytes its evaluation arrays hold.
    pub fn memory_bytes(&self) -> usize {
        let leaves = match &self.leaves {
            Leaves::F64(v) => size_of_val(v.as_slice()),
            Leaves::F32(v) => size_of_val(v.as_slice()),
        };
        size_of::<Self>()
            + size_of_val(self.conditions.as_slice())
            + size_of_val(self.column_thresholds.as_slice())
            + size_of_val(self.segments.as_slice())
            + size_of_val(self.shallow_conditions.as_slice())
            + size_of_val(self.splits.as_slice())
            + size_of_val(self.shallow.as_slice())
            + size_of_val(self.walk_nodes.as_slice())
            + leaves
    }

    /// The margin of each row: the base score plus each tree's leaf, in tree order.
    ///
    /// Panics if `rows` has fewer columns than the forest's width.
    pub fn margins(&self, rows: ArrayView2<f32>) -> Vec<f64> {
        self.evaluate(rows, Link::Identity)
    }

    /// Each row's margin through the forest's [`Link`].
    ///
    /// Panics if `rows` has fewer columns than the forest's width.
    pub fn predict(&self, rows: ArrayView2<f32>) -> Vec<f64> {
        self.evaluate(rows, self.settings.link)
    }

    fn evaluate(&self, rows: ArrayView2<f32>, link: Link) -> Vec<f64> {
        let width = rows.ncols();
        assert!(
            width >= self.settings.width,
            "the matrix has {width} columns, the model reads {}",
            self.settings.width
        );
        let standard = rows.as_standard_layout();
        let values = standard.as_slice().expect("standard layout is contiguous");
        let mut out = vec![0.0; rows.nrows()];
        match &self.leaves {
            Leaves::F64(leaves) => block::evaluate(self, leaves, values, width, link, &mut out),
            Leaves::F32(leaves) => block::evaluate(self, leaves, values, width, link, &mut out),
        }
        out
    }
}

/// The smallest `f32` at or above `threshold`: for an `f32` input `x`,
/// `x >= f32_at_least(t)` exactly when `f64::from(x) >= t`.
fn f32_at_least(threshold: f64) -> f32 {
    let rounded = threshold as f32;
    if f64::from(rounded) < threshold { rounded.next_up() } else { rounded }
}

/// Checks every tree; returns each tree's depth (0 for a lone leaf).
fn validate(trees: &[Tree], settings: &Settings) -> Result<Vec<usize>, ForestError> {
    if trees.is_empty() {
        return Err(ForestError::NoTrees);
    }
    if !settings.base_score.is_finite() {
        return Err(ForestError::BaseScore(settings.base_score));
    }
    let mut depths = Vec::with_capacity(trees.len());
    for (t, tree) in trees.iter().enumerate() {
        let n = tree.nodes.len();
        if n == 0 {
            return Err(ForestError::EmptyTree { tree: t });
        }
        let mut parents = vec![0usize; n];
        let mut depth = vec![0usize; n];
        for (i, node) in tree.nodes.iter().enumerate() {
            match *node {
                Node::Leaf { value } => {
                    if !value.is_finite() {
                        return Err(ForestError::LeafValue { tree: t, node: i, value });
                    }
                }
                Node::Split { feature, threshold, left, right } => {
                    for child in [left, right] {
                        if child <= i || child >= n {
                            return Err(ForestError::ChildOutOfRange { tree: t, node: i, child, nodes: n });
                        }
                        parents[child] += 1;
                        // Children come after parents, so the parent's depth is final.
                        depth[child] = depth[i] + 1;
                    }
                    if left == right {
                        return Err(ForestError::SameChildren { tree: t, node: i, child: left });
                    }
                    if feature >= settings.width {
                        return Err(ForestError::FeatureOutOfRange {
                            tree: t,
                            node: i,
                            feature,
                            width: settings.width,
                        });
                    }
                    if !threshold.is_finite() {
                        return Err(ForestError::Threshold { tree: t, node: i, threshold });
                    }
                }
            }
        }
        if let Some(i) = (1..n).find(|&i| parents[i] != 1) {
            return Err(ForestError::Parents { tree: t, node: i, parents: parents[i] });
        }
        depths.push(depth.iter().copied().max().unwrap_or(0));
    }
    Ok(depths)
}

/// A tree laid out as a perfect tree of its depth, in level order: split `p`
/// has children `2p + 1` and `2p + 2`, and leaf `k` is the one reached by the
/// decisions spelling `k` in binary (the root's the highest bit, right = 1). A
/// leaf above the last level fills the whole subtree below its place, under
/// splits of any condition, so every path through the padding ends at its value.
struct Perfect<'a> {
    tree: &'a Tree,
    depth: usize,
    conditions: &'a mut [u32],
    values: &'a mut [f64],
    /// The places that hold one of the tree's splits, not padding.
    real: &'a mut Vec<Split>,
}

impl Perfect<'_> {
    fn fill(mut self, place: usize, level: usize, node: usize, condition: &mut impl FnMut(usize, f64) -> u32) {
        self.fill_at(place, level, node, condition);
    }

    fn fill_at(&mut self, place: usize, level: usize, node: usize, condition: &mut impl FnMut(usize, f64) -> u32) {
        if level == self.depth {
            let Node::Leaf { value } = self.tree.nodes[node] else {
                unreachable!("a tree's depth counts all its splits")
            };
            self.values[place + 1 - (1 << self.depth)] = value;
            return;
        }
        let (left, right) = match self.tree.nodes[node] {
            Node::Split { feature, threshold, left, right } => {
                self.conditions[place] = condition(feature, threshold);
                self.real.push(Split { condition: self.conditions[place], place: place as u8 });
                (left, right)
            }
            // Padding: both sides lead to this leaf, so the condition (the
            // first one of the forest) does not matter.
            Node::Leaf { .. } => {
                self.conditions[place] = 0;
                (node, node)
            }
        };
        self.fill_at(2 * place + 1, level + 1, left, condition);
        self.fill_at(2 * place + 2, level + 1, right, condition);
    }
}

/// Appends `tree` to `nodes` with each split's children side by side, leaves
/// holding the index of their value in `values` (offset later).
fn walk_tree(tree: &Tree, nodes: &mut Vec<WalkNode>, values: &mut Vec<f64>) {
    let root = nodes.len();
    let mut queue = std::collections::VecDeque::from([(0usize, root)]);
    nodes.push(WalkNode { threshold: 0.0, feature: LEAF, left: 0 });
    while let Some((saved, at)) = queue.pop_front() {
        match tree.nodes[saved] {
            Node::Leaf { value } => {
                nodes[at] = WalkNode { threshold: 0.0, feature: LEAF, left: values.len() as u32 };
                values.push(value);
            }
            Node::Split { feature, threshold, left, right } => {
                let children = nodes.len();
                nodes.push(WalkNode { threshold: 0.0, feature: LEAF, left: 0 });
                nodes.push(WalkNode { threshold: 0.0, feature: LEAF, left: 0 });
                nodes[at] =
                    WalkNode { threshold: f32_at_least(threshold), feature: feature as u32, left: children as u32 };
                queue.push_back((left, children));
                queue.push_back((right, children + 1));
            }
        }
    }
}

#[cfg(test)]
mod tests;
