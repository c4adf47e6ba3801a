//! The gRPC side of the kit: the server builder (TLS or plaintext) and the
//! bearer-token rule of gRPC, which `crs_proto::RPC_ACCESS` decides.

use bytes::Bytes;
use crs_platform::service::security::{TlsIdentity, TokenRule};
use crs_proto::Access;
use http_body_util::Full;
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// What a refused call is told, and what the log says of it.
const REFUSED: &str = "missing or wrong bearer token";

/// gRPC's token rule: the RPCs [`crs_proto::access`] marks [`Access::Token`]
/// need it, and a refusal is a trailers-only UNAUTHENTICATED answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcTokenRule;

impl TokenRule for GrpcTokenRule {
    fn needs_token(&self, _method: &http::Method, path: &str) -> bool {
        crs_proto::access(path) == Access::Token
    }

    fn refusal(&self) -> http::Response<Full<Bytes>> {
        tonic::Status::unauthenticated(REFUSED).into_http()
    }
}

/// A gRPC server builder, serving TLS with `identity` when one is given,
/// plaintext otherwise.
pub fn server_builder(identity: Option<&TlsIdentity>) -> Result<Server, tonic::transport::Error> {
    let builder = Server::builder();
    match identity {
        None => Ok(builder),
        Some(identity) => builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_unauthenticated_and_names_no_token() {
        let refusal = GrpcTokenRule.refusal();
        assert_eq!(refusal.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/grpc"));
        let status = tonic::Status::from_header_map(refusal.headers()).expect("a status in the headers");
        assert_eq!((status.code(), status.message()), (tonic::Code::Unauthenticated, REFUSED));
    }

    #[test]
    fn the_rule_follows_the_table() {
        let post = http::Method::POST;
        assert!(!GrpcTokenRule.needs_token(&post, "/crs.serve.v1.ServeService/Predict"));
        assert!(GrpcTokenRule.needs_token(&post, "/crs.serve.v1.ServeService/LoadModel"));
        assert!(GrpcTokenRule.needs_token(&post, "/crs.serve.v1.ServeService/SomethingNew"));
    }
}
