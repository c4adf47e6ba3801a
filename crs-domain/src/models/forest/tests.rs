use ndarray::Array2;

use super::*;
use crate::rng::SplitMix64;

fn settings(width: usize, base_score: f64, precision: Precision) -> Settings {
    Settings { width, base_score, precision, link: Link::Identity }
}

fn split(feature: usize, threshold: f64, left: usize, right: usize) -> Node {
    Node::Split { feature, threshold, left, right }
}

fn leaf(value: f64) -> Node {
    Node::Leaf { value }
}

/// The plain walk every row's margin must equal: the f64 comparison, tree by
/// tree, summed in the forest's precision.
fn reference(trees: &[Tree], settings: &Settings, row: &[f32]) -> f64 {
    let leaf_of = |tree: &Tree| {
        let mut i = 0;
        loop {
            match tree.nodes[i] {
                Node::Leaf { value } => return value,
                Node::Split { feature, threshold, left, right } => {
                    i = if f64::from(row[feature]) >= threshold { right } else { left };
                }
            }
        }
    };
    match settings.precision {
        Precision::F64 => trees.iter().fold(settings.base_score, |acc, t| acc + leaf_of(t)),
        Precision::F32 => f64::from(trees.iter().fold(settings.base_score as f32, |acc, t| acc + leaf_of(t) as f32)),
    }
}

fn assert_bitwise(forest: &Forest, trees: &[Tree], settings: &Settings, rows: &Array2<f32>) {
    let margins = forest.margins(rows.view());
    assert_eq!(margins.len(), rows.nrows());
    for (r, (got, row)) in margins.iter().zip(rows.rows()).enumerate() {
        let want = reference(trees, settings, row.as_slice().unwrap());
        assert_eq!(got.to_bits(), want.to_bits(), "row {r} of {}: {got} vs {want}", rows.nrows());
    }
}

/// A random tree of at most `max_depth` levels of splits.
fn random_tree(rng: &mut SplitMix64, width: usize, max_depth: usize, thresholds: &[f64]) -> Tree {
    let mut nodes = vec![leaf(0.0)];
    let mut open = vec![(0usize, 0usize)];
    while let Some((at, depth)) = open.pop() {
        if depth < max_depth && (depth == 0 || rng.next_f64() < 0.8) {
            let left = nodes.len();
            nodes.push(leaf(0.0));
            nodes.push(leaf(0.0));
            nodes[at] = split(rng.below(width), thresholds[rng.below(thresholds.len())], left, left + 1);
            open.push((left, depth + 1));
            open.push((left + 1, depth + 1));
        } else {
            nodes[at] = leaf((rng.next_f64() - 0.5) * 0.3);
        }
    }
    Tree { nodes }
}

fn random_rows(rng: &mut SplitMix64, n: usize, width: usize, cells: &[f32]) -> Array2<f32> {
    Array2::from_shape_fn((n, width), |_| cells[rng.below(cells.len())])
}

#[test]
fn random_forests_match_the_plain_walk_bit_for_bit_at_every_block_boundary() {
    let mut rng = SplitMix64::new(7);
    // Device codes and fractions: thresholds between integers, on them, and
    // ones that are not f32 numbers.
    let thresholds = [0.5, 1.5, 1.0, 2.0, 0.0, -0.25, 0.1, 0.300_000_000_000_000_04, 1e-30];
    let cells = [0.0, 1.0, 2.0, 0.5, 1.5, 0.1, -3.0, f32::NAN, 1e-30];
    // Depths on both sides of the dense and block limits; widths on both sides of 64 columns.
    for (case, max_depth) in [1usize, 3, 4, 5, 6, 8, 9, 12].into_iter().enumerate() {
        for precision in [Precision::F64, Precision::F32] {
            let width = 5 + 11 * case;
            let trees: Vec<Tree> = (0..40).map(|_| random_tree(&mut rng, width, max_depth, &thresholds)).collect();
            let settings = settings(width + 2, -1.25, precision);
            let forest = Forest::new(&trees, settings).unwrap();
            for n in [0, 1, block::SMALL - 1, block::SMALL, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17] {
                // Matrices may be wider than the forest reads.
                let rows = random_rows(&mut rng, n, width + 3, &cells);
                assert_bitwise(&forest, &trees, &settings, &rows);
            }
        }
    }
}

