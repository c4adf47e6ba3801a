//! A real S3-compatible server for tests: moto's standalone server on a free
//! loopback port, one per test, with a fresh bucket per test.
//!
//! moto is pinned in `testkit/s3-requirements.txt` and installed into a virtual
//! environment at `target/s3-venv` (CI installs it there before the tests; the
//! first test to need it otherwise installs it, under a lock, while the other
//! test binaries wait). Where it cannot be installed or started, the S3 tests
//! print `skipped: ...` and pass, unless `CI` is set: then they fail.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crs_platform::storage::bucket::S3Env;

/// The pinned requirements; the venv remembers the ones it was made from.
const REQUIREMENTS: &str = include_str!("../s3-requirements.txt");
const REQUIREMENTS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/s3-requirements.txt");
/// Written into the venv after a complete install, holding [`REQUIREMENTS`].
const INSTALLED_MARKER: &str = "installed-requirements.txt";
/// moto imports for a second or two, longer on a loaded machine.
const READY_WITHIN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// moto takes any key while its authentication is off.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

/// Whether the server checks credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Any key works, as in most tests.
    Off,
    /// Every request must be signed with a key moto's IAM knows
    /// (`INITIAL_NO_AUTH_ACTION_COUNT=0`); none does, so every request is refused.
    RefuseAll,
}

/// moto running on `127.0.0.1`; killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    child: Child,
    http: reqwest::Client,
    /// Holds moto's log.
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts moto, or returns `None` after printing `skipped: <why>` when it
    /// cannot be installed or started. With `CI` set, that panics instead.
    pub async fn start_or_skip(auth: Auth) -> Option<S3Server> {
        match S3Server::start(auth).await {
            Ok(server) => Some(server),
            Err(reason) if ci() => panic!("CI is set, so the S3 tests must run: {reason}"),
            Err(reason) => {
                println!("skipped: no S3 server: {reason}");
                None
            }
        }
    }

    /// Installs moto if needed and starts it; why not, otherwise.
    pub async fn start(auth: Auth) -> Result<S3Server, String> {
        let moto = tokio::task::spawn_blocking(install).await.map_err(|e| e.to_string())??;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| e.to_string())?;
        // A port taken between our probe and moto's bind shows as moto exiting; try another.
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
            let port = free_port().map_err(|e| format!("free port: {e}"))?;
            let log = File::create(dir.path().join("moto.log")).map_err(|e| format!("moto log: {e}"))?;
            let mut command = Command::new(&moto);
            // Nothing from the developer's shell: no AWS_* settings, no MOTO_* switches.
            command.env_clear().args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            if auth == Auth::RefuseAll {
                command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", moto.display()))?;
            let mut server = S3Server { endpoint: format!("http://127.0.0.1:{port}"), child, http: http.clone(), dir };
            match server.wait_until_ready().await {
                Ok(()) => return Ok(server),
                Err(reason) => last = reason,
            }
        }
        Err(last)
    }

    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            // Any HTTP answer means moto is listening.
            if self.http.get(format!("{}/moto-api/", self.endpoint)).send().await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("moto exited ({status}): {}", self.log()));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("moto did not answer within {READY_WITHIN:?}: {}", self.log()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The end of moto's log.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `AWS_*` variables of a client of this server, for the services and
    /// crctl as child processes.
    pub fn vars(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_REGION", REGION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The same, for a bucket opened in this process.
    pub fn env(&self) -> S3Env {
        S3Env::Explicit(self.vars())
    }

    /// Creates a bucket no test has used and returns its name.
    pub async fn create_bucket(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!("crs-test-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let response = self.http.put(format!("{}/{name}", self.endpoint)).send().await.expect("create bucket");
        assert!(response.status().is_success(), "create bucket {name}: {}", response.status());
        name
    }

    /// The keys of the multipart uploads begun and neither completed nor
    /// aborted in `bucket` (S3's ListMultipartUploads).
    pub async fn pending_uploads(&self, bucket: &str) -> Vec<String> {
        let url = format!("{}/{bucket}?uploads", self.endpoint);
        let response = self.http.get(url).send().await.expect("list multipart uploads");
        assert!(response.status().is_success(), "list multipart uploads: {}", response.status());
        let xml = response.text().await.expect("listing body");
        xml.split("<Upload>")
            .skip(1)
            .filter_map(|upload| upload.split_once("<Key>")?.1.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CI sets `CI`; there a test that cannot run must fail rather than skip.
fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `target/`: the test runs as `target/<profile>/deps/<name>-<hash>`.
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("test executable: {e}"))?;
    exe.ancestors().nth(3).map(Path::to_path_buf).ok_or_else(|| format!("{} is not under target/", exe.display()))
}

/// moto_server of `target/s3-venv`, installed first unless it is there with
/// the pinned requirements. Test binaries run at once, so the install holds a
/// lock file that the others wait on; the lock goes with the process.
fn install() -> Result<PathBuf, String> {
    let target = target_dir()?;
    let venv = target.join("s3-venv");
    let moto = venv.join("bin").join("moto_server");
    let marker = venv.join(INSTALLED_MARKER);
    let installed = || moto.is_file() && std::fs::read_to_string(&marker).is_ok_and(|m| m == REQUIREMENTS);
    if installed() {
        return Ok(moto);
    }
    std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let lock = File::create(target.join("s3-venv.lock")).map_err(|e| format!("lock file: {e}"))?;
    lock.lock().map_err(|e| format!("lock file: {e}"))?;
    if installed() {
        return Ok(moto);
    }
    println!("installing {} into {}", REQUIREMENTS_PATH, venv.display());
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-r",
        REQUIREMENTS_PATH,
    ]))?;
    std::fs::write(&marker, REQUIREMENTS).map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(moto)
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?}: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr)))
    }
}
