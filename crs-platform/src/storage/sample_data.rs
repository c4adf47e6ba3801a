//! The default data of a bucket, generated rather than shipped: where it lives
//! and how it is made.

use std::io::Write;

use crs_domain::data::synth::{ATTRIBUTES, SynthSpec, write_prediction_input, write_training, write_week};
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::storage::bucket::{Bucket, BucketKey, StorageError};
use crate::storage::layout::{EVAL_KEY, PREDICTION_INPUT_KEY, TRAIN_KEY};

/// Keywords in each generated file; the three sets do not overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleSizes {
    pub train_keywords: usize,
    pub eval_keywords: usize,
    pub predict_keywords: usize,
}

impl Default for SampleSizes {
    fn default() -> Self {
        SampleSizes { train_keywords: 4000, eval_keywords: 1000, predict_keywords: 2000 }
    }
}

/// One generated file.
#[derive(Clone, Debug)]
pub struct Written {
    pub key: BucketKey,
    pub rows: u64,
    pub bytes: u64,
}

/// Writes the training, evaluation and prediction-input files (gzip CSV) at
/// their default keys. The same sizes and seed always give the same bytes.
pub async fn write_sample_data(bucket: &Bucket, sizes: SampleSizes, seed: u64) -> Result<Vec<Written>, StorageError> {
    let spec = |first_entity: usize, keywords: usize| SynthSpec {
        first_entity: first_entity as i64 + 1,
        keywords,
        attributes: ATTRIBUTES,
        seed,
    };
    let train = spec(0, sizes.train_keywords);
    let eval = spec(sizes.train_keywords, sizes.eval_keywords);
    let predict = spec(sizes.train_keywords + sizes.eval_keywords, sizes.predict_keywords);
    let files = [(TRAIN_KEY, train, true), (EVAL_KEY, eval, true), (PREDICTION_INPUT_KEY, predict, false)];
    let mut written = Vec::new();
    for (key, spec, training) in files {
        let key = BucketKey::parse(key)?;
        let (rows, bytes) =
            gzip(|out| if training { write_training(&spec, out) } else { write_prediction_input(&spec, out) });
        written.push(Written { key: key.clone(), rows, bytes: bytes.len() as u64 });
        bucket.put(&key, bytes).await?;
    }
    Ok(written)
}

/// Weekly training files for the lifecycle: `weeks` files `week<N>.csv.gz`
/// under `prefix`, weeks `1..=weeks`, the true rate drifting from week
/// `drift_from` on (if given). The same arguments always give the same bytes.
pub async fn write_weekly(
    bucket: &Bucket,
    prefix: &BucketKey,
    keywords: usize,
    weeks: u32,
    drift_from: Option<u32>,
    seed: u64,
) -> Result<Vec<Written>, StorageError> {
    let spec = SynthSpec { first_entity: 1, keywords, attributes: ATTRIBUTES, seed };
    let mut written = Vec::new();
    for week in 1..=weeks {
        let drifted = drift_from.is_some_and(|from| week >= from);
        let key = prefix.join(&format!("week{week}.csv.gz"))?;
        let (rows, bytes) = gzip(|out| write_week(&spec, i64::from(week), drifted, out));
        written.push(Written { key: key.clone(), rows, bytes: bytes.len() as u64 });
        bucket.put(&key, bytes).await?;
    }
    Ok(written)
}

fn gzip(write: impl FnOnce(&mut GzEncoder<Vec<u8>>) -> std::io::Result<u64>) -> (u64, Vec<u8>) {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into memory cannot fail.
    let rows = write(&mut encoder).expect("in-memory write");
    encoder.flush().expect("in-memory write");
    (rows, encoder.finish().expect("in-memory write"))
}