#[test]
fn thresholds_between_device_codes_split_as_written() {
    // device < 0.5: Computer; < 1.5: Smartphone; else Tablet.
    let tree = Tree { nodes: vec![split(0, 0.5, 1, 2), leaf(1.0), split(0, 1.5, 3, 4), leaf(2.0), leaf(3.0)] };
    let settings = settings(1, 0.0, Precision::F64);
    let forest = Forest::new(std::slice::from_ref(&tree), settings).unwrap();
    for n in [1, 100] {
        let rows = Array2::from_shape_fn((n, 1), |(r, _)| (r % 3) as f32);
        let want: Vec<f64> = (0..n).map(|r| [1.0, 2.0, 3.0][r % 3]).collect();
        assert_eq!(forest.margins(rows.view()), want, "{n} rows");
    }
}

#[test]
fn thresholds_that_are_not_f32_numbers_decide_as_in_f64() {
    let x = 0.1f32;
    let exact = f64::from(x);
    for (threshold, right) in [(exact, true), (exact.next_up(), false), (exact.next_down(), true), (0.1, true)] {
        let trees = [Tree { nodes: vec![split(0, threshold, 1, 2), leaf(0.0), leaf(1.0)] }];
        let forest = Forest::new(&trees, settings(1, 0.0, Precision::F64)).unwrap();
        for n in [1, 70] {
            let rows = Array2::from_elem((n, 1), x);
            assert!(forest.margins(rows.view()).iter().all(|m| *m == f64::from(u8::from(right))), "{threshold}");
        }
    }
    assert_eq!(f32_at_least(1e300), f32::INFINITY);
    assert_eq!(f32_at_least(-1e300), f32::MIN);
}

#[test]
fn f32_precision_adds_in_f32_in_tree_order() {
    // In f64 the tiny leaves add up; in f32 each one is lost against 1.
    let mut trees = vec![Tree { nodes: vec![leaf(1.0)] }];
    trees.extend((0..10).map(|_| Tree { nodes: vec![split(0, 0.5, 1, 2), leaf(1e-8), leaf(-1e-8)] }));
    let rows = Array2::<f32>::zeros((70, 1));
    let f32_forest = Forest::new(&trees, settings(1, 0.0, Precision::F32)).unwrap();
    assert!(f32_forest.margins(rows.view()).iter().all(|m| *m == 1.0));
    let f64_forest = Forest::new(&trees, settings(1, 0.0, Precision::F64)).unwrap();
    let want = (0..10).fold(1.0f64, |acc, _| acc + 1e-8);
    assert!(f64_forest.margins(rows.view()).iter().all(|m| *m == want));
    assert_ne!(want, 1.0);
    // The base and the leaves are rounded to f32 first.
    let one = [Tree { nodes: vec![leaf(0.1)] }];
    let forest = Forest::new(&one, settings(1, 0.2, Precision::F32)).unwrap();
    assert_eq!(forest.margins(rows.view())[0], f64::from(0.2f32 + 0.1f32));
}

#[test]
fn a_forest_of_lone_leaves_and_a_matrix_without_columns() {
    let trees = [Tree { nodes: vec![leaf(0.5)] }, Tree { nodes: vec![leaf(-0.25)] }];
    let forest = Forest::new(&trees, settings(0, 1.0, Precision::F64)).unwrap();
    for n in [0, 1, 64, 65] {
        assert_eq!(forest.margins(Array2::<f32>::zeros((n, 0)).view()), vec![1.25; n]);
    }
}

#[test]
fn links_are_applied_in_the_forests_precision() {
    let trees = [Tree { nodes: vec![split(0, 0.5, 1, 2), leaf(-3.0), leaf(2.0)] }];
    let rows = ndarray::arr2(&[[0.0f32], [1.0]]);
    let with = |precision, link| {
        Forest::new(&trees, Settings { width: 1, base_score: 0.5, precision, link }).unwrap().predict(rows.view())
    };
    let logistic = |z: f64| 1.0 / (1.0 + (-z).exp());
    assert_eq!(with(Precision::F64, Link::Logistic), vec![logistic(-2.5), logistic(2.5)]);
    let logistic32 = |z: f32| f64::from(1.0 / (1.0 + (-z).exp()));
    assert_eq!(with(Precision::F32, Link::Logistic), vec![logistic32(-2.5), logistic32(2.5)]);
    // xgboost's float sigmoid caps -z at 88.7: below that margin the
    // probability is 1 / (exp(88.7) + 1), a subnormal f32, not 0.
    let far = [Tree { nodes: vec![leaf(-100.0)] }];
    let settings = Settings { width: 1, base_score: 0.0, precision: Precision::F32, link: Link::Logistic };
    let p = Forest::new(&far, settings).unwrap().predict(rows.view());
    assert_eq!(p, vec![f64::from(1.0 / (88.7f32.exp() + 1.0)); 2]);
    assert!(p[0] > 0.0 && p[0] < 1e-38);
    assert_eq!(with(Precision::F64, Link::ClipToUnit), vec![0.0, 1.0]);
    assert_eq!(with(Precision::F64, Link::Identity), vec![-2.5, 2.5]);
}

