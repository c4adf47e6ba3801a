//! Batch prediction throughput and peak memory of each model, next to the
//! Python pipeline a user would otherwise write and to the time it takes only to
//! inflate the input on one core, on the same generated files in the same run.
//!
//! ```text
//! cargo run --release -p crs-bench --bin batch -- --rows 1000000,10000000
//! ```
//!
//! Each batch runs in a fresh child process so that its peak resident memory is
//! its own. Generated files are kept in `--data-dir` between runs.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use crs_domain::data::synth::{ATTRIBUTES, SynthSpec, write_prediction_input, write_training};
use crs_domain::evaluation::{import_and_evaluate, train_and_evaluate};
use crs_domain::models::imported::Framework;
use crs_domain::models::{ModelVer, TrainedModel, sha256_hex};
use crs_platform::lifecycle::inputs::{InputKeys, Inputs};
use crs_platform::predictions::batch::{BatchOptions, predict_batch};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

/// Keywords in the training file the model is fitted on.
const TRAIN_KEYWORDS: usize = 20_000;
/// Devices per keyword in the generated data, on average (0.95 + 0.7 + 0.4).
const ROWS_PER_KEYWORD: f64 = 2.05;

#[derive(Debug, Parser)]
struct Args {
    /// Input sizes in rows, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    rows: Vec<usize>,
    /// Runs of the Rust batch (and of the inflate floor) per size and model; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Runs of the Python pipeline per size (0 skips it).
    #[arg(long, default_value_t = 1)]
    python_repeats: usize,
    /// Inputs above this many rows are read by pandas in chunks of this many
    /// rows: read whole, 10M rows would need about 60 GB.
    #[arg(long, default_value_t = 2_000_000)]
    python_chunk_rows: usize,
    /// Where generated files and the model are kept between runs.
    #[arg(long, default_value = "target/bench-data")]
    data_dir: PathBuf,
    /// Decompressed input bytes parsed at a time (the batch's memory knob).
    #[arg(long, default_value_t = BatchOptions::default().chunk_bytes)]
    chunk_bytes: usize,
    /// Model versions to batch-predict with, comma separated: built-in ones
    /// fitted with their default hyperparameters, and `xgb-300x6`, the fit
    /// bench's imported model (300 xgboost trees of depth 6, fitted by
    /// `imported_xgb.py` on the same training file and imported).
    #[arg(long, value_delimiter = ',', default_value = "v1,v2,xgb-300x6")]
    model_ver: Vec<String>,
    /// The Python that fits the imported model (with xgboost installed).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Internal: run one batch on this input and print its figures as JSON.
    #[arg(long, hide = true)]
    worker: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)?;
    let model_vers: Vec<ModelVer> = args.model_ver.iter().map(|name| model_ver(name)).collect::<Result<_, _>>()?;
    if let Some(input) = &args.worker {
        let [model_ver] = model_vers[..] else { bail!("a worker runs one model") };
        return worker(&args.data_dir, model_ver, input, args.chunk_bytes);
    }
    let train = args.data_dir.join("train.csv.gz");
    if !train.exists() {
        eprintln!("generating {}", train.display());
        write_gzip(&train, |out| write_training(&spec(1, TRAIN_KEYWORDS), out))?;
    }
    for &model_ver in &model_vers {
        fit_model(&args.data_dir, model_ver, &args.python)?;
    }

    let mut table = Vec::new();
    for &rows in &args.rows {
        let name = format!("input_{rows}.csv.gz");
        let input = args.data_dir.join(&name);
        if !input.exists() {
            eprintln!("generating {} (about {rows} rows)", input.display());
            let keywords = (rows as f64 / ROWS_PER_KEYWORD).ceil() as usize;
            write_gzip(&input, |out| write_prediction_input(&spec(1_000_000, keywords), out))?;
        }
        let floor: Vec<f64> = (0..args.repeats).map(|_| inflate_seconds(&input)).collect::<Result<_, _>>()?;
        let mut models = Vec::new();
        for &model_ver in &model_vers {
            let runs: Vec<Value> = (0..args.repeats)
                .map(|_| run_rust(&args.data_dir, model_ver, &name, args.chunk_bytes))
                .collect::<Result<_, _>>()?;
            models.push((model_ver, runs));
        }
        let chunksize = if rows > args.python_chunk_rows { args.python_chunk_rows } else { 0 };
        let python: Vec<Value> = (0..args.python_repeats)
            .map(|_| run_python(&train, &input, &args.data_dir, chunksize))
            .collect::<Result<_, _>>()?;
        table.push(Measured { floor, models, python });
    }
    report(&table);
    Ok(())
}

