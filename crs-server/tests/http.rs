//! The HTTP listener core against real connections on 127.0.0.1: request
//! ids, TLS, the header-read and body-read timeouts, bodies over the limit,
//! the connection limit, graceful shutdown, the token layer with an HTTP rule
//! of its own and with the kit's table-driven rule, and the HTTP metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use crs_platform::service::request_id;
use crs_platform::service::security::{AuthLayer, Secret, TlsIdentity, TokenRule};
use crs_server::http::{HttpLimits, HttpServer, HttpTokenRule, read_body, tls_config};
use crs_testkit::fixture_dir;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every wait on the server ends after this long: far above what each step takes.
const WITHIN: Duration = Duration::from_secs(10);

/// `GET /id` answers the request's id as the handler sees it; `GET /slow/<ms>`
/// answers after that many milliseconds; `POST /body` reads the body whole,
/// at most [`BODY_LIMIT`] bytes, and answers its length.
fn app() -> Router {
    Router::new()
        .route("/id", get(|| async { request_id::current().unwrap_or_default() }))
        .route(
            "/slow/{ms}",
            get(|axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "done"
            }),
        )
        .route(
            "/body",
            axum::routing::post(|request: axum::extract::Request| async move {
                read_body(request, BODY_LIMIT, "TEST_LIMIT").await.map(|body| body.len().to_string())
            }),
        )
}

const BODY_LIMIT: usize = 1000;

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
    let limits =
        HttpLimits { max_connections: 1, header_read_timeout: Duration::from_secs(60), ..HttpLimits::default() };
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

/// Sends `request` whole on a new connection, then keeps it open for `linger`
/// (a body still to come); the answer, read until the server closes.
async fn exchange(server: &HttpServer, request: &[u8], linger: Duration) -> String {
    let mut stream = TcpStream::connect(server.local_addr()).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let read = async {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(WITHIN, async {
        let (answer, ()) = tokio::join!(read, tokio::time::sleep(linger));
        answer
    })
    .await
    .expect("an answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_slow_bodies_and_short_ones_400() {
    let limits = HttpLimits { body_read_timeout: Duration::from_millis(300), ..HttpLimits::default() };
    let server = start(app(), false, limits).await;

    let fits = client().post(url(&server, "/body")).body(vec![b'x'; BODY_LIMIT]).send().await.expect("POST");
    assert_eq!(fits.text().await.expect("body"), BODY_LIMIT.to_string());

    // By its declared length: refused before a byte of it is sent.
    let head = format!("POST /body HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n", BODY_LIMIT + 1);
    let answer = exchange(&server, head.as_bytes(), Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 1000 bytes") && answer.contains("TEST_LIMIT"), "{answer}");
    assert!(answer.contains("content-type: application/json"), "{answer}");

    // Streamed without a length: refused once past the limit.
    let chunk = format!("{:x}\r\n{}\r\n", 600, "x".repeat(600));
    let streamed = format!("POST /body HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}");
    let answer = exchange(&server, streamed.as_bytes(), Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Too slow: half a body, then nothing.
    let slow = "POST /body HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nhalf";
    let started = Instant::now();
    let answer = exchange(&server, slow.as_bytes(), Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("did not arrive within 300ms"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // Cut short: the client closes its side with the body unfinished.
    let mut stream = TcpStream::connect(server.local_addr()).await.expect("connect");
    stream.write_all(b"POST /body HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nhalf").await.expect("send");
    stream.shutdown().await.expect("half-close");
    let (_, answer) = until_closed(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("could not be read whole"), "{answer}");
}

/// A route table as crs-proto holds them: writes need the token.
fn table(method: &str, _path: &str) -> crs_proto::Access {
    if method == "GET" { crs_proto::Access::Open } else { crs_proto::Access::Token }
}

#[tokio::test]
async fn the_kits_token_rule_follows_its_table_and_refuses_with_json_and_a_challenge() {
    let routes = Router::new().route("/thing", get(|| async { "read" }).post(|| async { "written" }));
    let guarded = routes.layer(AuthLayer::new(Some(Secret::new("kit-token")), HttpTokenRule::new(table)));
    let server = start(guarded, false, HttpLimits::default()).await;
    let thing = url(&server, "/thing");
    assert_eq!(client().get(&thing).send().await.expect("GET").text().await.expect("body"), "read");
    let refused = client().post(&thing).bearer_auth("guess").send().await.expect("POST");
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    assert_eq!(refused.headers()["content-type"], "application/json");
    assert_eq!(refused.text().await.expect("body"), r#"{"error":"missing or wrong bearer token"}"#);
    let allowed = client().post(&thing).bearer_auth("kit-token").send().await.expect("POST");
    assert_eq!(allowed.text().await.expect("body"), "written");
}

#[tokio::test]
async fn http_requests_are_counted_by_route_and_status_refusals_included() {
    use std::sync::Arc;

    use crs_server::metrics::{HttpMetrics, render};
    use prometheus_client::registry::Registry;

    let mut registry = Registry::default();
    let metrics = Arc::new(HttpMetrics::new(registry.sub_registry_with_prefix("crs_test")));
    let routes = Router::new().route("/things/{id}", get(|| async { "read" }).post(|| async { "written" }));
    let app = routes
        .layer(AuthLayer::new(Some(Secret::new("kit-token")), HttpTokenRule::new(table)))
        .layer(axum::middleware::from_fn_with_state(metrics, HttpMetrics::record));
    let server = start(app, false, HttpLimits::default()).await;
    for path in ["/things/1", "/things/2", "/nowhere"] {
        client().get(url(&server, path)).send().await.expect("GET");
    }
    client().post(url(&server, "/things/1")).send().await.expect("POST");
    let text = render(&registry);
    for line in [
        r#"crs_test_http_requests_total{route="/things/{id}",method="GET",status="200"} 2"#,
        r#"crs_test_http_requests_total{route="/things/{id}",method="POST",status="401"} 1"#,
        r#"crs_test_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"crs_test_http_request_duration_seconds_count{route="/things/{id}",method="GET"} 2"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}
