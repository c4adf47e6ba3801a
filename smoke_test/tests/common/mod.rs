//! What the binaries in this repository read from their environment.

use std::collections::BTreeSet;

use clap::CommandFactory;

/// Every variable that train-service, serve-service or crctl (subcommands
/// included) reads as a setting.
pub fn settings_read() -> BTreeSet<String> {
    let mut read = BTreeSet::new();
    for command in [train_service::Config::command(), serve_service::Config::command(), crctl::Cli::command()] {
        variables(&command, &mut read);
    }
    read
}

fn variables(command: &clap::Command, out: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        if let Some(name) = arg.get_env() {
            out.insert(name.to_string_lossy().into_owned());
        }
    }
    for sub in command.get_subcommands() {
        variables(sub, out);
    }
}
