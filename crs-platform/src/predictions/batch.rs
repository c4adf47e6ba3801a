//! Batch predictions: an input file in the bucket to a gzip CSV
//! `entity_id,device,cr` in the bucket, streamed chunk by chunk.
//!
//! Memory is bounded by the chunk size and a small queue of compressed output,
//! plus the set of (entity_id, device) already written (one line per key), not
//! by the file size. The output is a multipart upload completed only after the
//! last row: a failed or interrupted batch never leaves a partial object.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crs_domain::data::{Attributes, DEFAULT_CHUNK_BYTES, DataError, Device, KeywordRows, TableKind, TableReader};
use crs_domain::features::FeatureError;
use crs_domain::models::TrainedModel;
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use crate::error::{Classify, ErrorKind};
use crate::failpoint::{FailPoint, FailStep};
use crate::storage::bucket::{Bucket, BucketKey, StorageError};

/// The exact header of every output file.
pub const OUTPUT_HEADER: &str = "entity_id,device,cr";
/// Handoffs queued between the predicting thread and the uploader.
const HANDOFF_QUEUE: usize = 4;
/// Parts uploaded at once.
const UPLOAD_CONCURRENCY: usize = 2;

/// How the output's `device` column is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceColumn {
    /// `Computer`, `Smartphone`, `Tablet`, as in the input.
    #[default]
    Name,
    /// `0` Computer, `1` Smartphone, `2` Tablet, for consumers that join on integers.
    Code,
}

impl DeviceColumn {
    /// `name` or `code`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "name" => Some(DeviceColumn::Name),
            "code" => Some(DeviceColumn::Code),
            _ => None,
        }
    }
}

/// Buffer sizes, which set the memory a batch uses, the output's device form,
/// and the crash tests' fail point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    pub device_column: DeviceColumn,
    /// Decompressed input bytes parsed at a time.
    pub chunk_bytes: usize,
    /// Compressed output handed from the predicting thread to the uploader at a time.
    pub handoff_bytes: usize,
    /// Multipart upload part size; S3 needs at least 5 MiB.
    pub part_bytes: usize,
    pub fail_point: FailPoint,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            device_column: DeviceColumn::Name,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            handoff_bytes: 1 << 20,
            part_bytes: 8 << 20,
            fail_point: FailPoint::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BatchReport {
    /// Data rows in the input.
    pub rows_read: u64,
    /// Output lines: one per distinct (entity_id, device).
    pub rows_written: u64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Features(#[from] FeatureError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("output key {0} is the input key")]
    OutputIsInput(String),
    #[error("writing the output failed: {0}")]
    Output(String),
}

impl Classify for BatchError {
    fn kind(&self) -> ErrorKind {
        match self {
            BatchError::Data(e) => e.kind(),
            BatchError::Features(e) => e.kind(),
            BatchError::Storage(e) => e.kind(),
            BatchError::OutputIsInput(_) => ErrorKind::InvalidInput,
            BatchError::Output(_) => ErrorKind::Internal,
        }
    }
}

/// Predicts every (entity_id, device) of `input` with `model` and writes the
/// result to `output`.
///
/// Dropping the future (a cancelled request) stops the work: the predicting
/// thread stops at its next handoff and the upload aborts itself.
pub async fn predict_batch(
    bucket: &Bucket,
    model: Arc<TrainedModel>,
    input: &BucketKey,
    output: &BucketKey,
    options: BatchOptions,
) -> Result<BatchReport, BatchError> {
    if input == output {
        return Err(BatchError::OutputIsInput(output.to_string()));
    }
    let started = Instant::now();
    let download = bucket.reader(input).await?;
    let mut upload = bucket.upload(output, options.part_bytes).await?;

    let (tx, mut rx) = mpsc::channel::<Bytes>(HANDOFF_QUEUE);
    let input_name = input.to_string();
    let worker = tokio::task::spawn_blocking(move || {
        let reader = TableReader::open(
            &input_name,
            SyncIoBridge::new(download),
            TableKind::PredictionInput,
            Attributes::Only(model.required_attributes().iter().cloned().collect()),
        )?
        .with_chunk_bytes(options.chunk_bytes);
        predict_stream(reader, &model, options.device_column, ChannelWriter::new(tx, options.handoff_bytes))
    });

    // Upload while the worker predicts; on any failure the upload is aborted, so
    // nothing appears at the output key.
    let mut upload_error = None;
    let mut first = true;
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = upload.wait_for_capacity(UPLOAD_CONCURRENCY).await {
            upload_error = Some(e);
            break;
        }
        upload.put(bytes);
        if first {
            first = false;
            options.fail_point.check(FailStep::BatchUploadStarted);
        }
    }
    drop(rx);
    let outcome = match worker.await {
        Ok(result) => result,
        Err(e) => Err(BatchError::Output(format!("prediction worker stopped: {e}"))),
    };
    let result = match (outcome, upload_error) {
        // The worker fails too once the uploader stops: the upload error is the cause.
        (_, Some(e)) => Err(e.into()),
        (outcome, None) => outcome,
    };
    match result {
        Ok((rows_read, rows_written)) => {
            options.fail_point.check(FailStep::BatchPredicted);
            upload.finish().await?;
            options.fail_point.check(FailStep::BatchOutputWritten);
            Ok(BatchReport { rows_read, rows_written, seconds: started.elapsed().as_secs_f64() })
        }
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// Reads, predicts and writes gzip CSV into `out`; returns (rows read, rows written).
///
/// Three stages on three threads: the reader's own decompresses the input
/// ahead; one cuts, scans, validates and predicts the next chunk; the other
/// formats and compresses the one before.
fn predict_stream(
    mut reader: TableReader,
    model: &TrainedModel,
    devices: DeviceColumn,
    out: impl Write,
) -> Result<(u64, u64), BatchError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Predicted, BatchError>>(1);
        let parser = std::thread::Builder::new().name("crs-parse".into()).spawn_scoped(scope, move || {
            while let Some(next) = reader.next_rows().transpose() {
                let next = next.map_err(BatchError::from).and_then(|rows| Predicted::new(rows, model));
                let failed = next.is_err();
                // A closed channel means the writing stage failed and has its error.
                if tx.send(next).is_err() || failed {
                    break;
                }
            }
            reader.rows_read()
        });
        let Ok(parser) = parser else {
            return Err(BatchError::Output("cannot start the parsing thread".into()));
        };
        let written = write_predictions(rx, devices, out);
        let rows_read = parser.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok((rows_read, written?))
    })
}

