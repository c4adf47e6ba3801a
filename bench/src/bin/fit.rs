//! Fit benchmark: loads a training file once the way `crctl evaluate` does
//! (validation, cleaning, aggregation, a 20% keyword holdout), then fits each
//! model configuration `--repeats` times (v2's, which search a grid, `--v2-repeats`
//! times) and prints fit times, prediction times and eval metrics. With
//! `--boost-reference` it also runs `bench/boost_reference.py` (xgboost and
//! lightgbm) on the same split in the same run.
//!
//! ```text
//! cargo run --release -p crs-bench --bin fit -- --data FILE --repeats 5 --boost-reference
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use crs_bench::write_observations;
use crs_domain::data::{DataFile, HOLDOUT_FRACTION, Observations, prepare};
use crs_domain::evaluation::import_and_evaluate;
use crs_domain::evaluation::{Evaluation, TrainingPhase, train_and_evaluate};
use crs_domain::metrics::Metrics;
use crs_domain::models::imported::{Framework, ImportedModel};
use crs_domain::models::{ModelVer, TrainedModel, v2};

#[derive(Debug, Parser)]
#[command(about = "Times model fits on one data file and scores them on its keyword holdout")]
struct Args {
    /// Training data in the raw schema (CSV or gzip CSV); 20% of its keywords are held out.
    #[arg(long)]
    data: PathBuf,
    /// Fits per model configuration.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Write the train and eval observations to DIR/train.csv and DIR/eval.csv
    /// (for bench/sklearn_reference.py).
    #[arg(long, value_name = "DIR")]
    dump_split: Option<PathBuf>,
    /// Fits per v2 configuration (each one searches its grid).
    #[arg(long, default_value_t = 1)]
    v2_repeats: usize,
    /// Also run bench/boost_reference.py (xgboost, lightgbm) on the same split.
    #[arg(long)]
    boost_reference: bool,
    /// The Python interpreter for --boost-reference.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Threads the Python libraries may use.
    #[arg(long, default_value_t = 2)]
    python_threads: usize,
    /// Fit only v2 (the defaults), and next to it an xgboost model of 300
    /// depth-6 trees fitted by bench/imported_xgb.py on the same split and
    /// imported as the platform imports it: the forest's cost per row for
    /// each, and their ratio.
    #[arg(long)]
    imported: bool,
}

/// One model configuration: a version and its hyperparameter YAML.
struct Config {
    label: &'static str,
    version: &'static str,
    yaml: Option<&'static str>,
}

const CONFIGS: [Config; 11] = [
    Config { label: "v0", version: "v0", yaml: None },
    Config { label: "v1", version: "v1", yaml: None },
    Config { label: "v1 growth=balanced", version: "v1", yaml: Some("growth: balanced") },
    Config { label: "v1 trees=10", version: "v1", yaml: Some("trees: 10") },
    // The defaults (bucket/config/v2/params.yaml), then other fold seeds for the
    // seed-to-seed noise, then tree caps for the accuracy / speed trade.
    Config { label: "v2", version: "v2", yaml: None },
    Config { label: "v2 seed=1", version: "v2", yaml: Some("seed: 1") },
    Config { label: "v2 seed=2", version: "v2", yaml: Some("seed: 2") },
    Config { label: "v2 seed=3", version: "v2", yaml: Some("seed: 3") },
    Config { label: "v2 seed=4", version: "v2", yaml: Some("seed: 4") },
    Config { label: "v2 max_trees=100", version: "v2", yaml: Some("max_trees: 100") },
    Config { label: "v2 max_trees=30", version: "v2", yaml: Some("max_trees: 30") },
];

