//! The HTTP listener core against real connections on 127.0.0.1: request
//! ids, TLS, the header-read timeout, the connection limit, graceful shutdown,
//! and the token layer with an HTTP rule of its own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use crs_platform::service::request_id;
use crs_platform::service::security::{AuthLayer, Secret, TlsIdentity, TokenRule};
use crs_server::http::{HttpLimits, HttpServer, tls_config};
use crs_testkit::fixture_dir;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every wait on the server ends after this long: far above what each step takes.
const WITHIN: Duration = Duration::from_secs(10);

/// `GET /id` answers the request's id as the handler sees it; `GET /slow/<ms>`
/// answers after that many milliseconds.
fn app() -> Router {
    Router::new().route("/id", get(|| async { request_id::current().unwrap_or_default() })).route(
        "/slow/{ms}",
        get(|axum::extract::Path(ms): axum::extract::Path<u64>| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            "done"
        }),
    )
}

async fn start(app: Router, tls: bool, limits: HttpLimits) -> HttpServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tls = tls.then(|| tls_config(&identity()).expect("the test certificate serves"));
    HttpServer::start(listener, app, tls, limits).expect("start")
}

fn identity() -> TlsIdentity {
    let read = |name: &str| std::fs::read(fixture_dir().join("tls").join(name)).expect("test TLS file");
    TlsIdentity { cert_pem: read("server.pem"), key_pem: read("server.key") }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(WITHIN).build().expect("client")
}

fn tls_client() -> reqwest::Client {
    let ca = std::fs::read(fixture_dir().join("tls/ca.pem")).expect("test CA");
    let ca = reqwest::Certificate::from_pem(&ca).expect("CA certificate");
    reqwest::Client::builder().no_proxy().timeout(WITHIN).tls_certs_only([ca]).build().expect("TLS client")
}

/// Reads until the server closes the connection; how long that took.
async fn until_closed(stream: &mut TcpStream) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WITHIN, stream.read_to_end(&mut answer)).await.expect("the server closes");
    // A reset is a close too.
    drop(read);
    (started.elapsed(), answer)
}

fn url(server: &HttpServer, path: &str) -> String {
    format!("http://{}{path}", server.local_addr())
}