/// A chunk's keys and their predicted rates.
struct Predicted {
    entity_ids: Vec<i64>,
    devices: Vec<Device>,
    rates: Vec<f64>,
}

impl Predicted {
    fn new(mut rows: KeywordRows, model: &TrainedModel) -> Result<Self, BatchError> {
        let rates = model.predict(&rows)?;
        Ok(Predicted {
            entity_ids: std::mem::take(&mut rows.entity_id),
            devices: std::mem::take(&mut rows.device),
            rates,
        })
    }
}

/// Writes one gzip CSV line per (entity_id, device) not seen before; returns
/// the lines written.
fn write_predictions(
    chunks: std::sync::mpsc::Receiver<Result<Predicted, BatchError>>,
    devices: DeviceColumn,
    out: impl Write,
) -> Result<u64, BatchError> {
    let mut lines = OutputLines::new(devices);
    let mut gzip = GzEncoder::new(out, Compression::fast());
    gzip.write_all(OUTPUT_HEADER.as_bytes()).and_then(|()| gzip.write_all(b"\n")).map_err(io_error)?;
    let mut text = Vec::new();
    for chunk in chunks {
        let chunk = chunk?;
        text.clear();
        lines.format(&chunk, &mut text);
        gzip.write_all(&text).map_err(io_error)?;
    }
    gzip.finish().and_then(|mut out| out.flush()).map_err(io_error)?;
    Ok(lines.written)
}

/// The output's lines: the first prediction of each (entity_id, device), in
/// input order, formatted as polars' CSV writer formats them (itoa for
/// integers, zmij's shortest round-trip form for rates), with no allocation
/// per line.
struct OutputLines {
    devices: DeviceColumn,
    /// The entity ids written, per device.
    seen: [HashSet<i64, foldhash::fast::RandomState>; 3],
    written: u64,
}

impl OutputLines {
    fn new(devices: DeviceColumn) -> Self {
        OutputLines { devices, seen: Default::default(), written: 0 }
    }

    /// Appends the lines of `chunk`'s keys not written before to `text`.
    fn format(&mut self, chunk: &Predicted, text: &mut Vec<u8>) {
        let (mut integer, mut float) = (itoa::Buffer::new(), zmij::Buffer::new());
        for ((&entity_id, &device), &rate) in chunk.entity_ids.iter().zip(&chunk.devices).zip(&chunk.rates) {
            if !self.seen[device.index()].insert(entity_id) {
                continue;
            }
            self.written += 1;
            text.extend_from_slice(integer.format(entity_id).as_bytes());
            text.push(b',');
            match self.devices {
                DeviceColumn::Name => text.extend_from_slice(device.as_str().as_bytes()),
                // The code is the position in Device::ALL: 0 Computer, 1 Smartphone, 2 Tablet.
                DeviceColumn::Code => text.extend_from_slice(integer.format(device.index()).as_bytes()),
            }
            text.push(b',');
            text.extend_from_slice(float.format(rate).as_bytes());
            text.push(b'\n');
        }
    }
}

