//! The binaries under test start without the caller's settings: every
//! variable any of them reads is in the list the harness clears.

use std::collections::BTreeSet;

use clap::CommandFactory;
use smoke_test::CONFIG_VARS;

/// The variables `command` and its subcommands read.
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

#[test]
fn children_start_without_any_setting_the_binaries_read() {
    let mut read = BTreeSet::new();
    variables(&train_service::Config::command(), &mut read);
    variables(&serve_service::Config::command(), &mut read);
    variables(&crctl::Cli::command(), &mut read);
    assert!(read.contains("MODEL_VER") && read.contains("BUCKET_URL"), "{read:?}");
    let missing: Vec<&String> = read.iter().filter(|name| !CONFIG_VARS.contains(&name.as_str())).collect();
    assert!(missing.is_empty(), "the smoke test's children would inherit these from the shell: {missing:?}");
}
