//! The evaluation loops: a block of rows at a time, or row by row for the few
//! rows of a small request, where a block's fixed cost would not pay.

use wide::f32x4;

use super::{BLOCK, CHUNK, Forest, LEAF, Link, Segment, ShallowTree, Split, WalkNode};

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
    let mut reach = [0u64; 256];
    // A 256-value window per shallow tree: a byte code indexes it without a bounds check.
    let windows: Vec<&[T; 256]> = forest
        .shallow
        .iter()
        .map(|t| leaves[t.leaves as usize..t.leaves as usize + 256].try_into().expect("256 values"))
        .collect();
    let mut acc = [base; BLOCK];
    for (b, out) in out.chunks_mut(BLOCK).enumerate() {
        let n = out.len();
        let block = &values[b * BLOCK * width..(b * BLOCK + n) * width];
        condition_masks(forest, block, width, n, &mut scratch, &mut masks);
        acc.fill(base);
        for segment in &forest.segments {
            match *segment {
                Segment::Shallow { start, end } => {
                    let (start, end) = (start as usize, end as usize);
                    for (tree, codes) in forest.shallow[start..end].iter().zip(codes.iter_mut()) {
                        leaf_codes(tree, forest, &masks, &mut reach, codes);
                    }
                    add_leaves(&windows[start..end], &codes[..end - start], &mut acc, n);
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
    for (r, row) in block.chunks_exact(width).take(n).enumerate() {
        let row = &row[..columns];
        for (word, (scratch, limits)) in scratch.iter_mut().zip(forest.column_thresholds.chunks_exact(64)).enumerate() {
            let limits = limits.try_into().expect("64 columns");
            scratch[r] = match row[word * 64..].first_chunk::<64>() {
                Some(values) => bits_at_least(values, limits),
                None => {
                    // The last columns, padded: the padding's bits are never read.
                    let mut values = [0.0; 64];
                    values[..columns - word * 64].copy_from_slice(&row[word * 64..]);
                    bits_at_least(&values, limits)
                }
            };
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

/// Bit `c`: whether `values[c] >= limits[c]`, four columns per comparison.
fn bits_at_least(values: &[f32; 64], limits: &[f32; 64]) -> u64 {
    let mut bits = 0u64;
    for (q, (values, limits)) in values.as_chunks::<4>().0.iter().zip(limits.as_chunks::<4>().0).enumerate() {
        bits |= u64::from(f32x4::from(*values).simd_ge(f32x4::from(*limits)).to_bitmask()) << (4 * q);
    }
    bits
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

/// Byte `r` of `codes`: the leaf row `r` reaches in `tree`, for 64 rows at
/// once. Trees up to [`DENSE_DEPTH`] deep are decided place by place over their
/// whole perfect layout, unrolled; deeper ones (which are seldom full) only at
/// their real splits.
fn leaf_codes(tree: &ShallowTree, forest: &Forest, masks: &[u64], reach: &mut [u64; 256], codes: &mut [u8; BLOCK]) {
    let dense = |depth: usize| &forest.shallow_conditions[tree.conditions as usize..][..(1 << depth) - 1];
    let words = match tree.depth {
        0 => [0; BLOCK / 8],
        1 => dense_codes::<1>(dense(1), masks),
        2 => dense_codes::<2>(dense(2), masks),
        3 => dense_codes::<3>(dense(3), masks),
        4 => dense_codes::<4>(dense(4), masks),
        _ => sparse_codes(tree, &forest.splits, masks, reach),
    };
    for (out, word) in codes.chunks_exact_mut(8).zip(words) {
        out.copy_from_slice(&word.to_le_bytes());
    }
}

/// Deepest tree decided over its whole perfect layout.
const DENSE_DEPTH: usize = 4;

/// Leaf codes of a perfect tree of depth `D`, row `r`'s in byte `r % 8` of
/// word `r / 8`: `reach` holds the rows at each place, and the rows that go
/// right at level `k` make bit `D - 1 - k` of their leaf's number.
fn dense_codes<const D: usize>(conditions: &[u32], masks: &[u64]) -> [u64; BLOCK / 8] {
    let mut words = [0u64; BLOCK / 8];
    let mut reach = [0u64; 1 << DENSE_DEPTH];
    reach[0] = !0;
    for level in 0..D {
        let first = (1 << level) - 1;
        let mut plane = 0;
        for place in first..2 * first + 1 {
            let rows = reach[place];
            let met = masks[conditions[place] as usize];
            let right = rows & met;
            plane |= right;
            if level + 1 < D {
                reach[2 * place + 1] = rows & !met;
                reach[2 * place + 2] = right;
            }
        }
        spread_level(&mut words, plane);
    }
    words
}

/// Leaf codes as [`dense_codes`] gives them, deciding only the tree's real
/// splits: a row that reaches a leaf early keeps zeros below, which number a
/// copy of that leaf. A split's children are written before they are read
/// (level order), so `reach` needs no clearing between trees.
fn sparse_codes(tree: &ShallowTree, splits: &[Split], masks: &[u64], reach: &mut [u64; 256]) -> [u64; BLOCK / 8] {
    let depth = usize::from(tree.depth);
    let splits = &splits[tree.splits as usize..];
    let mut words = [0u64; BLOCK / 8];
    reach[0] = !0;
    let mut start = 0;
    for level in 0..depth {
        let end = usize::from(tree.level_ends[level]);
        let mut plane = 0u64;
        if level + 1 < depth {
            for split in &splits[start..end] {
                let rows = reach[usize::from(split.place)];
                let met = masks[split.condition as usize];
                let right = rows & met;
                plane |= right;
                let left = 2 * usize::from(split.place) + 1;
                reach[left & 0xff] = rows & !met;
                reach[(left + 1) & 0xff] = right;
            }
        } else {
            for split in &splits[start..end] {
                plane |= reach[usize::from(split.place)] & masks[split.condition as usize];
            }
        }
        spread_level(&mut words, plane);
        start = end;
    }
    words
}

/// Appends one level's decisions (bit `r` of `plane` for row `r`) as the next
/// lower bit of each row's code.
fn spread_level(words: &mut [u64; BLOCK / 8], plane: u64) {
    for (group, word) in words.iter_mut().enumerate() {
        *word = (*word << 1) | SPREAD[((plane >> (8 * group)) & 0xff) as usize];
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
fn add_leaves<T: Sum>(windows: &[&[T; 256]], codes: &[[u8; BLOCK]], acc: &mut [T; BLOCK], n: usize) {
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
