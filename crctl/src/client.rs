//! How crctl reaches the services: their addresses, TLS, the bearer token and
//! the request id every call carries, and how a gRPC error is shown.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use crs_platform::service::security::{AUTHORIZATION, TokenSettings, bearer};
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::train::train_service_client::TrainServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Where the services are (the same variables the services listen on), and
/// how to reach them: TLS and the bearer token, as the services are set.
#[derive(Debug, Args)]
pub struct Addresses {
    /// train-service address, host:port.
    #[arg(long, env = "TRAIN_ADDR", default_value = "127.0.0.1:50051", global = true)]
    train_addr: String,
    /// serve-service address, host:port.
    #[arg(long, env = "SERVE_ADDR", default_value = "127.0.0.1:50052", global = true)]
    serve_addr: String,
    /// PEM certificate of the CA that signed the services' TLS certificates; set, crctl connects with https.
    #[arg(long, env = "TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    #[command(flatten)]
    token: TokenSettings,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ServiceName {
    Train,
    Serve,
}

/// Every call of this crctl run carries one `x-request-id`, so the services'
/// log lines and notices for it can be found (errors print it), and the bearer
/// token when one is set.
#[derive(Clone, Debug)]
pub struct CallMetadata {
    authorization: Option<tonic::metadata::AsciiMetadataValue>,
}

fn request_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| format!("crctl-{}", crs_platform::service::request_id::generate()))
}

impl tonic::service::Interceptor for CallMetadata {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let id = tonic::metadata::MetadataValue::from_static(request_id());
        request.metadata_mut().insert(crs_platform::service::request_id::HEADER, id);
        if let Some(authorization) = &self.authorization {
            request.metadata_mut().insert(AUTHORIZATION, authorization.clone());
        }
        Ok(request)
    }
}

type Client = InterceptedService<Channel, CallMetadata>;
/// A train-service connection.
pub(crate) type TrainClient = TrainServiceClient<Client>;

impl Addresses {
    /// The address `service` is reached at, as given.
    pub(crate) fn addr(&self, service: ServiceName) -> &str {
        match service {
            ServiceName::Train => &self.train_addr,
            ServiceName::Serve => &self.serve_addr,
        }
    }

    /// A connection to `addr` (host:port, or a URI), over TLS when `TLS_CA` is set.
    pub(crate) async fn channel(&self, addr: &str) -> anyhow::Result<Channel> {
        let scheme = if self.tls_ca.is_some() { "https" } else { "http" };
        let uri = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
        let mut endpoint = Channel::from_shared(uri.clone())
            .with_context(|| format!("bad address {addr}"))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &self.tls_ca {
            let ca = Certificate::from_pem(crs_platform::service::security::read_pem("TLS_CA", ca)?);
            endpoint = endpoint.tls_config(ClientTlsConfig::new().ca_certificate(ca)).context("TLS_CA")?;
        }
        endpoint.connect().await.with_context(|| format!("cannot reach {uri}"))
    }

    fn metadata(&self) -> anyhow::Result<CallMetadata> {
        let authorization = match self.token.token()? {
            Some(token) => {
                let mut value = tonic::metadata::AsciiMetadataValue::try_from(bearer(&token))
                    .context("AUTH_TOKEN is not a valid header value")?;
                // Kept out of any debug output of the request.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(CallMetadata { authorization })
    }

    pub(crate) async fn train(&self) -> anyhow::Result<TrainClient> {
        Ok(TrainServiceClient::with_interceptor(self.channel(&self.train_addr).await?, self.metadata()?))
    }

    pub(crate) async fn serve(&self) -> anyhow::Result<ServeServiceClient<Client>> {
        Ok(ServeServiceClient::with_interceptor(self.channel(&self.serve_addr).await?, self.metadata()?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }
}

/// A gRPC error as the user should read it: the code, then the server's
/// message, then the request id to look for in the service's logs.
pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {} (request id {})", e.code(), e.message(), request_id())
}
