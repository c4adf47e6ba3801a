//! The wire contract of both services. The `.proto` files in this crate are the
//! source of truth: the modules [`train`], [`serve`] and [`inference`] and the
//! reflection descriptors are generated from them at build time. Written by
//! hand beside them: which RPC needs the bearer token ([`RPC_ACCESS`]) and
//! which REST route of serve-service does ([`SERVE_REST_ROUTES`]), the
//! names of gRPC codes, timestamps on the wire, the JSON form of the
//! generated messages, and server reflection for a chosen set of services.

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

/// The Open Inference Protocol (KServe V2) over gRPC: `inference.GRPCInferenceService`.
pub mod inference {
    #![allow(unused_qualifications, missing_debug_implementations, clippy::doc_overindented_list_items)]
    tonic::include_proto!("inference");
}

mod access;
mod json;

pub use access::{Access, RPC_ACCESS, RestRoute, SERVE_REST_ROUTES, access, serve_rest_access};

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crs_descriptor.bin"));

/// The gRPC name of a code, as grpc-go spells it (`OK`, `InvalidArgument`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Canceled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

/// A time on the wire. Chrono shows a leap second as nanos above 1e9, which
/// the wire format does not allow.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos().min(999_999_999) as i32 }
}

/// A time from the wire, if it is a valid one.
pub fn datetime(at: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// Server reflection, as `grpc.reflection.v1` and as `grpc.reflection.v1alpha`
/// (which older clients, grpcurl's and Python's among them, still ask for).
pub struct Reflection<V1, V1Alpha> {
    pub v1: tonic_reflection::server::v1::ServerReflectionServer<V1>,
    pub v1alpha: tonic_reflection::server::v1alpha::ServerReflectionServer<V1Alpha>,
}

impl<V1, V1Alpha> std::fmt::Debug for Reflection<V1, V1Alpha> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflection").finish_non_exhaustive()
    }
}

/// Server reflection for `services` of this contract plus health and
/// reflection themselves: the descriptor set also holds the other services,
/// which a server must not advertise.
pub fn reflection_service(
    services: &[&'static str],
) -> Result<
    Reflection<
        impl tonic_reflection::server::v1::ServerReflection,
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Both reflection services, whichever one is asked.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
            .with_service_name(tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME)
            .with_service_name(tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME);
        for service in services {
            builder = builder.with_service_name(*service);
        }
        builder
    };
    Ok(Reflection { v1: builder().build_v1()?, v1alpha: builder().build_v1alpha()? })
}
