//! Capturing this process's log lines as JSON, for tests of what the services log.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Every JSON log line written since [`capture_logs`] was first called.
#[derive(Clone, Debug, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// The lines so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}")))
            .collect()
    }
}

struct Sink(CapturedLogs);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, once per test binary, a subscriber that writes every `info` and
/// higher line of this process as JSON (as `LOG_FORMAT=json` does) into memory.
/// Call it before anything else logs: the first subscriber of a process stays.
pub fn capture_logs() -> CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(move || Sink(writer.clone()))
            .try_init()
            .expect("capture_logs runs before any other subscriber is installed");
        logs
    })
    .clone()
}