struct Timing {
    label: String,
    seconds: Vec<f64>,
    /// Predicting the eval rows (pipeline and model).
    predict: Speed,
    /// The fitted model alone on the eval rows' prebuilt matrix (trees and the
    /// link function, no matrix building).
    model: Speed,
    /// v2's forest alone on that matrix, and the row walk it replaced.
    forest: Option<ForestSpeed>,
    /// Trees in the model, for versions that report it.
    trees: Option<u64>,
    eval: Evaluation,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.repeats >= 1, "--repeats must be at least 1");

    // The same path as `crctl evaluate --train FILE`: the data contract, then a keyword holdout.
    let started = Instant::now();
    let bytes = std::fs::read(&args.data).with_context(|| format!("reading {}", args.data.display()))?;
    let name = args.data.file_name().and_then(|n| n.to_str()).context("--data has no file name")?;
    let data = prepare(&DataFile { name: name.to_owned(), bytes: bytes.into() }, None)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let counts = &data.train_counts;
    println!("data {} loaded in {load_seconds:.2} s", args.data.display());
    println!(
        "  {} rows read, {} duplicates dropped, {} conversions clipped, {} zero-click rows dropped, {} observations",
        counts.read,
        counts.duplicates_dropped,
        counts.conversions_clipped,
        counts.zero_clicks_dropped,
        counts.observations
    );
    println!(
        "  holdout of {:.0}% of the keywords: {} train observations ({} clicks), {} eval observations ({} clicks)",
        HOLDOUT_FRACTION * 100.0,
        data.train.len(),
        data.train.total_clicks(),
        data.eval.len(),
        data.eval.total_clicks()
    );

    if let Some(dir) = &args.dump_split {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (file, observations) in [("train.csv", &data.train), ("eval.csv", &data.eval)] {
            let path = dir.join(file);
            write_observations(&path, observations).with_context(|| format!("writing {}", path.display()))?;
            println!("  wrote {} ({} rows)", path.display(), observations.len());
        }
    }

    let mut timings = Vec::new();
    for config in CONFIGS.iter().filter(|c| !args.imported || c.label == "v2") {
        let model_ver = ModelVer::parse(config.version)?;
        let params = model_ver.version().params("bench", config.yaml)?;
        let repeats = if config.version == "v2" { args.v2_repeats.max(1) } else { args.repeats };
        let mut seconds = Vec::with_capacity(repeats);
        let mut last = None;
        for _ in 0..repeats {
            let run = train_and_evaluate(model_ver, &params, &data.train, &data.eval, |_| {})?;
            let fit = run.seconds.iter().find(|(phase, _)| *phase == TrainingPhase::Training).map_or(0.0, |(_, s)| *s);
            seconds.push(fit);
            last = Some(run);
        }
        let run = last.context("at least one repeat")?;
        let (predict, model, forest) = predict_micros(&run.model, &data.eval)?;
        let trees = run.report["trees"].as_u64();
        let chosen = &run.report["chosen"];
        eprintln!("  {}: params {params}, median fit {:.4} s", config.label, median(&seconds));
        if !chosen.is_null() {
            eprintln!("    chose {chosen}, {} trees", trees.unwrap_or(0));
        }
        timings.push(Timing { label: config.label.to_owned(), seconds, predict, model, forest, trees, eval: run.eval });
    }

    if args.imported {
        timings.push(imported_xgb(&args, &data)?);
    }
    println!();
    println!("{}", table(&timings, args.repeats));
    if let (Some(v2), Some(imported)) = (
        timings.iter().find(|t| t.label == "v2").and_then(|t| t.forest),
        timings.iter().find(|t| t.label == IMPORTED).and_then(|t| t.forest),
    ) {
        println!(
            "forest alone per row, imported xgboost / v2: {:.2} (CPU time), {:.2} (wall clock)",
            imported.forest.cpu / v2.forest.cpu,
            imported.forest.wall / v2.forest.wall
        );
    }
    println!();
    println!("{}", wall_clock(&timings));
    println!();
    println!("{}", seed_noise(&timings));

    if args.boost_reference {
        let dir = tempfile::tempdir()?;
        for (file, observations) in [("train.csv", &data.train), ("eval.csv", &data.eval)] {
            write_observations(&dir.path().join(file), observations)?;
        }
        println!();
        println!("{}", boost_reference(&args, dir.path(), &timings)?);
    }
    Ok(())
}

/// The label of the imported model's row.
const IMPORTED: &str = "xgb imported 300x6";

/// bench/imported_xgb.py's model, fitted on the split's training rows,
/// imported (converted into the forest) and timed as the other rows are.
fn imported_xgb(args: &Args, data: &crs_domain::data::PreparedData) -> anyhow::Result<Timing> {
    let (bytes, fit) = crs_bench::fit_imported_xgb(&args.python, args.python_threads, &data.train)?;
    let model_ver = ModelVer::declare("bench-xgb")?;
    let run = import_and_evaluate(model_ver, Framework::Xgboost, &bytes, &data.train, &data.eval, |_| {})?;
    let (predict, model, forest) = predict_micros(&run.model, &data.eval)?;
    let trees = run.report["trees"].as_u64();
    eprintln!("  {IMPORTED}: fitted by xgboost in {fit:.1} s (wall, with Python's start)");
    Ok(Timing { label: IMPORTED.to_owned(), seconds: vec![fit], predict, model, forest, trees, eval: run.eval })
}