#[test]
#[should_panic(expected = "the matrix has 1 columns, the model reads 2")]
fn a_matrix_narrower_than_the_forest_is_a_bug() {
    let forest = Forest::new(&[Tree { nodes: vec![leaf(0.0)] }], settings(2, 0.0, Precision::F64)).unwrap();
    forest.margins(Array2::<f32>::zeros((3, 1)).view());
}

#[test]
fn broken_trees_are_refused_naming_the_tree_and_node() {
    let good = || vec![split(1, 0.5, 1, 2), leaf(-0.5), leaf(0.5)];
    let cases: Vec<(Vec<Tree>, f64, &str)> = vec![
        (vec![], 0.0, "the model has no trees"),
        (vec![Tree { nodes: good() }], f64::NAN, "base_score is NaN, not a finite number"),
        (vec![Tree { nodes: good() }, Tree { nodes: vec![] }], 0.0, "tree 1 has no nodes"),
        (
            vec![Tree { nodes: vec![split(1, 0.5, 1, 2), leaf(f64::INFINITY), leaf(0.5)] }],
            0.0,
            "tree 0 node 1: leaf value inf is not a finite number",
        ),
        (
            vec![Tree { nodes: vec![split(1, 0.5, 1, 3), leaf(0.0), leaf(0.5)] }],
            0.0,
            "tree 0 node 0: child 3 is out of range (children come after their parent, below 3)",
        ),
        // A cycle: node 1 pointing back at the root.
        (
            vec![Tree { nodes: vec![split(1, 0.5, 1, 2), split(0, 0.5, 0, 2), leaf(0.5)] }],
            0.0,
            "tree 0 node 1: child 0 is out of range (children come after their parent, below 3)",
        ),
        (
            vec![Tree { nodes: vec![split(1, 0.5, 1, 1), leaf(0.0), leaf(0.5)] }],
            0.0,
            "tree 0 node 0: both children are node 1",
        ),
        (
            vec![Tree { nodes: vec![split(2, 0.5, 1, 2), leaf(0.0), leaf(0.5)] }],
            0.0,
            "tree 0 node 0: feature 2 is out of range (the model has 2)",
        ),
        (
            vec![Tree { nodes: vec![split(1, f64::NAN, 1, 2), leaf(0.0), leaf(0.5)] }],
            0.0,
            "tree 0 node 0: threshold NaN is not a finite number",
        ),
        // Node 3 shared by both splits under the root; node 4 by none.
        (
            vec![Tree {
                nodes: vec![
                    split(0, 0.5, 1, 2),
                    split(0, 0.5, 3, 4),
                    split(0, 0.5, 3, 5),
                    leaf(0.0),
                    leaf(0.0),
                    leaf(0.0),
                ],
            }],
            0.0,
            "tree 0 node 3 is reached from 2 splits, not one",
        ),
        (
            vec![Tree { nodes: vec![split(0, 0.5, 1, 2), leaf(0.0), leaf(0.0), leaf(0.0)] }],
            0.0,
            "tree 0 node 3 is reached from 0 splits, not one",
        ),
    ];
    for (trees, base_score, expected) in cases {
        let err = Forest::new(&trees, settings(2, base_score, Precision::F64)).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
}

#[test]
fn memory_is_counted_from_the_evaluation_arrays() {
    let mut rng = SplitMix64::new(3);
    let small: Vec<Tree> = (0..10).map(|_| random_tree(&mut rng, 4, 3, &[0.5])).collect();
    let large: Vec<Tree> = (0..100).map(|_| random_tree(&mut rng, 4, 3, &[0.5])).collect();
    let small = Forest::new(&small, settings(4, 0.0, Precision::F64)).unwrap();
    let large = Forest::new(&large, settings(4, 0.0, Precision::F64)).unwrap();
    assert!(small.memory_bytes() > size_of::<Forest>());
    // 90 more trees of at most 8 leaves and 7 conditions each.
    let more = large.memory_bytes() - small.memory_bytes();
    assert!(more > 90 * 8 * 8 && more < 90 * 200, "{more}");
}
