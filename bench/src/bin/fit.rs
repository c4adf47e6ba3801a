//! Fit benchmark: loads a training file once the way `crctl evaluate` does
//! (validation, cleaning, aggregation, a 20% keyword holdout), then fits each
//! model configuration `--repeats` times and prints fit times and eval metrics.
//!
//! ```text
//! cargo run --release -p crs-bench --bin fit -- --data ../shared/data/keyword_conversions.csv.gz --repeats 5
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use crs_domain::data::{DataFile, HOLDOUT_FRACTION, Observations, prepare};
use crs_domain::evaluation::{Evaluation, Stage, train_and_evaluate};
use crs_domain::metrics::Metrics;
use crs_domain::models::ModelVer;

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
}

/// One model configuration: a version and its hyperparameter YAML.
struct Config {
    label: &'static str,
    version: &'static str,
    yaml: Option<&'static str>,
}

const CONFIGS: [Config; 4] = [
    Config { label: "v0", version: "v0", yaml: None },
    Config { label: "v1", version: "v1", yaml: None },
    Config { label: "v1 growth=balanced", version: "v1", yaml: Some("growth: balanced") },
    Config { label: "v1 trees=10", version: "v1", yaml: Some("trees: 10") },
];

struct Timing {
    label: &'static str,
    seconds: Vec<f64>,
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
            dump(&path, observations).with_context(|| format!("writing {}", path.display()))?;
            println!("  wrote {} ({} rows)", path.display(), observations.len());
        }
    }

    let mut timings = Vec::new();
    for config in &CONFIGS {
        let model_ver = ModelVer::parse(config.version)?;
        let params = model_ver.version().params("bench", config.yaml)?;
        let mut seconds = Vec::with_capacity(args.repeats);
        let mut last = None;
        for _ in 0..args.repeats {
            let run = train_and_evaluate(model_ver, &params, &data.train, &data.eval, |_| {})?;
            let fit = run.seconds.iter().find(|(stage, _)| *stage == Stage::Training).map_or(0.0, |(_, s)| *s);
            seconds.push(fit);
            last = Some(run.eval);
        }
        let eval = last.context("at least one repeat")?;
        eprintln!("  {}: params {params}, median fit {:.4} s", config.label, median(&seconds));
        timings.push(Timing { label: config.label, seconds, eval });
    }

    println!();
    println!("{}", table(&timings, args.repeats));
    Ok(())
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
        "{:<20}{:>12}{:>12}{:>12}{:>12}{:>10}{:>10}{:>10}",
        format!("fit x{repeats}"),
        "median s",
        "min s",
        "max s",
        "/ v0",
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
        let _ = write!(out, "{:<20}{m:>12.6}{min:>12.6}{max:>12.6}{:>12.1}", t.label, m / v0);
        metrics(&mut out, &t.eval.model);
    }
    if let Some(first) = timings.first() {
        for (label, m) in [
            ("baseline: device", &first.eval.device),
            ("baseline: global", &first.eval.global),
            ("baseline: zero", &first.eval.zero),
        ] {
            let _ = write!(out, "{label:<20}{:>48}", "");
            metrics(&mut out, m);
        }
        let _ = write!(out, "eval: {} observations, {} clicks", first.eval.rows, first.eval.clicks);
    }
    out
}

/// One CSV line per observation: `entity_id,device,att1..attN,clicks,conversions`.
fn dump(path: &Path, observations: &Observations) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let rows = &observations.rows;
    write!(out, "entity_id,device")?;
    for name in rows.attribute_names() {
        write!(out, ",{name}")?;
    }
    writeln!(out, ",clicks,conversions")?;
    for i in 0..observations.len() {
        write!(out, "{},{}", rows.entity_id[i], rows.device[i])?;
        for value in rows.attributes(i) {
            write!(out, ",{value}")?;
        }
        writeln!(out, ",{},{}", observations.clicks[i], observations.conversions[i])?;
    }
    out.flush()
}
