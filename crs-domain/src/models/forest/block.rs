//! The evaluation loops: a block of rows at a time, or row by row for the few
//! rows of a small request, where a block's fixed cost would not pay.

use wide::f32x4;

use super::{BLOCK, CHUNK, Forest, LEAF, Link, Segment, ShallowTree, WalkNode};

/// Below this many rows a request is walked row by row: a block costs about
/// the same whether it holds one row or 64.
pub(super) const SMALL: usize = 8;

/// Where xgboost caps the exponent of its float sigmoid.
const XGBOOST_EXP_CAP: f32 = 88.7;

/// The two precisions a forest adds its leaves in.
pub(super) trait Sum: Copy + std::ops::Add<Output = Self> {
    fn from_f64(value: f64) -> Self;
    /// `link` of the margin, computed in this precision.
    fn link(self, link: Link) -> f64;
}

impl Sum for f64 {
    fn from_f64(value: f64) -> Self {
        value
    }

    fn link(self, link: Link) -> f64 {
        match link {
            Link::Identity => self,
            Link::Logistic => 1.0 / (1.0 + (-self).exp()),
            Link::ClipToUnit => self.clamp(0.0, 1.0),
        }
    }
}

impl Sum for f32 {
    fn from_f64(value: f64) -> Self {
        value as f32
    }

    /// The logistic link is xgboost's float sigmoid (`common::Sigmoid`) to the
    /// bit: `-z` capped at 88.7 so that `exp` stays finite, `expf` of it
    /// (glibc's, which Rust's `f32::exp` calls), then `1 / (e + 1)`. xgboost
    /// also adds 1e-16 to the denominator, which no float at or above 1 notices.
    fn link(self, link: Link) -> f64 {
        f64::from(match link {
            Link::Identity => self,
            Link::Logistic => 1.0 / ((-self).min(XGBOOST_EXP_CAP).exp() + 1.0),
            Link::ClipToUnit => self.clamp(0.0, 1.0),
        })
    }
}

/// Fills `out` with the link of each row's margin. `values` is the row-major
/// matrix, `width` columns (at least the forest's) by `out.len()` rows.
pub(super) fn evaluate<T: Sum>(
    forest: &Forest,
    leaves: &[T],
    values: &[f32],
    width: usize,
    link: Link,
    out: &mut [f64],
) {
    let base = T::from_f64(forest.settings.base_score);
    if out.len() < SMALL {
        for (r, out) in out.iter_mut().enumerate() {
            *out = row_margin(forest, leaves, base, &values[r * width..(r + 1) * width]).link(link);
        }
        return;
    }
    let mut masks = vec![0u64; forest.conditions.len()];
    let mut scratch = vec![[0u64; BLOCK]; forest.settings.width.div_ceil(64)];
    let mut codes = vec![[0u8; BLOCK]; CHUNK];
    let mut acc = [base; BLOCK];
    for (b, out) in out.chunks_mut(BLOCK).enumerate() {
        let n = out.len();
        let block = &values[b * BLOCK * width..(b * BLOCK + n) * width];
        condition_masks(forest, block, width, n, &mut scratch, &mut masks);
        acc.fill(base);
        for segment in &forest.segments {
            match *segment {
                Segment::Shallow { start, end } => {
                    let trees = &forest.shallow[start as usize..end as usize];
                    for (tree, codes) in trees.iter().zip(codes.iter_mut()) {
                        leaf_codes(tree, &forest.shallow_conditions, &masks, codes);
                    }
                    add_leaves(trees, &codes[..trees.len()], leaves, &mut acc, n);
                }
                Segment::Walked { root } => {
                    for (r, acc) in acc[..n].iter_mut().enumerate() {
                        let row = &block[r * width..(r + 1) * width];
                        *acc = *acc + leaves[walk(&forest.walk_nodes, root, row)];
                    }
                }
            }
        }
        for (out, acc) in out.iter_mut().zip(&acc) {
            *out = acc.link(link);
        }
    }
}

