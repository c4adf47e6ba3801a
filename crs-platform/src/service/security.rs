//! Who may call what, and over which transport: the bearer token that guards
//! every call that changes something, and the TLS files of a service's ports.
//!
//! [`AuthLayer`] enforces the token in front of a server; which calls need it,
//! and how a refusal is answered, is the [`TokenRule`] of the protocol it
//! guards (gRPC's names its RPCs in `crs_proto::RPC_ACCESS`). The token is a
//! secret like the webhook URL: [`Secret`] never shows it in `Debug` output,
//! and a refused call is answered and logged without it.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use sha2::{Digest, Sha256};

/// Why the security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("AUTH_TOKEN and AUTH_TOKEN_FILE are both set; set one")]
    TokenTwice,
    #[error("cannot read AUTH_TOKEN_FILE {}: {source}", path.display())]
    ReadTokenFile { path: PathBuf, source: std::io::Error },
    #[error("{setting} is empty")]
    EmptyToken { setting: &'static str },
    #[error("{setting} must be printable ASCII without spaces, as an HTTP header value")]
    UnprintableToken { setting: &'static str },
    #[error("TLS_CERT and TLS_KEY go together: set both or neither")]
    HalfTls,
    #[error("cannot read {setting} {}: {source}", path.display())]
    ReadTlsFile { setting: &'static str, path: PathBuf, source: std::io::Error },
}

/// A value that must never be printed: `Debug` shows `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, to send or compare; never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

/// The bearer token, given directly or as a file (a mounted secret). Both the
/// services and crctl read it; `global` lets crctl take it after a subcommand.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TokenSettings {
    /// Bearer token: the services require it on every RPC that changes something, clients send it. Unset means none. A secret: never logged.
    #[arg(long, env = "AUTH_TOKEN", hide_env_values = true, global = true)]
    pub auth_token: Option<Secret>,
    /// File holding the bearer token (a trailing newline is ignored), instead of AUTH_TOKEN.
    #[arg(long, env = "AUTH_TOKEN_FILE", global = true)]
    pub auth_token_file: Option<PathBuf>,
}

impl TokenSettings {
    /// The token, read from its file if it is given as one; `None` when unset.
    pub fn token(&self) -> Result<Option<Secret>, SecurityError> {
        let (value, setting) = match (&self.auth_token, &self.auth_token_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err(SecurityError::TokenTwice),
            (Some(token), None) => (token.expose().to_owned(), "AUTH_TOKEN"),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| SecurityError::ReadTokenFile { path: path.clone(), source })?;
                // Files written by editors and `echo` end with a newline that is not part of the token.
                (text.trim_end_matches(['\n', '\r']).to_owned(), "AUTH_TOKEN_FILE")
            }
        };
        if value.is_empty() {
            return Err(SecurityError::EmptyToken { setting });
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecurityError::UnprintableToken { setting });
        }
        Ok(Some(Secret(value)))
    }
}

/// A service's security settings: the token it requires and the TLS files it serves with.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerSecurity {
    #[command(flatten)]
    pub token: TokenSettings,
    /// PEM certificate chain to serve TLS with (needs TLS_KEY); unset means plaintext.
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of TLS_CERT.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// The PEM files a TLS server presents. `Debug` leaves out the key.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity").field("cert_pem", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

impl ServerSecurity {
    /// The certificate and key to serve TLS with, read now; `None` for plaintext.
    pub fn tls_identity(&self) -> Result<Option<TlsIdentity>, SecurityError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                Ok(Some(TlsIdentity { cert_pem: read_pem("TLS_CERT", cert)?, key_pem: read_pem("TLS_KEY", key)? }))
            }
            _ => Err(SecurityError::HalfTls),
        }
    }
}

/// The PEM file a setting names.
pub fn read_pem(setting: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::ReadTlsFile { setting, path: path.to_owned(), source })
}

/// The header clients send the token in, as gRPC metadata keys are: lowercase.
pub const AUTHORIZATION: &str = "authorization";

/// The `authorization` value a client sends with `token`.
pub fn bearer(token: &Secret) -> String {
    format!("Bearer {}", token.expose())
}

/// Whether an `authorization` header value carries `token`. The comparison
/// is of SHA-256 digests, bit by bit without an early exit, so its time says
/// nothing about how much of a guess was right, nor about the token's length.
fn carries(header: &[u8], token: &Secret) -> bool {
    let Some(offered) = header.get(..7).filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer ")).map(|_| &header[7..])
    else {
        return false;
    };
    let (offered, expected) = (Sha256::digest(offered), Sha256::digest(token.expose().as_bytes()));
    offered.iter().zip(expected.iter()).fold(0u8, |differ, (a, b)| differ | (a ^ b)) == 0
}

