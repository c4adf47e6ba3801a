//! serve-service's commands: what it has loaded, loading a version, online
//! prediction of a local file, and batch prediction in the bucket.

use anyhow::Context;
use clap::Args;
use crs_domain::data::{Attributes, KeywordRows, TableKind, TableReader};
use crs_platform::predictions::shards::{Shard, ShardArgs};
use crs_platform::storage::layout::{InputPrefix, PREDICTION_INPUT_KEY};
use crs_proto::serve::{
    BatchShard, DeviceFormat, GetModelRequest, LoadModelRequest, ModelInfo, PredictBatchRequest, PredictBatchResponse,
    PredictRequest, Row,
};

use crate::client::{Addresses, status};
use crate::render::{self, print_json};

fn print_model(info: &ModelInfo, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&render::model(info));
    }
    out!("serving model {} run {} (selection: {})", info.model_ver, info.run_id, info.selection);
    out!("  trained by job {}, artifact sha256 {}", info.job_id, info.artifact_sha256);
    out!("  eval wmae {:.5} (device baseline {:.5})", info.eval_wmae, info.eval_baseline_wmae);
    out!("  needs {} attribute columns", info.attribute_names.len());
    if !info.importance.is_empty() {
        out!("  feature importance, top {}:", info.importance.len().min(10));
        for f in info.importance.iter().take(10) {
            out!("    {:<20}{:>12.6}", f.feature, f.importance);
        }
    }
    if !info.loaded.is_empty() {
        out!("loaded models:");
        for m in &info.loaded {
            let shadow = if m.shadow_of.is_empty() { String::new() } else { format!(", shadow of {}", m.shadow_of) };
            out!(
                "  {:<4} run {} (selection: {}), ~{:.1} MiB{shadow}",
                m.model_ver,
                m.run_id,
                m.selection,
                m.memory_bytes as f64 / f64::from(1 << 20)
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model version to describe; default: the service's MODEL_VER.
    #[arg(long, default_value = "")]
    model_ver: String,
}

pub async fn model(args: ModelArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let request = GetModelRequest { model_ver: args.model_ver, ..Default::default() };
    let info = addrs.serve().await?.get_model(request).await.map_err(status)?.into_inner();
    print_model(&info, json)
}

#[derive(Debug, Args)]
pub struct LoadModelArgs {
    /// Model version to serve.
    #[arg(long)]
    model_ver: String,
    /// A run id, or latest to follow model/<model_ver>/LATEST.
    #[arg(long, default_value = "latest")]
    run: String,
}

pub async fn load_model(args: LoadModelArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let info = addrs
        .serve()
        .await?
        .load_model(LoadModelRequest { model_ver: args.model_ver, run: args.run })
        .await
        .map_err(status)?
        .into_inner();
    print_model(&info, json)
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Local CSV or gzip CSV in the prediction-input schema.
    #[arg(long)]
    input: String,
    /// Most rows per request; keep it at or under serve-service's MAX_PREDICT_ROWS.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    batch_rows: u32,
    /// Model version to predict with; default: the service's MODEL_VER.
    #[arg(long, default_value = "")]
    model_ver: String,
}

pub async fn predict(args: PredictArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.input).with_context(|| format!("cannot open {}", args.input))?;
    let mut reader = TableReader::open(&args.input, file, TableKind::PredictionInput, Attributes::All)?;
    let mut client = addrs.serve().await?;
    let mut out = Vec::new();
    let mut answered_by = None;
    while let Some(rows) = reader.next_rows()? {
        for mut request in predict_requests(&rows, args.batch_rows as usize) {
            request.model_ver.clone_from(&args.model_ver);
            let response = client.predict(request.clone()).await.map_err(status)?.into_inner();
            answered_by = Some((response.model_ver, response.run_id));
            out.extend(request.rows.into_iter().zip(response.cr).map(|(row, cr)| (row.entity_id, row.device, cr)));
        }
    }
    let (model_ver, run_id) = answered_by.unwrap_or_default();
    if json {
        return print_json(&render::predictions(&model_ver, &run_id, &out));
    }
    out!("entity_id,device,cr");
    for (entity, device, cr) in &out {
        out!("{entity},{device},{cr}");
    }
    eprintln!("{} rows predicted by model {model_ver} run {run_id}", out.len());
    Ok(())
}

/// Keyword rows as `Predict` requests of at most `max_rows` rows each (the
/// server refuses requests over its `MAX_PREDICT_ROWS`).
fn predict_requests(rows: &KeywordRows, max_rows: usize) -> impl Iterator<Item = PredictRequest> + '_ {
    let indices: Vec<usize> = (0..rows.len()).collect();
    let pieces: Vec<Vec<usize>> = indices.chunks(max_rows.max(1)).map(<[usize]>::to_vec).collect();
    pieces.into_iter().map(|piece| predict_request(&rows.select(&piece)))
}