/// One row's margin, tree by tree.
fn row_margin<T: Sum>(forest: &Forest, leaves: &[T], base: T, row: &[f32]) -> T {
    let mut acc = base;
    for segment in &forest.segments {
        match *segment {
            Segment::Shallow { start, end } => {
                for tree in &forest.shallow[start as usize..end as usize] {
                    let conditions = &forest.shallow_conditions[tree.conditions as usize..];
                    let mut place = 0;
                    for _ in 0..tree.depth {
                        let c = forest.conditions[conditions[place] as usize];
                        place = 2 * place + 1 + usize::from(row[c.feature as usize] >= c.threshold);
                    }
                    acc = acc + leaves[tree.leaves as usize + place + 1 - (1 << tree.depth)];
                }
            }
            Segment::Walked { root } => acc = acc + leaves[walk(&forest.walk_nodes, root, row)],
        }
    }
    acc
}

/// The index of the leaf value `row` reaches in a walked tree.
fn walk(nodes: &[WalkNode], root: u32, row: &[f32]) -> usize {
    let mut i = root as usize;
    loop {
        let node = nodes[i];
        if node.feature == LEAF {
            return node.left as usize;
        }
        i = node.left as usize + usize::from(row[node.feature as usize] >= node.threshold);
    }
}

/// Bit `r` of `masks[c]`: whether row `r` of the block meets condition `c`.
/// Each row is compared with the column thresholds four columns at a time,
/// giving a row of bits per 64 columns; a bit-matrix transpose turns 64 such
/// rows into one 64-row mask per column. Conditions that are not their
/// column's first are compared row by row.
fn condition_masks(
    forest: &Forest,
    block: &[f32],
    width: usize,
    n: usize,
    scratch: &mut [[u64; BLOCK]],
    masks: &mut [u64],
) {
    if forest.conditions.is_empty() {
        return;
    }
    let columns = forest.settings.width;
    let thresholds = &forest.column_thresholds;
    for (r, row) in block.chunks_exact(width).take(n).enumerate() {
        let row = &row[..columns];
        for (word, scratch) in scratch.iter_mut().enumerate() {
            let start = word * 64;
            let end = (start + 64).min(columns);
            let mut bits = 0u64;
            let mut quads = row[start..end].chunks_exact(4);
            for (q, (values, limits)) in quads.by_ref().zip(thresholds[start..].chunks_exact(4)).enumerate() {
                let values = f32x4::from(<[f32; 4]>::try_from(values).expect("4 columns"));
                let limits = f32x4::from(<[f32; 4]>::try_from(limits).expect("4 columns"));
                bits |= u64::from(values.simd_ge(limits).to_bitmask()) << (4 * q);
            }
            let done = (end - start) / 4 * 4;
            for (j, (value, limit)) in quads.remainder().iter().zip(&thresholds[start + done..]).enumerate() {
                bits |= u64::from(*value >= *limit) << (done + j);
            }
            scratch[r] = bits;
        }
    }
    for scratch in scratch.iter_mut() {
        transpose(scratch);
    }
    for (mask, c) in masks.iter_mut().zip(&forest.conditions) {
        let feature = c.feature as usize;
        *mask = if c.primary {
            scratch[feature / 64][feature % 64]
        } else {
            let mut bits = 0u64;
            for (r, row) in block.chunks_exact(width).take(n).enumerate() {
                bits |= u64::from(row[feature] >= c.threshold) << r;
            }
            bits
        };
    }
}

/// Transposes a 64 × 64 bit matrix: bit `c` of `rows[r]` becomes bit `r` of
/// `rows[c]`, by swapping ever smaller off-diagonal blocks.
fn transpose(rows: &mut [u64; BLOCK]) {
    let mut size = 32;
    let mut low = 0x0000_0000_FFFF_FFFFu64;
    while size != 0 {
        let mut k = 0;
        while k < 64 {
            let t = ((rows[k] >> size) ^ rows[k + size]) & low;
            rows[k] ^= t << size;
            rows[k + size] ^= t;
            k = (k + size + 1) & !size;
        }
        size >>= 1;
        low ^= low << size;
    }
}

