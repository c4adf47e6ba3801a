//! Helpers of the end-to-end smoke test in `tests/smoke.rs`: build and find the
//! workspace's binaries, run them as child processes whose logs go to files,
//! run `crctl` with a time limit, wait on conditions, and read the gzip CSV
//! files the services write into the bucket.
//!
//! Nothing is mocked: real processes, real ports, real files, and a real HTTP
//! server collecting the webhooks.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crs_testkit::{Behaviour, WebhookReceiver};
use sha2::{Digest, Sha256};

pub mod lifecycle;

/// Every variable the services or `crctl` read (`tests/environment.rs` checks
/// the list against their definitions). Children start without the caller's
/// values so that a developer's shell cannot change what is tested.
pub const CONFIG_VARS: &[&str] = &[
    "TRAIN_ADDR",
    "SERVE_ADDR",
    "BUCKET_URL",
    "MODEL_VER",
    "MODEL_RUN",
    "WEBHOOK_URL",
    "POLL_INTERVAL_SECS",
    "MAX_CONCURRENT_JOBS",
    "SHUTDOWN_GRACE_SECS",
    "MAX_PREDICT_ROWS",
    "MAX_MESSAGE_BYTES",
    "RUST_LOG",
    "INCOMING_PREFIX",
    "CYCLE_INTERVAL_SECS",
    "CYCLE_LEASE_SECS",
    "CRS_FAIL_AT",
    "STALE_UPLOAD_SECS",
    "MAX_CONCURRENT_BATCHES",
    "MAX_MODEL_MEMORY_MB",
    "TRAIN_METRICS_ADDR",
    "TRAIN_HTTP_ADDR",
    "MAX_IMPORT_BYTES",
    "LOG_FORMAT",
    "AUTH_TOKEN",
    "AUTH_TOKEN_FILE",
    "TLS_CERT",
    "TLS_KEY",
    "TLS_CA",
    "SERVE_MODELS",
    "MAX_LOADED_MODELS",
    "SHADOW_MODELS",
    "SHADOW_QUEUE",
    "SHADOW_FLUSH_ROWS",
    "SHADOW_FLUSH_SECS",
    "CAPTURE_SAMPLE",
    "OUTPUT_PREFIX",
    "OUTPUT_DEVICE",
    "SERVE_METRICS_ADDR",
    "SERVE_HTTP_ADDR",
    "HTTP_MAX_CONNECTIONS",
    "HTTP_HEADER_TIMEOUT_SECS",
    "HTTP_BODY_TIMEOUT_SECS",
    // crctl predict-batch --shards and serve-service batch take their shard from it.
    "JOB_COMPLETION_INDEX",
];

/// Removes [`CONFIG_VARS`] and every `AWS_*` variable (object_store reads them
/// all) from what `command` inherits.
fn clear_config(command: &mut Command) {
    for var in CONFIG_VARS {
        command.env_remove(var);
    }
    for (var, _) in std::env::vars_os() {
        if var.to_str().is_some_and(|v| v.starts_with("AWS_")) {
            command.env_remove(var);
        }
    }
}

/// The device names of the data contract, all of which the generated data has.
pub const DEVICES: [&str; 3] = ["Computer", "Smartphone", "Tablet"];

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(50);

/// The workspace root: this crate is one of its members.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("smoke_test sits inside the workspace").to_path_buf()
}

/// Builds train-service, serve-service and crctl in the profile this test was
/// built in, so the binaries under test are never older than the source, and
/// returns the folder holding them.
pub fn build_binaries() -> PathBuf {
    // The test runs as target/<profile>/deps/smoke-<hash>; cargo puts the
    // binaries of the same profile in target/<profile>.
    let exe = std::env::current_exe().expect("path of the test executable");
    let bin_dir = exe.parent().and_then(Path::parent).expect("test executable under target/<profile>/deps");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root()).args([
        "build",
        "--bins",
        "-p",
        "train-service",
        "-p",
        "serve-service",
        "-p",
        "crctl",
    ]);
    if bin_dir.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    let output = command.output().expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build of the binaries failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in ["train-service", "serve-service", "crctl"] {
        let path = bin_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        assert!(path.is_file(), "{} missing after cargo build (built with --target?)", path.display());
    }
    bin_dir.to_path_buf()
}

/// A local address nobody listens on at the moment. The port is released before
/// the service binds it; another process taking it in between would show as the
/// service failing to start, with the bind error in its log.
pub fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").to_string()
}

