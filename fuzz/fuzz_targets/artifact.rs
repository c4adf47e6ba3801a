//! The artifact loader on arbitrary bytes with a matching checksum (so every
//! input gets past it to the JSON and the model checks), as v0, v1 and v2.

#![no_main]

use crs_domain::models::{ModelVer, TrainedModel, sha256_hex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sha256 = sha256_hex(data);
    for version in ["v0", "v1", "v2"] {
        let model_ver = ModelVer::parse(version).expect("a known version");
        let _ = TrainedModel::from_artifact(data, &sha256, model_ver);
    }
});
