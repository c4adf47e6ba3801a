//! The HTTP listener core every HTTP endpoint of the services runs on (the
//! `/metrics` endpoint, serve-service's REST API, the console's): serves an
//! axum [`Router`] on a [`TcpListener`] over HTTP/1.1, with TLS when the
//! service has a certificate, the same request ids as gRPC (`x-request-id`
//! and the `request` log span, through `RequestIdLayer`), a limit on open
//! connections, timeouts on reading a request's headers and its body, and a
//! graceful shutdown. [`HttpTokenRule`] is an HTTP API's bearer-token rule.
//!
//! A connection beyond the limit waits in the listen backlog until one closes;
//! a client that does not send a whole request head within the header-read
//! timeout (the TLS handshake included, and idle keep-alive connections too)
//! is disconnected, and a body that has not arrived whole within the
//! body-read timeout fails to read ([`BodyTimedOut`]), so slow or idle
//! clients cannot hold the server.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use crs_platform::service::request_id::{RequestIdLayer, RequestIdService};
use crs_platform::service::security::{TlsIdentity, TokenRule};
use crs_proto::Access;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;
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
    /// How long a client gets to send a request's whole body, counted from the
    /// end of its headers.
    pub body_read_timeout: Duration,
}

impl HttpLimits {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
        }
    }
}

/// The error a request body's read ends with when the body has not arrived
/// whole within the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// A request body that fails with [`BodyTimedOut`] once its deadline passes.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a request's body whole, refusing one over `limit` bytes (the size of
/// `setting`) with 413 before reading it (by its `Content-Length`) or as soon
/// as the bytes read pass the limit; a body that ends early or too late
/// ([`BodyTimedOut`]) is the client's fault, 400.
pub async fn read_body(
    request: axum::extract::Request,
    limit: usize,
    setting: &str,
) -> Result<Bytes, crate::status::HttpError> {
    use crs_platform::error::ErrorKind;
    use http_body_util::BodyExt;

    let too_large = || {
        crate::status::HttpError::new(
            ErrorKind::TooLarge,
            format!("the request body is larger than {limit} bytes, the most this server takes ({setting})"),
        )
    };
    let declared = request.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    if declared.is_some_and(|length: u64| length > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if caused_by::<http_body_util::LengthLimitError>(&*error) => Err(too_large()),
        Err(error) => {
            let message = match find_cause::<BodyTimedOut>(&*error) {
                Some(timed_out) => format!("{timed_out}; send it faster or in smaller requests"),
                None => format!("the request body could not be read whole: {error}"),
            };
            tracing::debug!(error = %error, "request body not read");
            Err(crate::status::HttpError::new(ErrorKind::InvalidInput, message))
        }
    }
}

/// The first error of type `T` in `error`'s chain of sources.
fn find_cause<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        next = error.source();
    }
    None
}

fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    find_cause::<T>(error).is_some()
}

/// The bearer-token rule of an HTTP API: `access(method, path)` (a route table
/// of `crs-proto`) says which requests need the token, and a refusal is
/// 401 with `{"error": ...}` and a `WWW-Authenticate: Bearer` challenge.
#[derive(Clone, Copy)]
pub struct HttpTokenRule {
    access: fn(&str, &str) -> Access,
}

impl std::fmt::Debug for HttpTokenRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTokenRule").finish_non_exhaustive()
    }
}

impl HttpTokenRule {
    pub fn new(access: fn(&str, &str) -> Access) -> Self {
        HttpTokenRule { access }
    }
}

/// What a refused request is told; the same words as gRPC's refusal.
const REFUSED: &str = "missing or wrong bearer token";

impl TokenRule for HttpTokenRule {
    fn needs_token(&self, method: &http::Method, path: &str) -> bool {
        (self.access)(method.as_str(), path) == Access::Token
    }

    fn refusal(&self) -> http::Response<Full<Bytes>> {
        let body = crate::status::HttpError::new(crs_platform::error::ErrorKind::Unauthenticated, REFUSED).body();
        let mut refusal = http::Response::new(Full::new(Bytes::from(body)));
        *refusal.status_mut() = http::StatusCode::UNAUTHORIZED;
        refusal.headers_mut().insert(CONTENT_TYPE, crate::status::JSON);
        refusal.headers_mut().insert(WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        refusal
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
        let connection = Connection { service: service.clone(), limits, stop: stop.clone(), _permit: permit };
        connections.spawn(connection.run(stream, peer, tls.clone()));
    }
    // No new connections from here; the open ones were told to finish with `stop`.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One accepted connection and what it holds.
struct Connection {
    service: RequestIdService<Router>,
    limits: HttpLimits,
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
        match tokio::time::timeout(self.limits.header_read_timeout, tls.accept(stream)).await {
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
        let body_read_timeout = self.limits.body_read_timeout;
        let answer = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let mut service = service.clone();
            let request = request.map(|inner| {
                let deadline = Box::pin(tokio::time::sleep(body_read_timeout));
                axum::body::Body::new(DeadlineBody { inner, deadline, timeout: body_read_timeout })
            });
            async move {
                poll_fn(|cx| Service::<http::Request<axum::body::Body>>::poll_ready(&mut service, cx)).await?;
                service.call(request).await
            }
        });
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.limits.header_read_timeout);
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
