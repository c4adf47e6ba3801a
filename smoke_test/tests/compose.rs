//! docker-compose.yml only sets variables something in the containers reads:
//! the services' own settings, crctl's (the health checks run it, with TLS_CA
//! when the services serve TLS), tracing's RUST_LOG, or object_store's AWS_* keys.
//! (CI also runs `docker-compose config -q` on the file.)

mod common;

fn read_by_a_library(name: &str) -> bool {
    name == "RUST_LOG"
        || name
            .strip_prefix("AWS_")
            .is_some_and(|_| name.to_ascii_lowercase().parse::<object_store::aws::AmazonS3ConfigKey>().is_ok())
}

#[test]
fn compose_sets_only_variables_the_services_read() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml");
    let mut compose: serde_norway::Value = serde_norway::from_str(&text).expect("valid YAML");
    compose.apply_merge().expect("merge keys resolve");
    let settings = common::settings_read();
    let services = compose["services"].as_mapping().expect("services");
    // Helpers such as the s3 profile's server run other images and read their own variables;
    // they must stay out of a plain `compose up`.
    let (ours, helpers): (Vec<_>, Vec<_>) =
        services.iter().partition(|(_, service)| service["image"].as_str() == Some("crs:latest"));
    let names: Vec<&str> = ours.iter().map(|(name, _)| name.as_str().expect("service name")).collect();
    assert_eq!(names, ["train", "serve"], "the project's services");
    for (name, service) in &helpers {
        assert!(!service["profiles"].is_null(), "helper service {name:?} is started without a profile");
    }
    for (name, service) in ours {
        let name = name.as_str().expect("service name");
        let environment = service["environment"].as_mapping().expect("environment is a mapping");
        let mut checked = 0;
        for key in environment.keys() {
            let key = key.as_str().expect("variable name");
            assert!(
                settings.contains(key) || read_by_a_library(key),
                "service {name} sets {key}, which nothing in the image reads (their settings: {settings:?})"
            );
            checked += 1;
        }
        assert!(checked >= 5, "service {name} sets only {checked} variables");
    }
    for required in ["TRAIN_ADDR", "SERVE_ADDR", "BUCKET_URL", "MODEL_VER", "MODEL_RUN", "WEBHOOK_URL"] {
        assert!(settings.contains(required), "{required} is not a service setting");
    }
}

/// `${NAME:-default}` in a compose value: the variable and its default.
fn shell_default(value: &str) -> Option<(&str, &str)> {
    let inner = value.strip_prefix("${")?.strip_suffix('}')?;
    inner.split_once(":-")
}

/// The default a service gives the setting read from `variable`, as clap shows it.
fn service_default(command: &clap::Command, variable: &str) -> Option<String> {
    let arg = command.get_arguments().find(|arg| arg.get_env().is_some_and(|env| env == variable))?;
    let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    Some(defaults.join(","))
}

/// A plain `compose up` must run each service as it runs by default: a compose default
/// that differs (as `MODEL_RUN=${MODEL_RUN:-latest}` did, serving whatever run came last,
/// rejected or draft) changes behaviour behind the documentation's back.
#[test]
fn compose_defaults_are_the_services_own() {
    use clap::CommandFactory;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let mut compose: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).expect("docker-compose.yml")).expect("valid YAML");
    compose.apply_merge().expect("merge keys resolve");
    let commands = [("train", train_service::Config::command()), ("serve", serve_service::Config::command())];
    let mut compared = Vec::new();
    for (name, command) in &commands {
        let environment = compose["services"][*name]["environment"].as_mapping().expect("environment");
        for (key, value) in environment {
            let (Some(key), Some(value)) = (key.as_str(), value.as_str()) else { continue };
            let Some((variable, default)) = shell_default(value) else { continue };
            assert_eq!(variable, key, "service {name}: {key} takes its value from another variable");
            let Some(theirs) = service_default(command, variable) else { continue };
            if default.is_empty() {
                continue;
            }
            assert_eq!(
                default, theirs,
                "service {name}: compose defaults {variable} to {default:?}, the service to {theirs:?}"
            );
            compared.push(format!("{name}.{variable}"));
        }
    }
    for required in ["serve.MODEL_RUN", "serve.MODEL_VER", "train.MODEL_VER", "serve.POLL_INTERVAL_SECS"] {
        assert!(compared.iter().any(|c| c == required), "{required} was not compared: {compared:?}");
    }
}