/// Copies a folder tree, leaving out the top-level entries named in `skip`.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).expect("create the copy's folder");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("folder entry");
        if skip.iter().any(|s| entry.file_name() == *s) {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target, &[]);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

/// Polls `attempt` until it gives a value or `within` passes; the panic message
/// then carries the last reason it gave.
pub fn wait_until<T>(within: Duration, what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(reason) if Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting for {what}: {reason}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    pub command: String,
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}\nexit code: {:?}", self.command, self.code)?;
        writeln!(f, "--- stdout ---\n{}", tail(&self.stdout, 40))?;
        write!(f, "--- stderr ---\n{}", tail(&self.stderr, 40))
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a command to its end, killing it after `timeout`. Output goes through
/// anonymous files rather than pipes, so a chatty child can never block on a
/// full pipe while we wait for it.
pub fn run(command: &mut Command, timeout: Duration) -> Output {
    let description = describe(command);
    let mut stdout = tempfile::tempfile().expect("temp file for stdout");
    let mut stderr = tempfile::tempfile().expect("temp file for stderr");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("clone file handle"))
        .stderr(stderr.try_clone().expect("clone file handle"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{description}`: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        command: description,
        code: status.and_then(|s| s.code()),
        stdout: read_all(&mut stdout),
        stderr: read_all(&mut stderr),
    };
    assert!(status.is_some(), "command still running after {timeout:?}, killed:\n{output}");
    output
}

fn read_all(file: &mut File) -> String {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).expect("rewind captured output");
    file.read_to_string(&mut text).expect("read captured output");
    text
}

fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program());
    let name = program.file_name().unwrap_or(program.as_os_str()).to_string_lossy();
    let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("{name} {}", args.join(" "))
}

/// `crctl`, pointed at the two services.
#[derive(Clone, Debug)]
pub struct Crctl {
    program: PathBuf,
    train_addr: String,
    serve_addr: String,
    /// Further variables, e.g. an S3 bucket's `AWS_*` settings.
    env: Vec<(String, String)>,
}

/// Any single crctl call, training included, ends well within this.
const CRCTL_TIMEOUT: Duration = Duration::from_secs(120);

impl Crctl {
    pub fn new(bin_dir: &Path, train_addr: &str, serve_addr: &str) -> Self {
        Crctl {
            program: bin_dir.join("crctl"),
            train_addr: train_addr.to_owned(),
            serve_addr: serve_addr.to_owned(),
            env: Vec::new(),
        }
    }

    /// The same, with `env` set for every call as well.
    pub fn with_env(self, env: Vec<(String, String)>) -> Self {
        Crctl { env, ..self }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(&self.program);
        clear_config(&mut command);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.env("TRAIN_ADDR", &self.train_addr).env("SERVE_ADDR", &self.serve_addr).args(args);
        run(&mut command, CRCTL_TIMEOUT)
    }

    /// Runs and requires exit code 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert!(output.success(), "crctl failed:\n{output}");
        output
    }

    /// Runs with `--json`, requires exit code 0 and returns the parsed stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.ok(&[&["--json"], args].concat());
        parse_json(&output)
    }

    /// Runs and requires a failure reported as `error: <code>: ...` that
    /// mentions `needle`. crctl prints a refused gRPC call's code that way.
    pub fn refused(&self, args: &[&str], code: &str, needle: &str) -> Output {
        let output = self.run(args);
        assert!(!output.success(), "expected {code}, but crctl succeeded:\n{output}");
        assert!(output.stderr.contains(&format!("error: {code}: ")), "expected status {code}:\n{output}");
        assert!(output.stderr.contains(needle), "expected the message to mention {needle:?}:\n{output}");
        output
    }
}

pub fn parse_json(output: &Output) -> serde_json::Value {
    serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{output}"))
}

/// A service binary running as a child process, its stdout and stderr going to
/// a log file. Dropping it kills the process; dropping it during a panic also
/// prints the end of its log, which is usually where the failure shows.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `bin_dir/name` with exactly these configuration variables.
    pub fn start(bin_dir: &Path, name: &str, env: &[(&str, String)], log_dir: &Path) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let file = File::create(&log).expect("create the service log");
        let mut command = Command::new(bin_dir.join(name));
        clear_config(&mut command);
        // Plain text logs: they are read from a file, not a terminal.
        command.env("NO_COLOR", "1").envs(env.iter().map(|(k, v)| (k, v)));
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Service { name: name.to_owned(), child, log }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An error naming how the process ended, if it has.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait().expect("wait for the service") {
            None => Ok(()),
            Some(status) => Err(format!("{} exited ({status}); log:\n{}", self.name, tail(&self.log(), 40))),
        }
    }

    /// Waits up to `within` for the process to end by itself.
    pub fn wait_for_exit(&mut self, within: Duration) -> ExitStatus {
        wait_until(within, &format!("{} to exit", self.name), || {
            self.child.try_wait().expect("wait for the service").ok_or_else(|| "still running".to_owned())
        })
    }

    /// Kills the process with SIGKILL, as `kill -9` does, and waits for it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the service");
        self.child.wait().expect("wait for the killed service");
    }

    /// Sends SIGTERM, as a container runtime does, and waits up to `within`
    /// for the process to exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} ({}) failed", self.name);
        wait_until(within, &format!("{} to exit after SIGTERM", self.name), || {
            self.child.try_wait().expect("wait for the service").ok_or_else(|| "still running".to_owned())
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the {} log ({}) ---\n{}",
                self.name,
                self.log.display(),
                tail(&self.log(), 60)
            );
        }
    }
}

/// A webhook receiver for synchronous test code: the receiver's HTTP server
/// runs on a runtime of its own, in the background.
#[derive(Debug)]
pub struct Webhooks {
    // Declared before the runtime so that it is dropped while the runtime still runs.
    receiver: WebhookReceiver,
    runtime: tokio::runtime::Runtime,
}

impl Webhooks {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime for the webhook receiver");
        let receiver = runtime.block_on(WebhookReceiver::start(Behaviour::Accept));
        Webhooks { receiver, runtime }
    }

    pub fn url(&self) -> String {
        self.receiver.url()
    }

    pub fn texts(&self) -> Vec<String> {
        self.receiver.texts()
    }

    /// Waits for a webhook each of whose `needles` is part of one of its
    /// strings (the text, a field's value, the footer naming the sender);
    /// panics with the texts received so far if none comes within `within`.
    pub fn wait_for(&self, within: Duration, needles: &[&str]) -> serde_json::Value {
        let found = self.runtime.block_on(self.receiver.wait_for(within, |body| {
            let strings = strings(body);
            needles.iter().all(|needle| strings.iter().any(|s| s.contains(needle)))
        }));
        found.unwrap_or_else(|| panic!("no webhook mentioning {needles:?} within {within:?}; got {:#?}", self.texts()))
    }
}

/// Every string inside a JSON value.
fn strings(value: &serde_json::Value) -> Vec<&str> {
    match value {
        serde_json::Value::String(s) => vec![s],
        serde_json::Value::Array(items) => items.iter().flat_map(strings).collect(),
        serde_json::Value::Object(map) => map.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of a CSV file, gzip or plain (told apart by the gzip magic bytes).
pub fn read_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text_of(&path.display().to_string(), bytes)
}

/// [`read_text`] of bytes read from `name`.
pub fn text_of(name: &str, bytes: Vec<u8>) -> String {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return String::from_utf8(bytes).expect("UTF-8 CSV");
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap_or_else(|e| panic!("gunzip {name}: {e}"));
    text
}

/// A CSV file of the data contract. Its values are integers and device names,
/// never quoted, so splitting on commas reads it exactly.
#[derive(Clone, Debug)]
pub struct Csv {
    pub header: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Csv {
    pub fn parse(text: &str) -> Self {
        let mut lines = text.lines();
        let header = lines.next().expect("a header line").to_owned();
        let columns = header.split(',').map(str::to_owned).collect();
        let rows = lines.map(|line| line.split(',').map(str::to_owned).collect()).collect();
        Csv { header, columns, rows }
    }

    pub fn read(path: &Path) -> Self {
        Self::parse(&read_text(path))
    }

    pub fn column(&self, name: &str) -> usize {
        self.columns.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name} in {}", self.header))
    }

    /// The distinct (entity_id, device) pairs of the rows.
    pub fn keys(&self) -> BTreeSet<(i64, String)> {
        let (entity, device) = (self.column("entity_id"), self.column("device"));
        self.rows.iter().map(|r| (r[entity].parse().expect("integer entity_id"), r[device].clone())).collect()
    }

    pub fn to_text(&self) -> String {
        let mut text = self.header.clone();
        for row in &self.rows {
            text.push('\n');
            text.push_str(&row.join(","));
        }
        text.push('\n');
        text
    }
}