/// Median microseconds per row on `rows` of `TrainedModel::predict`, which
/// builds the matrix from keyword rows as serving does; of the fitted model
/// alone on the matrix built once beforehand; and, for v2, of its forest's
/// margins alone on that matrix and of the row walk it replaced (see [`RowWalk`]).
fn predict_micros(model: &TrainedModel, rows: &Observations) -> anyhow::Result<(Speed, Speed, Option<ForestSpeed>)> {
    let features = model.features.transform(&rows.rows, model.required_attributes())?;
    let whole: Predict = Box::new(|| Ok(model.predict(&rows.rows)?.len()));
    let alone: Predict = Box::new(|| Ok(model.model.predict(&features).len()));
    if model.model_ver.is_imported() {
        let imported: ImportedModel = serde_json::from_value(model.model.to_json())?;
        let forest = imported.forest();
        let [whole, alone, forest] =
            per_row_micros([whole, alone, Box::new(|| Ok(forest.margins(features.matrix.view()).len()))])?;
        // No row walk of its own: the imported model is predicted by the forest only.
        return Ok((whole, alone, Some(ForestSpeed { forest, walk: Speed { cpu: f64::NAN, wall: f64::NAN } })));
    }
    if model.model_ver.name() != "v2" {
        let [whole, alone] = per_row_micros([whole, alone])?;
        return Ok((whole, alone, None));
    }
    let booster: v2::Booster = serde_json::from_value(model.model.to_json())?;
    let forest = booster.forest();
    let values = features.matrix.as_slice().context("a standard-layout matrix")?;
    let walk = RowWalk::new(booster.data());
    let width = features.matrix.ncols();
    anyhow::ensure!(
        walk.margins(values, width) == forest.margins(features.matrix.view()),
        "the forest and the row walk differ"
    );
    let [whole, alone, forest, walk] = per_row_micros([
        whole,
        alone,
        Box::new(|| Ok(forest.margins(features.matrix.view()).len())),
        Box::new(|| Ok(walk.margins(values, width).len())),
    ])?;
    Ok((whole, alone, Some(ForestSpeed { forest, walk })))
}

/// Microseconds per row, medians of the samples: the predicting thread's CPU
/// time, which other processes on a shared machine barely move, and the wall clock.
#[derive(Clone, Copy, Debug)]
struct Speed {
    cpu: f64,
    wall: f64,
}

/// v2's forest alone on the prebuilt matrix (margins, no link function), and
/// the row walk it replaced (see [`RowWalk`]) on the same matrix.
#[derive(Clone, Copy, Debug)]
struct ForestSpeed {
    forest: Speed,
    walk: Speed,
}

/// The CPU time this thread has run (`CLOCK_THREAD_CPUTIME_ID`, exact to the
/// nanosecond, unlike `/proc`'s counters, which move on scheduler ticks).
fn thread_cpu_seconds() -> f64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// One way of predicting the rows to time; returns the rows it predicted.
type Predict<'a> = Box<dyn FnMut() -> anyhow::Result<usize> + 'a>;

/// Samples per measurement.
const SAMPLES: usize = 21;