/// Keyword rows as a `Predict` request.
pub fn predict_request(rows: &KeywordRows) -> PredictRequest {
    PredictRequest {
        attribute_names: rows.attribute_names().to_vec(),
        rows: (0..rows.len())
            .map(|i| Row {
                entity_id: rows.entity_id[i],
                device: rows.device[i].as_str().to_owned(),
                attribute_values: rows.attributes(i).iter().map(|&v| u32::from(v)).collect(),
            })
            .collect(),
        ..Default::default()
    }
}

#[derive(Debug, Args)]
pub struct PredictBatchArgs {
    /// Bucket key of the input file, or a prefix ending in '/' for every .csv and .csv.gz file under it (each written to its own output under the run's output folder).
    #[arg(long, default_value = PREDICTION_INPUT_KEY)]
    input: String,
    /// Bucket key of the output, under the service's output prefix; default data/predict/output/<model_ver>/<run_id>/prediction_output.csv.gz.
    #[arg(long)]
    output: Option<String>,
    /// Replace --output if it already exists (otherwise such a batch is refused).
    #[arg(long)]
    overwrite: bool,
    /// Output device column: `name` (Computer, ...) or `code` (0 Computer, 1 Smartphone, 2 Tablet); default: the service's OUTPUT_DEVICE.
    #[arg(long, value_parser = ["name", "code"])]
    device_format: Option<String>,
    /// Model version to predict with; default: the service's MODEL_VER.
    #[arg(long, default_value = "")]
    model_ver: String,
    /// With a prefix input: which of its files this call predicts.
    #[command(flatten)]
    shard: ShardArgs,
}

pub async fn predict_batch(args: PredictBatchArgs, addrs: &Addresses, json: bool) -> anyhow::Result<()> {
    let prefix = InputPrefix::is_prefix(&args.input);
    let shard = if prefix { args.shard.shard()? } else { Shard::WHOLE };
    let response = addrs
        .serve()
        .await?
        .predict_batch(PredictBatchRequest {
            input_key: args.input.clone(),
            output_key: args.output,
            overwrite: args.overwrite,
            device_format: match args.device_format.as_deref() {
                Some("name") => DeviceFormat::Name,
                Some("code") => DeviceFormat::Code,
                _ => DeviceFormat::Unspecified,
            } as i32,
            model_ver: args.model_ver,
            run_id: String::new(),
            shard: (shard != Shard::WHOLE).then(|| BatchShard { index: shard.index(), count: shard.count() }),
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        return print_json(&render::batch(&args.input, &response));
    }
    if prefix {
        print_shard(&args.input, shard, &response);
        return Ok(());
    }
    out!(
        "wrote {} ({} rows from {} input rows) with model {} run {} in {:.2} s",
        response.output_key,
        response.rows_written,
        response.rows_read,
        response.model_ver,
        response.run_id,
        response.seconds
    );
    Ok(())
}

/// One line per file of the shard, then the shard's totals and the summary if every shard is done.
fn print_shard(input: &str, shard: Shard, response: &PredictBatchResponse) {
    for file in &response.files {
        let how = if file.skipped { "skipped, done before" } else { "predicted" };
        out!("{} -> {} ({} rows, {how})", file.input_key, file.output_key, file.rows_written);
    }
    let skipped = response.files.iter().filter(|f| f.skipped).count();
    out!(
        "shard {shard} of {input}: {} of {} files ({} predicted, {skipped} skipped), {} rows with model {} run {} in {:.2} s",
        response.files.len(),
        response.inputs,
        response.files.len() - skipped,
        response.rows_written,
        response.model_ver,
        response.run_id,
        response.seconds
    );
    if response.summary_key.is_empty() {
        out!("summary: not yet, a shard is still missing");
    } else {
        out!("summary: {} (every shard is done)", response.summary_key);
    }
}