fn io_error(e: io::Error) -> BatchError {
    BatchError::Output(e.to_string())
}

/// Hands compressed output to the async uploader in pieces of about
/// `handoff_bytes`; blocks when the uploader falls behind.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    handoff_bytes: usize,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Bytes>, handoff_bytes: usize) -> Self {
        ChannelWriter { tx, buf: Vec::with_capacity(handoff_bytes), handoff_bytes }
    }

    fn hand_off(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(self.handoff_bytes)));
        self.tx.blocking_send(bytes).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.handoff_bytes {
            self.hand_off()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.hand_off()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use crs_domain::data::TrainingTable;
    use crs_domain::data::synth::{SynthSpec, write_prediction_input, write_training};
    use crs_domain::evaluation::train_and_evaluate;
    use crs_domain::models::ModelVer;

    use super::*;

    const ATTRIBUTES: usize = 12;

    fn spec(first_entity: i64, keywords: usize) -> SynthSpec {
        SynthSpec { first_entity, keywords, attributes: ATTRIBUTES, seed: 3 }
    }

    fn trained_model() -> Arc<TrainedModel> {
        let mut csv = Vec::new();
        write_training(&spec(1, 400), &mut csv).unwrap();
        let mut table = TrainingTable::read("train.csv", io::Cursor::new(csv)).unwrap();
        let observations = table.observations().unwrap();
        let (train, eval) = observations.split_by_entity(0.2, 1);
        let v1 = ModelVer::parse("v1").unwrap();
        let params = v1.version().params("params.yaml", None).unwrap();
        Arc::new(train_and_evaluate(v1, &params, &train, &eval, |_| {}).unwrap().model)
    }

    struct Fixture {
        dir: tempfile::TempDir,
        bucket: Bucket,
        model: Arc<TrainedModel>,
    }

    impl Fixture {
        async fn new(input: Vec<u8>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let bucket = Bucket::open(&dir.path().to_string_lossy()).unwrap();
            bucket.put(&key("in/input.csv"), input).await.unwrap();
            Fixture { dir, bucket, model: trained_model() }
        }

        async fn run(&self, options: BatchOptions) -> Result<BatchReport, BatchError> {
            predict_batch(&self.bucket, self.model.clone(), &key("in/input.csv"), &key("out/output.csv.gz"), options)
                .await
        }

        /// Every file under the output folder, including upload staging files.
        fn output_files(&self) -> Vec<std::path::PathBuf> {
            match std::fs::read_dir(self.dir.path().join("out")) {
                Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
                Err(_) => Vec::new(),
            }
        }
    }

    fn key(k: &str) -> BucketKey {
        BucketKey::parse(k).unwrap()
    }

    fn input_csv(keywords: usize) -> Vec<u8> {
        let mut csv = Vec::new();
        write_prediction_input(&spec(10_000, keywords), &mut csv).unwrap();
        csv
    }

    fn tiny_buffers() -> BatchOptions {
        BatchOptions { chunk_bytes: 4 << 10, handoff_bytes: 256, part_bytes: 1 << 10, ..BatchOptions::default() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_one_line_per_key_in_input_order_whatever_the_buffer_sizes() {
        let mut input = input_csv(300);
        // Repeat the first data row: it must not be written twice.
        let text = String::from_utf8(input.clone()).unwrap();
        let first_row = text.lines().nth(1).unwrap().to_owned();
        input.extend_from_slice(format!("{first_row}\n").as_bytes());
        let fixture = Fixture::new(input.clone()).await;

        let mut outputs = Vec::new();
        for options in [BatchOptions::default(), tiny_buffers()] {
            let report = fixture.run(options).await.unwrap();
            let bytes = fixture.bucket.get(&key("out/output.csv.gz")).await.unwrap();
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
            assert_eq!(report.rows_read, text.lines().count() as u64);
            assert_eq!(report.rows_written + 1, report.rows_read);
            outputs.push(text);
        }
        assert_eq!(outputs[0], outputs[1], "chunking must not change the output");
        let lines: Vec<&str> = outputs[0].lines().collect();
        assert_eq!(lines[0], OUTPUT_HEADER);
        let first: Vec<&str> = first_row.split(',').collect();
        assert!(lines[1].starts_with(&format!("{},{},", first[0], first[ATTRIBUTES + 1])), "{}", lines[1]);
        assert!(
            lines[1..].iter().all(|l| l
                .split(',')
                .nth(2)
                .unwrap()
                .parse::<f64>()
                .is_ok_and(|cr| (0.0..=1.0).contains(&cr)))
        );
    }

    /// The lines as batch output was written before it was formatted by hand:
    /// the keys deduplicated the same way, then polars' batched CSV writer.
    fn polars_lines(chunks: &[Predicted], devices: DeviceColumn) -> Vec<u8> {
        use polars::prelude::*;
        let schema = Schema::from_iter([
            Field::new("entity_id".into(), DataType::Int64),
            Field::new(
                "device".into(),
                match devices {
                    DeviceColumn::Name => DataType::String,
                    DeviceColumn::Code => DataType::Int64,
                },
            ),
            Field::new("cr".into(), DataType::Float64),
        ]);
        let mut out = Vec::new();
        let mut csv = CsvWriter::new(&mut out).include_header(false).batched(&schema).unwrap();
        let mut seen: [HashSet<i64>; 3] = Default::default();
        for chunk in chunks {
            let (mut entity, mut device, mut cr) = (Vec::new(), Vec::new(), Vec::new());
            for ((&e, &d), &rate) in chunk.entity_ids.iter().zip(&chunk.devices).zip(&chunk.rates) {
                if seen[d.index()].insert(e) {
                    entity.push(e);
                    device.push(d);
                    cr.push(rate);
                }
            }
            let device = match devices {
                DeviceColumn::Name => {
                    Column::new("device".into(), device.iter().map(|d| d.as_str()).collect::<Vec<_>>())
                }
                DeviceColumn::Code => {
                    Column::new("device".into(), device.iter().map(|d| d.index() as i64).collect::<Vec<_>>())
                }
            };
            let columns = vec![Column::new("entity_id".into(), entity), device, Column::new("cr".into(), cr)];
            csv.write_batch(&DataFrame::new_infer_height(columns).unwrap()).unwrap();
        }
        csv.finish().unwrap();
        drop(csv);
        out
    }

    #[test]
    fn lines_are_byte_for_byte_what_polars_wrote() {
        // Rates of every magnitude the models give and a few they never do; keys
        // at the ends of the i64 range; repeated keys, across chunks too.
        let mut rates =
            vec![0.0, 1.0, 0.5, 0.1, 1.0 / 3.0, 2.0 / 3.0, 1e-7, 1e-5, 1e-4, 0.001, 5e-324, f64::MIN_POSITIVE];
        rates.extend([1e15, 1e16, 1e17, 123456789.125, -0.0, -1e-20, 0.9999999999999999]);
        let mut draw = crs_domain::rng::SplitMix64::new(7);
        rates.extend((0..5000).map(|_| draw.next_f64() * if draw.next_u64().is_multiple_of(2) { 1.0 } else { 1e-3 }));
        let mut entity_ids = vec![i64::MIN, i64::MAX, 0, -1, 1, 10, 99, 100, 999_999_999_999];
        entity_ids.extend((0..rates.len() - entity_ids.len()).map(|_| (draw.next_u64() % 2000) as i64 - 1000));
        let devices: Vec<Device> = (0..rates.len()).map(|i| Device::ALL[(i * 7 + i / 3) % 3]).collect();
        let chunks: Vec<Predicted> = (0..rates.len())
            .step_by(1000)
            .map(|start| {
                let end = (start + 1000).min(rates.len());
                Predicted {
                    entity_ids: entity_ids[start..end].to_vec(),
                    devices: devices[start..end].to_vec(),
                    rates: rates[start..end].to_vec(),
                }
            })
            .collect();
        for device_column in [DeviceColumn::Name, DeviceColumn::Code] {
            let mut lines = OutputLines::new(device_column);
            let mut text = Vec::new();
            for chunk in &chunks {
                lines.format(chunk, &mut text);
            }
            let expected = polars_lines(&chunks, device_column);
            assert_eq!(String::from_utf8(text.clone()).unwrap(), String::from_utf8(expected).unwrap());
            assert_eq!(lines.written, text.iter().filter(|&&b| b == b'\n').count() as u64);
            assert!(lines.written > 2000 && (lines.written as usize) < rates.len(), "{}", lines.written);
        }
    }

    /// The acceptance test of the scanner and the hand-written lines together:
    /// a batch's decompressed output is byte for byte what it was when every
    /// chunk went through polars' reader (`next_chunk`) and polars' CSV writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn output_is_what_the_polars_reader_and_writer_made() {
        let mut csv = input_csv(2_000);
        // Keys seen again later, which are not written again.
        let text = String::from_utf8(csv.clone()).unwrap();
        let repeated: String = text.lines().skip(1).step_by(7).map(|l| format!("{l}\n")).collect();
        csv.extend_from_slice(repeated.as_bytes());
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        gzip.write_all(&csv).unwrap();
        let fixture = Fixture::new(gzip.finish().unwrap()).await;
        let chunk_bytes = 64 << 10;
        fixture.run(BatchOptions { chunk_bytes, ..BatchOptions::default() }).await.unwrap();
        let bytes = fixture.bucket.get(&key("out/output.csv.gz")).await.unwrap();
        let mut output = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut output).unwrap();

        let required = fixture.model.required_attributes().iter().cloned().collect();
        let mut reader = TableReader::open(
            "input.csv",
            io::Cursor::new(csv),
            TableKind::PredictionInput,
            Attributes::Only(required),
        )
        .unwrap()
        .with_chunk_bytes(chunk_bytes);
        let names = reader.attribute_names().clone();
        let mut chunks = Vec::new();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            let rows = crs_domain::data::keyword_rows(chunk, &names).unwrap();
            let rates = fixture.model.predict(&rows).unwrap();
            chunks.push(Predicted { entity_ids: rows.entity_id.clone(), devices: rows.device.clone(), rates });
        }
        let mut expected = format!("{OUTPUT_HEADER}\n").into_bytes();
        expected.extend(polars_lines(&chunks, DeviceColumn::Name));
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert_eq!(output, String::from_utf8(expected).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn device_codes_replace_the_names_and_nothing_else() {
        let fixture = Fixture::new(input_csv(50)).await;
        let mut outputs = Vec::new();
        for device_column in [DeviceColumn::Name, DeviceColumn::Code] {
            fixture.run(BatchOptions { device_column, ..BatchOptions::default() }).await.unwrap();
            let bytes = fixture.bucket.get(&key("out/output.csv.gz")).await.unwrap();
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
            outputs.push(text);
        }
        let (names, codes) = (outputs[0].lines().collect::<Vec<_>>(), outputs[1].lines().collect::<Vec<_>>());
        assert_eq!((names.len(), codes[0]), (codes.len(), OUTPUT_HEADER));
        for (name, code) in names[1..].iter().zip(&codes[1..]) {
            let (n, c): (Vec<&str>, Vec<&str>) = (name.split(',').collect(), code.split(',').collect());
            let expected = match n[1] {
                "Computer" => "0",
                "Smartphone" => "1",
                "Tablet" => "2",
                other => panic!("device {other}"),
            };
            assert_eq!((c[0], c[1], c[2]), (n[0], expected, n[2]), "{name} vs {code}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_row_after_output_was_uploaded_leaves_nothing() {
        let mut input = input_csv(400);
        input.extend_from_slice(format!("77,{}Fridge,33\n", "1,".repeat(ATTRIBUTES)).as_bytes());
        let fixture = Fixture::new(input).await;
        let err = fixture.run(tiny_buffers()).await.unwrap_err();
        assert!(err.to_string().contains("column 'device': unknown device \"Fridge\""), "{err}");
        assert!(!fixture.bucket.exists(&key("out/output.csv.gz")).await.unwrap());
        // The batch aborted its upload before it returned.
        assert_eq!(fixture.output_files(), Vec::<std::path::PathBuf>::new(), "staging files left behind");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_batch_leaves_nothing() {
        let fixture = Fixture::new(input_csv(20_000)).await;
        let interrupted = tokio::time::timeout(Duration::from_millis(30), fixture.run(tiny_buffers())).await;
        assert!(interrupted.is_err(), "the batch finished before it could be interrupted; make the input larger");
        // Dropped, the batch cleans up in the background: poll until it has.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !fixture.output_files().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "staging files left behind: {:?}", fixture.output_files());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!fixture.bucket.exists(&key("out/output.csv.gz")).await.unwrap());
    }

    #[tokio::test]
    async fn output_over_input_is_refused() {
        let fixture = Fixture::new(input_csv(5)).await;
        let err = predict_batch(
            &fixture.bucket,
            fixture.model.clone(),
            &key("in/input.csv"),
            &key("in/input.csv"),
            BatchOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, BatchError::OutputIsInput(_)), "{err}");
    }
}
