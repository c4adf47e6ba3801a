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

mod json;

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crs_descriptor.bin"));

/// A time on the wire. Chrono shows a leap second as nanos above 1e9, which
/// the wire format does not allow.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos().min(999_999_999) as i32 }
}

/// A time from the wire, if it is a valid one.
pub fn datetime(at: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// Server reflection for one service of this contract plus health and
/// reflection themselves: the descriptor set also holds the other service,
/// which a server must not advertise.
pub fn reflection_service(
    service_name: &'static str,
) -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service_name)
        .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
        .with_service_name(tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME)
        .build_v1()
}