/// [`Speed`] of each of `predicts` over [`SAMPLES`] samples, taken in turns
/// (one sample of each, then the next round): a disturbance of a second or so
/// on a shared machine then moves a few samples of every measurement, which
/// the medians shrug off, instead of all the samples of one. Each sample
/// repeats a predict for at least 20 ms of CPU time so that a fast model on a
/// few thousand rows is not timed at the clock's resolution.
fn per_row_micros<const N: usize>(mut predicts: [Predict<'_>; N]) -> anyhow::Result<[Speed; N]> {
    let mut plans = Vec::with_capacity(N);
    for predict in &mut predicts {
        let started = thread_cpu_seconds();
        let rows = predict()?.max(1);
        let once = thread_cpu_seconds() - started;
        plans.push((rows, ((0.02 / once.max(1e-9)).ceil() as usize).clamp(1, 10_000)));
    }
    let (mut cpu, mut wall) = (vec![Vec::with_capacity(SAMPLES); N], vec![Vec::with_capacity(SAMPLES); N]);
    for _ in 0..SAMPLES {
        for (i, predict) in predicts.iter_mut().enumerate() {
            let (rows, passes) = plans[i];
            let (started, cpu_started) = (Instant::now(), thread_cpu_seconds());
            for _ in 0..passes {
                std::hint::black_box(predict()?);
            }
            let per_row = |seconds: f64| seconds * 1e6 / (passes * rows) as f64;
            cpu[i].push(per_row(thread_cpu_seconds() - cpu_started));
            wall[i].push(per_row(started.elapsed().as_secs_f64()));
        }
    }
    Ok(std::array::from_fn(|i| Speed { cpu: median(&cpu[i]), wall: median(&wall[i]) }))
}

/// v2's prediction before the block forest, kept as the bench's baseline: each
/// row walks each tree from its root over one flat copy of the saved trees
/// (each split's children side by side), comparing in f64, and adds the leaves
/// in tree order.
struct RowWalk {
    /// (threshold, or the value of a leaf; feature, or `u32::MAX` for a leaf; left child).
    nodes: Vec<(f64, u32, u32)>,
    roots: Vec<u32>,
    base_score: f64,
}

impl RowWalk {
    fn new(data: &v2::BoosterData) -> Self {
        let mut nodes = Vec::new();
        let mut roots = Vec::new();
        for tree in &data.trees {
            let root = nodes.len();
            roots.push(root as u32);
            let mut queue = std::collections::VecDeque::from([(0usize, root)]);
            nodes.push((0.0, u32::MAX, 0));
            while let Some((saved, flat)) = queue.pop_front() {
                let node = &tree.nodes[saved];
                if node.is_leaf() {
                    nodes[flat] = (node.value, u32::MAX, 0);
                } else {
                    let left = nodes.len();
                    nodes.extend([(0.0, u32::MAX, 0), (0.0, u32::MAX, 0)]);
                    nodes[flat] = (node.threshold, node.feature as u32, left as u32);
                    queue.push_back((node.left, left));
                    queue.push_back((node.right, left + 1));
                }
            }
        }
        RowWalk { nodes, roots, base_score: data.base_score }
    }

    fn margins(&self, values: &[f32], width: usize) -> Vec<f64> {
        values
            .chunks_exact(width)
            .map(|row| {
                let mut sum = self.base_score;
                for &root in &self.roots {
                    let mut i = root as usize;
                    loop {
                        let (threshold, feature, left) = self.nodes[i];
                        if feature == u32::MAX {
                            sum += threshold;
                            break;
                        }
                        i = left as usize + usize::from(f64::from(row[feature as usize]) >= threshold);
                    }
                }
                sum
            })
            .collect()
    }
}

/// The spread of v2's eval metrics over the fold seeds.
fn seed_noise(timings: &[Timing]) -> String {
    let seeds: Vec<&Timing> = timings.iter().filter(|t| t.label == "v2" || t.label.starts_with("v2 seed=")).collect();
    let mut out = String::new();
    let spread = |values: Vec<f64>| {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
        let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        (mean, sd, hi - lo)
    };
    let _ = writeln!(out, "v2 over {} fold seeds (mean, standard deviation, max - min):", seeds.len());
    for (name, values) in [
        ("wmae", seeds.iter().map(|t| t.eval.model.wmae).collect::<Vec<_>>()),
        ("wmse", seeds.iter().map(|t| t.eval.model.wmse).collect()),
        ("logloss", seeds.iter().map(|t| t.eval.model.logloss).collect()),
    ] {
        let (mean, sd, range) = spread(values);
        let _ = writeln!(out, "  {name:<8} {mean:.6}  sd {sd:.6}  range {range:.6}");
    }
    out
}

/// Runs bench/boost_reference.py on the dumped split and tables its results
/// next to v2's.
fn boost_reference(args: &Args, split: &Path, timings: &[Timing]) -> anyhow::Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("boost_reference.py");
    eprintln!("  running {} (xgboost and lightgbm grids; takes a few minutes)", script.display());
    let output = Command::new(&args.python)
        .arg(&script)
        .arg("--split")
        .arg(split)
        .arg("--threads")
        .arg(args.python_threads.to_string())
        .arg("--json")
        .output()
        .with_context(|| format!("running {} {}", args.python, script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut out = String::new();
    if let Some(first) = stdout.lines().next() {
        let _ = writeln!(out, "{first}");
    }
    let _ = writeln!(
        out,
        "{:<20}{:>14}{:>12}{:>8}{:>10}{:>11}{:>10}  settings",
        "same split", "search+fit s", "final fit s", "trees", "wmae", "wmse", "logloss"
    );
    for t in timings.iter().filter(|t| t.label == "v2" || t.label == "v1") {
        let m = &t.eval.model;
        let trees = t.trees.map_or_else(|| "1".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "{:<20}{:>14.2}{:>12}{trees:>8}{:>10.5}{:>11.6}{:>10.5}",
            t.label,
            median(&t.seconds),
            "",
            m.wmae,
            m.wmse,
            m.logloss
        );
    }
    for line in stdout.lines().filter_map(|l| l.strip_prefix("RESULT ")) {
        let r: serde_json::Value = serde_json::from_str(line).context("a RESULT line of boost_reference.py")?;
        let number = |key: &str| r[key].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "{:<20}{:>14.2}{:>12.2}{:>8}{:>10.5}{:>11.6}{:>10.5}  {}",
            r["label"].as_str().unwrap_or("?"),
            number("search_seconds") + number("fit_seconds"),
            number("fit_seconds"),
            // A JSON value ignores the width, so the count is formatted as a number.
            r["trees"].as_u64().unwrap_or(0),
            number("wmae"),
            number("wmse"),
            number("logloss"),
            r["settings"]
        );
    }
    Ok(out)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn table(timings: &[Timing], repeats: usize) -> String {
    let mut out = String::new();
    let v0 = timings.iter().find(|t| t.label == "v0").map_or(f64::NAN, |t| median(&t.seconds));
    let _ = writeln!(
        out,
        "{:<20}{:>12}{:>12}{:>12}{:>12}{:>7}{:>12}{:>10}{:>11}{:>9}{:>10}{:>10}{:>10}",
        format!("fit x{repeats}"),
        "median s",
        "min s",
        "max s",
        "/ v0",
        "trees",
        "predict µs",
        "model µs",
        "forest µs",
        "walk µs",
        "wmae",
        "wmse",
        "logloss"
    );
    let metrics = |out: &mut String, m: &Metrics| {
        let _ = writeln!(out, "{:>10.5}{:>10.6}{:>10.5}", m.wmae, m.wmse, m.logloss);
    };
    for t in timings {
        let min = t.seconds.iter().copied().fold(f64::INFINITY, f64::min);
        let max = t.seconds.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let m = median(&t.seconds);
        let trees = t.trees.map_or_else(String::new, |n| n.to_string());
        let forest = t.forest.map_or_else(String::new, |f| format!("{:.3}", f.forest.cpu));
        let walk =
            t.forest.filter(|f| f.walk.cpu.is_finite()).map_or_else(String::new, |f| format!("{:.3}", f.walk.cpu));
        let _ = write!(
            out,
            "{:<20}{m:>12.6}{min:>12.6}{max:>12.6}{:>12.1}{trees:>7}{:>12.3}{:>10.3}{forest:>11}{walk:>9}",
            t.label,
            m / v0,
            t.predict.cpu,
            t.model.cpu
        );
        metrics(&mut out, &t.eval.model);
    }
    if let Some(first) = timings.first() {
        for (label, m) in [
            ("baseline: device", &first.eval.device),
            ("baseline: global", &first.eval.global),
            ("baseline: zero", &first.eval.zero),
        ] {
            let _ = write!(out, "{label:<20}{:>97}", "");
            metrics(&mut out, m);
        }
        let _ = write!(out, "eval: {} observations, {} clicks", first.eval.rows, first.eval.clicks);
    }
    out
}

/// The prediction speeds of the table by the wall clock, which a busy machine inflates.
fn wall_clock(timings: &[Timing]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20}{:>12}{:>10}{:>11}{:>9}  (µs per row, wall clock; the table's are CPU time)",
        "", "predict µs", "model µs", "forest µs", "walk µs"
    );
    for t in timings {
        let forest = t.forest.map_or_else(String::new, |f| format!("{:.3}", f.forest.wall));
        let walk =
            t.forest.filter(|f| f.walk.wall.is_finite()).map_or_else(String::new, |f| format!("{:.3}", f.walk.wall));
        let _ = writeln!(out, "{:<20}{:>12.3}{:>10.3}{forest:>11}{walk:>9}", t.label, t.predict.wall, t.model.wall);
    }
    out
}