#[tokio::test]
async fn requests_carry_the_callers_id_or_a_new_one_into_the_handler_and_back() {
    let server = start(app(), false, HttpLimits::default()).await;
    let answer = client().get(url(&server, "/id")).header("x-request-id", "caller-7").send().await.expect("GET");
    assert_eq!(answer.headers()["x-request-id"], "caller-7");
    assert_eq!(answer.text().await.expect("body"), "caller-7");

    let answer = client().get(url(&server, "/id")).send().await.expect("GET");
    let made_up = answer.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert_eq!(made_up.len(), 16, "{made_up}");
    assert_eq!(answer.text().await.expect("body"), made_up);

    // Outside the routes too: the layer is around the whole router.
    let missing = client().get(url(&server, "/nowhere")).send().await.expect("GET");
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn tls_is_served_with_the_service_certificate_and_plaintext_gets_no_answer() {
    let server = start(app(), true, HttpLimits::default()).await;
    let port = server.local_addr().port();
    let answer = tls_client().get(format!("https://localhost:{port}/id")).send().await.expect("GET over TLS");
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-request-id"));

    let plain = client().get(url(&server, "/id")).send().await;
    assert!(plain.is_err(), "a plaintext request was answered: {plain:?}");
}

#[tokio::test]
async fn the_certificate_and_key_must_be_pem() {
    let garbage = TlsIdentity { cert_pem: b"not a certificate".to_vec(), key_pem: identity().key_pem };
    let err = tls_config(&garbage).expect_err("no certificate").to_string();
    assert!(err.contains("TLS_CERT"), "{err}");
    let no_key = TlsIdentity { cert_pem: identity().cert_pem, key_pem: b"not a key".to_vec() };
    let err = tls_config(&no_key).expect_err("no key").to_string();
    assert!(err.contains("TLS_KEY"), "{err}");
}

#[tokio::test]
async fn idle_and_slow_clients_are_cut_off_by_the_header_read_timeout() {
    let limits = HttpLimits { header_read_timeout: Duration::from_millis(300), ..HttpLimits::default() };
    let server = start(app(), false, limits).await;

    let mut idle = TcpStream::connect(server.local_addr()).await.expect("connect");
    let (waited, answer) = until_closed(&mut idle).await;
    assert!(waited >= Duration::from_millis(250), "closed before the timeout: {waited:?}");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    let mut slow = TcpStream::connect(server.local_addr()).await.expect("connect");
    slow.write_all(b"GET /id HTTP/1.1\r\nHost: test\r\n").await.expect("half a request head");
    let (waited, answer) = until_closed(&mut slow).await;
    assert!(waited < WITHIN && answer.is_empty(), "{waited:?} {}", String::from_utf8_lossy(&answer));

    // A kept-alive connection that goes quiet after an answer is cut off the same way.
    let mut kept = TcpStream::connect(server.local_addr()).await.expect("connect");
    kept.write_all(b"GET /id HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("a request");
    let (_, answer) = until_closed(&mut kept).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));

    // Over TLS the handshake is bounded by the same timeout.
    let tls_server = start(app(), true, limits).await;
    let mut silent = TcpStream::connect(tls_server.local_addr()).await.expect("connect");
    let (waited, _) = until_closed(&mut silent).await;
    assert!(waited >= Duration::from_millis(250) && waited < WITHIN, "{waited:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let limits = HttpLimits { max_connections: 1, header_read_timeout: Duration::from_secs(60) };
    let server = start(app(), false, limits).await;
    let holder = TcpStream::connect(server.local_addr()).await.expect("connect");
    // Accepted before the next one connects: the listener takes connections in order.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut waiting = TcpStream::connect(server.local_addr()).await.expect("connect");
    let request = "GET /id HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    waiting.write_all(request.as_bytes()).await.expect("send");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut byte)).await;
    assert!(early.is_err(), "a connection beyond the limit was answered");

    drop(holder);
    let mut answer = Vec::new();
    tokio::time::timeout(WITHIN, waiting.read_to_end(&mut answer)).await.expect("answered").expect("read");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_then_refuses_connections() {
    let server = start(app(), false, HttpLimits::default()).await;
    let addr = server.local_addr();
    let in_flight = tokio::spawn(client().get(format!("http://{addr}/slow/300")).send());
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    server.shutdown(WITHIN).await;
    let answer = in_flight.await.expect("task").expect("the request in flight is answered");
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() < WITHIN, "shutdown waited for the idle connection: {:?}", started.elapsed());
    let (_, nothing) = until_closed(&mut idle).await;
    assert!(nothing.is_empty());
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
}

#[tokio::test]
async fn requests_still_running_when_the_grace_period_ends_are_cut_off() {
    let server = start(app(), false, HttpLimits::default()).await;
    let addr: SocketAddr = server.local_addr();
    let mut stuck = TcpStream::connect(addr).await.expect("connect");
    stuck.write_all(b"GET /slow/60000 HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    server.shutdown(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let (_, answer) = until_closed(&mut stuck).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

/// An HTTP side's own token rule, as a REST API would have: writes need it,
/// and a refusal is 401 with a challenge.
#[derive(Clone, Copy)]
struct WritesNeedTheToken;

impl TokenRule for WritesNeedTheToken {
    fn needs_token(&self, method: &http::Method, _path: &str) -> bool {
        method != http::Method::GET
    }

    fn refusal(&self) -> http::Response<Full<Bytes>> {
        let mut refusal = http::Response::new(Full::new(Bytes::from_static(b"{\"error\":\"bearer token needed\"}")));
        *refusal.status_mut() = http::StatusCode::UNAUTHORIZED;
        refusal.headers_mut().insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
        refusal
    }
}

#[tokio::test]
async fn the_token_layer_guards_http_routes_with_the_rule_it_is_given() {
    let routes = Router::new().route("/thing", get(|| async { "read" }).post(|| async { "written" }));
    let guarded = routes.layer(AuthLayer::new(Some(Secret::new("http-token")), WritesNeedTheToken));
    let server = start(guarded, false, HttpLimits::default()).await;
    let thing = url(&server, "/thing");

    assert_eq!(client().get(&thing).send().await.expect("GET").text().await.expect("body"), "read");
    let refused = client().post(&thing).send().await.expect("POST");
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let wrong = client().post(&thing).bearer_auth("guess").send().await.expect("POST");
    assert_eq!(wrong.status(), 401);
    let allowed = client().post(&thing).bearer_auth("http-token").send().await.expect("POST");
    assert_eq!(allowed.text().await.expect("body"), "written");
}
