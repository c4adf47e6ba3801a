//! Deterministic crash points for the crash tests: when `--fail-at` names a
//! step, the process aborts there, as `kill -9` would, so a test can check what
//! a restart finds at exactly that point.

#[derive(Clone, Debug, Default)]
pub struct FailPoint(Option<String>);

impl FailPoint {
    pub fn new(step: Option<String>) -> Self {
        FailPoint(step.filter(|s| !s.is_empty()))
    }

    /// Aborts the process if `step` is the configured one.
    pub fn check(&self, step: &str) {
        if self.0.as_deref() == Some(step) {
            eprintln!("fail point {step}: aborting");
            std::process::abort();
        }
    }
}