fn spec(first_entity: i64, keywords: usize) -> SynthSpec {
    SynthSpec { first_entity, keywords, attributes: ATTRIBUTES, seed: 11 }
}

fn write_gzip(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<u64>) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let mut out = GzEncoder::new(BufWriter::new(std::fs::File::create(&partial)?), Compression::default());
    write(&mut out)?;
    out.finish()?.flush()?;
    std::fs::rename(partial, path)?;
    Ok(())
}

/// The imported model's version name.
const IMPORTED: &str = "xgb-300x6";

/// A built-in version by name, or the imported model's version, declared.
fn model_ver(name: &str) -> anyhow::Result<ModelVer> {
    Ok(if name == IMPORTED { ModelVer::declare(name)? } else { name.parse()? })
}

/// The artifact of `model_ver` beside the data.
fn artifact_path(dir: &Path, model_ver: ModelVer) -> PathBuf {
    dir.join(format!("model_{model_ver}.json"))
}

/// Fits `model_ver` (defaults) on the training file, or imports the imported
/// model fitted on it, and keeps its artifact beside the data.
fn fit_model(dir: &Path, model_ver: ModelVer, python: &str) -> anyhow::Result<()> {
    let path = artifact_path(dir, model_ver);
    if path.exists() {
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let bucket = Bucket::open(&dir.to_string_lossy())?;
    let keys = InputKeys::new(model_ver, BucketKey::parse("train.csv.gz")?, None, None);
    let inputs = runtime.block_on(Inputs::fetch(&bucket, keys))?;
    let data = inputs.prepare()?.data;
    let run = if model_ver.is_imported() {
        let (file, seconds) = crs_bench::fit_imported_xgb(python, 2, &data.train)?;
        eprintln!("  {model_ver}: fitted by xgboost in {seconds:.1} s");
        import_and_evaluate(model_ver, Framework::Xgboost, &file, &data.train, &data.eval, |_| {})?
    } else {
        let (params, _) = inputs.params(model_ver)?;
        train_and_evaluate(model_ver, &params, &data.train, &data.eval, |_| {})?
    };
    let artifact = run.model.to_artifact();
    std::fs::write(path.with_extension("json.sha256"), sha256_hex(&artifact))?;
    std::fs::write(&path, artifact)?;
    Ok(())
}

fn worker(dir: &Path, model_ver: ModelVer, input: &str, chunk_bytes: usize) -> anyhow::Result<()> {
    let path = artifact_path(dir, model_ver);
    let artifact = std::fs::read(&path)?;
    let sha = std::fs::read_to_string(path.with_extension("json.sha256"))?;
    let model = Arc::new(TrainedModel::from_artifact(&artifact, &sha, model_ver)?);
    let bucket = Bucket::open(&dir.to_string_lossy())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(predict_batch(
        &bucket,
        model,
        &BucketKey::parse(input)?,
        &BucketKey::parse("out/rust_output.csv.gz")?,
        BatchOptions { chunk_bytes, ..BatchOptions::default() },
    ))?;
    let peak_mb = crs_bench::status_kb("self", "VmHWM")? as f64 / 1024.0;
    let figures = json!({
        "seconds": report.seconds,
        "rows": report.rows_read,
        "written": report.rows_written,
        "peak_mb": peak_mb,
        "cpu_seconds": process_cpu_seconds()?,
    });
    println!("{figures}");
    Ok(())
}

/// Wall seconds to only inflate `input` on this one thread, in the 1 MiB reads
/// of the batch's read-ahead thread and with the same decoder: the least time a
/// batch that inflates its input on one core can take.
fn inflate_seconds(input: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut gzip = MultiGzDecoder::new(BufReader::new(std::fs::File::open(input)?));
    let mut block = vec![0u8; 1 << 20];
    while gzip.read(&mut block)? > 0 {}
    Ok(started.elapsed().as_secs_f64())
}

/// User and system CPU time of this process, its ended threads included
/// (`/proc/self/stat` fields 14 and 15, in the kernel's 100 Hz ticks).
fn process_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat.rsplit_once(')').context("no command name")?.1.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> { Ok(fields.get(i).context("short stat")?.parse::<f64>()?) };
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn json_line(mut command: Command) -> anyhow::Result<Value> {
    let output = command.output()?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8(output.stdout)?;
    let line = text.lines().last().context("no output")?;
    Ok(serde_json::from_str(line)?)
}

fn run_rust(dir: &Path, model_ver: ModelVer, input: &str, chunk_bytes: usize) -> anyhow::Result<Value> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["--data-dir", &dir.to_string_lossy(), "--worker", input, "--chunk-bytes", &chunk_bytes.to_string()]);
    command.args(["--model-ver", model_ver.name()]);
    json_line(command)
}

