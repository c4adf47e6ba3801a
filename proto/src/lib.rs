//! The wire contract of both services. The `.proto` files in this crate are the
//! source of truth; everything here is generated from them at build time.

/// Training jobs and stored model runs (`crs.train.v1`).
pub mod train {
    #![allow(unused_qualifications, missing_debug_implementations)]
    tonic::include_proto!("crs.train.v1");
}

/// Online and batch predictions (`crs.serve.v1`).
pub mod serve {
    #![allow(unused_qualifications, missing_debug_implementations)]
    tonic::include_proto!("crs.serve.v1");
}

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crs_descriptor.bin"));