/// Which calls of a protocol need the token, and how that protocol refuses one
/// that does not carry it.
pub trait TokenRule: Clone + Send + Sync + 'static {
    /// Whether a call of `method` to `path` needs the token.
    fn needs_token(&self, method: &http::Method, path: &str) -> bool;

    /// The answer to a call refused for a missing or wrong token; it names no
    /// token, offered or expected.
    fn refusal(&self) -> http::Response<Full<Bytes>>;
}

/// The tower layer a server puts in front of its services: a call that
/// `rule` says needs the token and that does not carry it is refused before it
/// reaches the service. Without a token it lets every call through.
#[derive(Clone, Debug)]
pub struct AuthLayer<R> {
    token: Option<Arc<Secret>>,
    rule: R,
}

impl<R> AuthLayer<R> {
    pub fn new(token: Option<Secret>, rule: R) -> Self {
        AuthLayer { token: token.map(Arc::new), rule }
    }
}

impl<S, R: Clone> tower_layer::Layer<S> for AuthLayer<R> {
    type Service = AuthService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, token: self.token.clone(), rule: self.rule.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct AuthService<S, R> {
    inner: S,
    token: Option<Arc<Secret>>,
    rule: R,
}

impl<S, R, B, ResB> tower_service::Service<http::Request<B>> for AuthService<S, R>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: Send + 'static,
    R: TokenRule,
{
    type Response = http::Response<Either<ResB, Full<Bytes>>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.token
            && self.rule.needs_token(request.method(), request.uri().path())
            && !request.headers().get(AUTHORIZATION).is_some_and(|value| carries(value.as_bytes(), token))
        {
            // In the request's span, which names the call; the header is never logged.
            tracing::warn!("call refused: missing or wrong bearer token");
            return Box::pin(std::future::ready(Ok(self.rule.refusal().map(Either::Right))));
        }
        let answer = self.inner.call(request);
        Box::pin(async move { Ok(answer.await?.map(Either::Left)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServerSecurity {
        #[derive(clap::Parser)]
        struct Settings {
            #[command(flatten)]
            security: ServerSecurity,
        }
        crate::service::runtime::parse_without_env::<Settings>(args).expect("settings").security
    }

    #[test]
    fn the_token_is_compared_whole_after_the_bearer_scheme() {
        let token = Secret::new("s3cret-token");
        assert!(carries(b"Bearer s3cret-token", &token));
        assert!(carries(b"bearer s3cret-token", &token));
        for wrong in [
            &b""[..],
            b"s3cret-token",
            b"Bearer ",
            b"Bearer s3cret-toke",
            b"Bearer s3cret-token2",
            b"Basic s3cret-token",
        ] {
            assert!(!carries(wrong, &token), "{}", String::from_utf8_lossy(wrong));
        }
    }

    #[test]
    fn a_token_file_loses_its_trailing_newline_and_setting_both_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-file\n").expect("write token");
        let path = file.to_str().expect("utf8 path");
        let token = parse(&["--auth-token-file", path]).token.token().expect("token").expect("set");
        assert_eq!(token.expose(), "from-a-file");
        assert!(matches!(
            parse(&["--auth-token", "x", "--auth-token-file", path]).token.token(),
            Err(SecurityError::TokenTwice)
        ));
        assert!(parse(&[]).token.token().expect("no token").is_none());
        std::fs::write(&file, "\n").expect("write token");
        assert!(matches!(parse(&["--auth-token-file", path]).token.token(), Err(SecurityError::EmptyToken { .. })));
        assert!(matches!(parse(&["--auth-token", "a b"]).token.token(), Err(SecurityError::UnprintableToken { .. })));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let settings = parse(&["--auth-token", "xyzzy-token"]);
        assert!(!format!("{settings:?}").contains("xyzzy"), "{settings:?}");
        assert_eq!(settings.token.token().expect("token").expect("set").expose(), "xyzzy-token");
    }

    #[test]
    fn tls_needs_both_the_certificate_and_the_key() {
        assert!(parse(&[]).tls_identity().expect("plaintext").is_none());
        assert!(matches!(parse(&["--tls-cert", "cert.pem"]).tls_identity(), Err(SecurityError::HalfTls)));
        assert!(matches!(parse(&["--tls-key", "key.pem"]).tls_identity(), Err(SecurityError::HalfTls)));
    }
}
