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
