//! The REST listener against clients that misbehave, on serve-service started
//! as a child process so that its memory is its own: a 100 MB body (refused
//! with 413 without being read whole, whether it declares its length or
//! streams), a body that ends early, clients that send one byte a second (of
//! their headers, of their body), and 1,000 idle connections at once. After
//! each, health answers within 5 s, and at the end the process's peak
//! resident memory (`VmHWM`) is under 300 MB.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crs_testkit::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long health may take to answer while the server is being abused: a loose bound.
const HEALTH_WITHIN: Duration = Duration::from_secs(5);
/// The peak resident memory allowed.
const PEAK_LIMIT_MB: u64 = 300;
/// The header-read and body-read timeouts the child runs with, short to keep the test short.
const TIMEOUT_SECS: u64 = 3;
const HUNDRED_MB: usize = 100 << 20;

/// serve-service as a child process; killed when dropped.
struct ServeProcess {
    child: Child,
    http: SocketAddr,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    /// Starts the built binary on `bucket_url` with nothing from this
    /// process's environment, and waits for its REST address in its JSON log.
    fn start(bucket_url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_serve-service"))
            .env_clear()
            .env("BUCKET_URL", bucket_url)
            .env("SERVE_ADDR", "127.0.0.1:0")
            .env("SERVE_HTTP_ADDR", "127.0.0.1:0")
            .env("MODEL_VER", "v1")
            .env("HTTP_HEADER_TIMEOUT_SECS", TIMEOUT_SECS.to_string())
            .env("HTTP_BODY_TIMEOUT_SECS", TIMEOUT_SECS.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve-service");
        let stderr = child.stderr.take().expect("stderr");
        let (found, addr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                let message = json["fields"]["message"].as_str().unwrap_or_default();
                if message.starts_with("HTTP API at")
                    && let Some(addr) = json["fields"]["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok())
                    && let Some(found) = found.take()
                {
                    let _ = found.send(addr);
                }
            }
        });
        let http = addr.recv_timeout(Duration::from_secs(60)).expect("serve-service logs its REST address");
        ServeProcess { child, http }
    }

    /// `VmHWM` of the child, in MB.
    fn peak_mb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("kB");
        kb / 1024
    }
}

/// The first line of the answer to a GET of `path` on a new connection.
async fn get_status_line(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

/// Health answers 200 on a new connection within [`HEALTH_WITHIN`].
async fn assert_healthy(addr: SocketAddr, after: &str) {
    let started = Instant::now();
    let line = tokio::time::timeout(HEALTH_WITHIN, get_status_line(addr, "/v2/health/ready"))
        .await
        .unwrap_or_else(|_| panic!("health did not answer within {HEALTH_WITHIN:?} after {after}"));
    assert_eq!(line, "HTTP/1.1 200 OK", "after {after}");
    eprintln!("health answered in {:?} after {after}", started.elapsed());
}

/// Sends `head` and then as much of `body` (by chunks) as the server takes,
/// while reading its answer; the answer and how many body bytes were sent.
async fn push(addr: SocketAddr, head: String, body: Vec<Vec<u8>>) -> (String, usize) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut from, mut to) = stream.into_split();
    to.write_all(head.as_bytes()).await.expect("head");
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            for chunk in body {
                if to.write_all(&chunk).await.is_err() {
                    break;
                }
                sent.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), from.read_to_end(&mut answer)).await;
    writer.abort();
    (String::from_utf8_lossy(&answer).into_owned(), sent.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_leave_health_answering_and_memory_under_300_mb() {
    let mut stack = Stack::new().await;
    stack.train("v1").await;
    let server = ServeProcess::start(&stack.bucket_url);
    let addr = server.http;
    crs_testkit::wait_until(Duration::from_secs(60), "the model loaded", || async {
        get_status_line(addr, "/v2/health/ready").await == "HTTP/1.1 200 OK"
    })
    .await;
    let infer = "POST /v2/models/v1/infer HTTP/1.1\r\nHost: test\r\n";

    // 100 MB declared: refused on its length, before the body is read.
    let megabyte = vec![b' '; 1 << 20];
    let chunks = vec![megabyte.clone(); HUNDRED_MB >> 20];
    let (answer, sent) = push(addr, format!("{infer}Content-Length: {HUNDRED_MB}\r\n\r\n"), chunks).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(sent < HUNDRED_MB, "the whole body went through");
    assert_healthy(addr, "a declared 100 MB body").await;

    // 100 MB streamed in chunks: refused once past MAX_MESSAGE_BYTES (16 MiB).
    let chunk = [format!("{:x}\r\n", 1 << 20).into_bytes(), megabyte, b"\r\n".to_vec()].concat();
    let chunks = vec![chunk; HUNDRED_MB >> 20];
    let (answer, sent) = push(addr, format!("{infer}Transfer-Encoding: chunked\r\n\r\n"), chunks).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(sent < HUNDRED_MB / 2, "{sent} bytes went through");
    assert_healthy(addr, "a streamed 100 MB body").await;

    // A body that ends early.
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut from, mut to) = stream.into_split();
    to.write_all(format!("{infer}Content-Length: 1000\r\n\r\n{{\"inputs\": [").as_bytes()).await.expect("send");
    to.shutdown().await.expect("half-close");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), from.read_to_end(&mut answer)).await.expect("answered").ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("could not be read whole"), "{answer}");
    assert_healthy(addr, "a body that ended early").await;

    // One byte a second, of the headers and of a body, while health is asked every second.
    let trickle = |bytes: Vec<u8>| {
        tokio::spawn(async move {
            let started = Instant::now();
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            for byte in bytes {
                if stream.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
            (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
        })
    };
    let head = trickle(infer.as_bytes().to_vec());
    let body_bytes = [format!("{infer}Content-Length: 100\r\n\r\n").into_bytes(), vec![b' '; 100]].concat();
    let head_len = body_bytes.len() - 100;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let body = tokio::spawn(async move {
        let mut stream = stream;
        stream.write_all(&body_bytes[..head_len]).await.expect("head at once");
        let started = Instant::now();
        for byte in &body_bytes[head_len..] {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if started.elapsed() > Duration::from_secs(TIMEOUT_SECS + 2) {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    for second in 0..TIMEOUT_SECS + 1 {
        assert_healthy(addr, &format!("{second} s of clients sending a byte a second")).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (cut_after, answer) = head.await.expect("the slow head");
    assert!(answer.is_empty(), "a head never finished was answered: {answer}");
    assert!(cut_after < Duration::from_secs(TIMEOUT_SECS + 10), "cut off after {cut_after:?}");
    let answer = body.await.expect("the slow body");
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("did not arrive within"), "{answer}");

    // 1,000 idle connections at once.
    let mut idle = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        idle.push(TcpStream::connect(addr).await.expect("an idle connection"));
    }
    assert_healthy(addr, "1,000 idle connections").await;
    drop(idle);

    let peak = server.peak_mb();
    eprintln!("serve-service peak resident memory (VmHWM): {peak} MB");
    assert!(peak < PEAK_LIMIT_MB, "VmHWM {peak} MB");
}
