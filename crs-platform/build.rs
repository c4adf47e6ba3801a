//! Records the versions of the key dependencies, read from Cargo.lock, for the
//! "versions" table of the reports.

use std::path::Path;

const KEY_DEPENDENCIES: &[&str] = &["polars", "linfa-trees", "forust-ml", "object_store", "tonic", "plotters"];

fn main() {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut found = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take())
            && KEY_DEPENDENCIES.contains(&n.as_str())
        {
            found.push(format!("{n} {}", v.trim_matches('"')));
        }
    }
    println!("cargo:rustc-env=CRS_KEY_DEPENDENCIES={}", found.join(", "));
}
