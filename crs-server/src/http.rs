//! The HTTP listener core every HTTP endpoint of the services runs on (the
//! `/metrics` endpoint now; the REST and console APIs beside gRPC later):
//! serves an axum [`Router`] on a [`TcpListener`] over HTTP/1.1, with TLS when
//! the service has a certificate, the same request ids as gRPC (`x-request-id`
//! and the `request` log span, through `RequestIdLayer`), a limit on open
//! connections, a timeout on reading a request's headers, and a graceful
//! shutdown.
//!
//! A connection beyond the limit waits in the listen backlog until one closes;
//! a client that does not send a whole request head within the header-read
//! timeout (the TLS handshake included, and idle keep-alive connections too)
//! is disconnected, so slow or idle clients cannot hold the server.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use crs_platform::service::request_id::{RequestIdLayer, RequestIdService};
use crs_platform::service::security::TlsIdentity;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tower_layer::Layer;
use tower_service::Service;

/// What keeps slow or idle clients from holding an HTTP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// How long a client gets to send a request's headers (and, over TLS, to
    /// finish the handshake), counted from the connection or from the end of
    /// its previous request.
    pub header_read_timeout: Duration,
}

impl HttpLimits {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Why the TLS files cannot be served with.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS_CERT: {0}")]
    Certificate(rustls::pki_types::pem::Error),
    #[error("TLS_CERT holds no certificate")]
    NoCertificate,
    #[error("TLS_KEY: {0}")]
    Key(rustls::pki_types::pem::Error),
    #[error("TLS_CERT, TLS_KEY: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server side of TLS for HTTP/1.1 with `identity`, on the rustls and
/// aws-lc-rs that serve gRPC.
pub fn tls_config(identity: &TlsIdentity) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Certificate)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(TlsError::Key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A running HTTP listener. Dropping it stops it at once; [`HttpServer::shutdown`]
/// lets the requests in flight finish first.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: AbortOnDropHandle<()>,
}

impl HttpServer {
    /// Serves `app` on `listener`, over TLS with `tls` if given.
    pub fn start(
        listener: TcpListener,
        app: Router,
        tls: Option<Arc<ServerConfig>>,
        limits: HttpLimits,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let service = RequestIdLayer.layer(app);
        let accepting = accept(listener, service, tls.map(TlsAcceptor::from), limits, stop.clone());
        Ok(HttpServer { addr, stop, task: AbortOnDropHandle::new(tokio::spawn(accepting)) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections, lets requests in flight finish within `grace`
    /// (idle connections close at once), then closes whatever is still open.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            tracing::warn!(addr = %self.addr, "HTTP requests still open after the grace period; closing them");
        }
    }
}

async fn accept(
    listener: TcpListener,
    service: RequestIdService<Router>,
    tls: Option<TlsAcceptor>,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait for some to close rather than spin.
                    tracing::warn!(error = %e, "HTTP listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        let connection = Connection {
            service: service.clone(),
            header_read_timeout: limits.header_read_timeout,
            stop: stop.clone(),
            _permit: permit,
        };
        connections.spawn(connection.run(stream, peer, tls.clone()));
    }
    // No new connections from here; the open ones were told to finish with `stop`.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One accepted connection and what it holds.
struct Connection {
    service: RequestIdService<Router>,
    header_read_timeout: Duration,
    stop: CancellationToken,
    /// Its place under the connection limit, given back when it closes.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>) {
        // Answers are small and written whole; do not hold them back for more.
        let _ = stream.set_nodelay(true);
        let Some(tls) = tls else {
            return self.serve(stream, peer).await;
        };
        match tokio::time::timeout(self.header_read_timeout, tls.accept(stream)).await {
            Ok(Ok(stream)) => self.serve(stream, peer).await,
            Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }

    async fn serve<IO>(self, io: IO, peer: SocketAddr)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.service;
        let answer = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let mut service = service.clone();
            async move {
                poll_fn(|cx| Service::<http::Request<Incoming>>::poll_ready(&mut service, cx)).await?;
                service.call(request).await
            }
        });
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.header_read_timeout);
        let connection = builder.serve_connection(TokioIo::new(io), answer);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = self.stop.cancelled() => {
                // Ends the request in flight, if any, then closes.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
        }
    }
}
