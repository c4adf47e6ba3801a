//! Compiles the .proto files with protox (no system protoc needed), generates the
//! tonic code into OUT_DIR, and writes the descriptor set that server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &["crs/train/v1/train.proto", "crs/serve/v1/serve.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("crs_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
