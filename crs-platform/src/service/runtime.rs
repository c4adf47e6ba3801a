//! Process plumbing shared by the services and `crctl`: logging and parsing
//! settings.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

/// Parses settings from `args` (without the program name) as the binary would,
/// but with every environment-variable fallback switched off, so that only
/// `args` and the documented defaults count: what tests need, whatever is set
/// in the shell that runs them.
pub fn parse_without_env<T: CommandFactory + FromArgMatches>(args: &[&str]) -> Result<T, clap::Error> {
    let command = T::command().mut_args(|arg| arg.env(None));
    let program = OsString::from(command.get_name().to_owned());
    let matches = command.try_get_matches_from(std::iter::once(program).chain(args.iter().map(OsString::from)))?;
    T::from_arg_matches(&matches)
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors: the event's fields, and
    /// the fields of the spans it is in (a request's `request_id`, a job's `job_id`).
    Json,
}

/// Logs text to stderr; `RUST_LOG` overrides `default_filter` (e.g. `info`).
pub fn init_tracing(default_filter: &str) {
    init_logging(default_filter, LogFormat::Text);
}

/// Logs to stderr in `format`; `RUST_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // A second init (tests starting several services) keeps the first subscriber.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
        LogFormat::Text => {
            // Colours only for a person at a terminal, not in log files or containers.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).try_init()
        }
    };
}