/// Byte `r` of `codes`: the leaf row `r` reaches in `tree`.
fn leaf_codes(tree: &ShallowTree, conditions: &[u32], masks: &[u64], codes: &mut [u8; BLOCK]) {
    let start = tree.conditions as usize;
    let of = |depth: usize| &conditions[start..start + (1 << depth) - 1];
    match tree.depth {
        0 => *codes = [0; BLOCK],
        1 => codes_of::<1>(of(1), masks, codes),
        2 => codes_of::<2>(of(2), masks, codes),
        3 => codes_of::<3>(of(3), masks, codes),
        4 => codes_of::<4>(of(4), masks, codes),
        5 => codes_of::<5>(of(5), masks, codes),
        6 => codes_of::<6>(of(6), masks, codes),
        7 => codes_of::<7>(of(7), masks, codes),
        8 => codes_of::<8>(of(8), masks, codes),
        depth => unreachable!("shallow trees are at most 8 deep, not {depth}"),
    }
}

/// Leaf codes of a perfect tree of depth `D`, 64 rows at once: `reach` holds the
/// rows at each split, and plane `k` the rows that went right at level `k`,
/// which is bit `D - 1 - k` of their leaf's number.
fn codes_of<const D: usize>(conditions: &[u32], masks: &[u64], codes: &mut [u8; BLOCK]) {
    let mut planes = [0u64; D];
    let mut reach = [0u64; 256];
    reach[0] = !0;
    for (level, plane) in planes.iter_mut().enumerate() {
        let first = (1 << level) - 1;
        for place in first..2 * first + 1 {
            let rows = reach[place];
            let met = masks[conditions[place] as usize];
            let right = rows & met;
            *plane |= right;
            if level + 1 < D {
                reach[2 * place + 1] = rows & !met;
                reach[2 * place + 2] = right;
            }
        }
    }
    for (group, out) in codes.chunks_exact_mut(8).enumerate() {
        let mut word = 0u64;
        for (level, plane) in planes.iter().enumerate() {
            word |= SPREAD[((plane >> (8 * group)) & 0xff) as usize] << (D - 1 - level);
        }
        out.copy_from_slice(&word.to_le_bytes());
    }
}

/// Byte `i` of `SPREAD[b]` is bit `i` of `b`.
const SPREAD: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            table[b] |= ((b as u64 >> i) & 1) << (8 * i);
            i += 1;
        }
        b += 1;
    }
    table
};

/// Adds each tree's leaf to each row's sum, trees in order, eight rows side by
/// side so that each row's chain of additions overlaps the others'.
fn add_leaves<T: Sum>(trees: &[ShallowTree], codes: &[[u8; BLOCK]], leaves: &[T], acc: &mut [T; BLOCK], n: usize) {
    // A 256-value window per tree: a byte code indexes it without a bounds check.
    let windows: Vec<&[T; 256]> = trees
        .iter()
        .map(|t| leaves[t.leaves as usize..t.leaves as usize + 256].try_into().expect("256 values"))
        .collect();
    for (group, acc) in acc.chunks_exact_mut(8).take(n.div_ceil(8)).enumerate() {
        let mut sums: [T; 8] = acc.try_into().expect("8 rows");
        for (window, codes) in windows.iter().zip(codes) {
            let codes: &[u8; 8] = codes[group * 8..group * 8 + 8].try_into().expect("8 rows");
            for (sum, &code) in sums.iter_mut().zip(codes) {
                *sum = *sum + window[code as usize];
            }
        }
        acc.copy_from_slice(&sums);
    }
}