fn run_python(train: &Path, input: &Path, dir: &Path, chunksize: usize) -> anyhow::Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("batch_baseline.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .arg("--train")
        .arg(train)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(dir.join("out/python_output.csv.gz"))
        .arg("--chunksize")
        .arg(chunksize.to_string());
    std::fs::create_dir_all(dir.join("out"))?;
    json_line(command)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// (median seconds, rows per second, median peak MB) of a set of runs.
fn summary(runs: &[Value]) -> Option<(f64, f64, f64)> {
    if runs.is_empty() {
        return None;
    }
    let seconds = median_of(runs, "seconds");
    let rows = runs[0]["rows"].as_f64().unwrap_or(f64::NAN);
    Some((seconds, rows / seconds, median_of(runs, "peak_mb")))
}

fn median_of(runs: &[Value], field: &str) -> f64 {
    median(&mut runs.iter().filter_map(|r| r[field].as_f64()).collect::<Vec<_>>())
}

/// One input's figures: inflate floor runs (seconds), each model's batch runs, the Python runs.
struct Measured {
    floor: Vec<f64>,
    models: Vec<(ModelVer, Vec<Value>)>,
    python: Vec<Value>,
}

fn report(table: &[Measured]) {
    println!(
        "{:>10} {:>9} | {:>9} {:>8} {:>11} {:>7} {:>6} {:>8} | {:>8} {:>11} {:>9} | {:>9} {:>7}",
        "rows",
        "inflate s",
        "model",
        "batch s",
        "rows/s",
        "peak MB",
        "cpu s",
        "x floor",
        "python s",
        "rows/s",
        "peak MB",
        "x python",
        "memory"
    );
    for measured in table {
        let floor = median(&mut measured.floor.clone());
        let python = summary(&measured.python);
        for (model_ver, runs) in &measured.models {
            let Some((seconds, rate, peak)) = summary(runs) else { continue };
            let rows = runs[0]["rows"].as_u64().unwrap_or_default();
            let left = format!(
                "{rows:>10} {floor:>9.2} | {:>9} {seconds:>8.2} {rate:>11.0} {peak:>7.0} {:>6.2} {:>7.2}x",
                model_ver.name(),
                median_of(runs, "cpu_seconds"),
                seconds / floor
            );
            match python {
                Some((ps, prate, ppeak)) => println!(
                    "{left} | {ps:>8.2} {prate:>11.0} {ppeak:>9.0} | {:>8.1}x {:>6.1}x  {}",
                    rate / prate,
                    ppeak / peak,
                    match measured.python[0]["chunksize"].as_u64() {
                        Some(n) if n > 0 => format!("(pyarrow in blocks of {n} rows)"),
                        _ => "(pyarrow reads the whole file)".to_owned(),
                    }
                ),
                None => println!("{left} | {:>8} {:>11} {:>9} |", "-", "-", "-"),
            }
        }
    }
    println!(
        "medians over repeats. inflate s: only inflating the input, one thread, same decoder; \
         cpu s = the batch process's CPU seconds; x floor = batch seconds over inflate s; x python = Rust rows/s over Python rows/s; memory = Python peak over Rust peak"
    );
}
