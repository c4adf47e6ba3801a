//! The Kubernetes manifests (`deploy/k8s/`), as `kubectl kustomize` renders
//! each overlay: every variable they set is one the binaries read, each
//! workload sets what it needs in a cluster, the one-shot commands parse, and
//! every pod is hardened. (CI also validates the rendered objects against the
//! Kubernetes schemas: scripts/k8s-validate.sh.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use serde_norway::Value;

/// The overlays, each with the overlay whose ConfigMap its pods read.
const OVERLAYS: [(&str, &str); 4] = [("dev", "dev"), ("dev/jobs", "dev"), ("s3", "s3"), ("s3/jobs", "s3")];

/// The settings that are secrets: never a literal value in a manifest, never in a ConfigMap.
const SECRETS: [&str; 5] =
    ["AUTH_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "WEBHOOK_URL"];

/// Settings that name a file holding a secret: the file must come from a Secret volume.
const SECRET_FILES: [(&str, &str); 3] =
    [("AUTH_TOKEN_FILE", "crs-auth-token"), ("TLS_CERT", "crs-tls"), ("TLS_KEY", "crs-tls")];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// kubectl from PATH, or where .ci/run installs it (target/tools/kubectl).
fn kubectl() -> Option<PathBuf> {
    let installed = repo().join("target/tools/kubectl");
    if installed.exists() {
        return Some(installed);
    }
    Command::new("kubectl").arg("version").arg("--client").output().ok().map(|_| PathBuf::from("kubectl"))
}

/// Every object of an overlay as `kubectl kustomize` renders it; `None` when
/// kubectl is missing outside CI (in CI that fails).
fn render(overlay: &str) -> Option<Vec<Value>> {
    let Some(kubectl) = kubectl() else {
        assert!(std::env::var_os("CI").is_none(), "kubectl is missing: .ci/run installs it");
        eprintln!("skipped: no kubectl to render deploy/k8s/overlays/{overlay}");
        return None;
    };
    let dir = repo().join("deploy/k8s/overlays").join(overlay);
    let output = Command::new(kubectl).arg("kustomize").arg(&dir).output().expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 YAML");
    // kustomize separates documents with a line `---`.
    let documents =
        text.split("\n---\n").map(|document| serde_norway::from_str::<Value>(document).expect("valid YAML"));
    Some(documents.filter(|value| !value.is_null()).collect())
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The pod template of a workload, or `None` for objects that run no pods.
fn pod_spec(object: &Value) -> Option<&Value> {
    match kind(object) {
        "Deployment" | "Job" => Some(&object["spec"]["template"]["spec"]),
        "CronJob" => Some(&object["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

fn list(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    list(&pod["initContainers"]).iter().chain(list(&pod["containers"]))
}

/// The data of the overlay's ConfigMap `crs-settings`.
fn settings_map(objects: &[Value]) -> BTreeMap<String, String> {
    let map = objects.iter().find(|o| kind(o) == "ConfigMap" && name(o) == "crs-settings").expect("crs-settings");
    map["data"]
        .as_mapping()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.as_str().expect("key").to_owned(), v.as_str().expect("string value").to_owned()))
        .collect()
}

/// What a container's environment holds: each variable and how it is set.
#[derive(Debug, PartialEq)]
enum Source {
    Value(String),
    Secret { name: String, optional: bool },
    Other,
}

fn environment(container: &Value, settings: &BTreeMap<String, String>) -> BTreeMap<String, Source> {
    let mut env = BTreeMap::new();
    for from in list(&container["envFrom"]) {
        let map = from["configMapRef"]["name"].as_str().expect("envFrom is a ConfigMap");
        assert_eq!(map, "crs-settings", "envFrom names only the settings ConfigMap");
        env.extend(settings.iter().map(|(k, v)| (k.clone(), Source::Value(v.clone()))));
    }
    for variable in list(&container["env"]) {
        let key = variable["name"].as_str().expect("env name").to_owned();
        let source = if let Some(value) = variable["value"].as_str() {
            Source::Value(value.to_owned())
        } else if let Some(secret) = variable["valueFrom"]["secretKeyRef"].as_mapping() {
            Source::Secret {
                name: secret["name"].as_str().expect("secret name").to_owned(),
                optional: secret.get("optional").and_then(Value::as_bool).unwrap_or(false),
            }
        } else {
            Source::Other
        };
        env.insert(key, source);
    }
    env
}

fn read_by_a_library(name: &str) -> bool {
    name == "RUST_LOG"
        || name
            .strip_prefix("AWS_")
            .is_some_and(|_| name.to_ascii_lowercase().parse::<object_store::aws::AmazonS3ConfigKey>().is_ok())
}

fn command_of(container: &Value) -> Vec<String> {
    list(&container["command"])
        .iter()
        .chain(list(&container["args"]))
        .map(|v| v.as_str().expect("arg").to_owned())
        .collect()
}

#[test]
fn every_variable_the_manifests_set_is_read_and_each_workload_sets_what_it_needs() {
    let read = common::settings_read();
    let mut seen_workloads = BTreeSet::new();
    for (overlay, settings_from) in OVERLAYS {
        let Some(objects) = render(overlay) else { return };
        let Some(settings_objects) = render(settings_from) else { return };
        let settings = settings_map(&settings_objects);
        for secret in SECRETS {
            assert!(!settings.contains_key(secret), "{overlay}: the ConfigMap holds the secret {secret}");
        }
        for object in &objects {
            let Some(pod) = pod_spec(object) else { continue };
            let workload = format!("{overlay}: {} {}", kind(object), name(object));
            for container in list(&pod["containers"]) {
                let env = environment(container, &settings);
                let command = command_of(container);
                let binary = command.first().map(|c| c.rsplit('/').next().unwrap_or(c)).unwrap_or_default();
                if binary == "sh" {
                    continue;
                }
                for (variable, source) in &env {
                    assert!(
                        read.contains(variable) || read_by_a_library(variable),
                        "{workload} sets {variable}, which nothing in the image reads"
                    );
                    if SECRETS.contains(&variable.as_str()) {
                        assert!(matches!(source, Source::Secret { .. }), "{workload}: {variable} is not from a Secret");
                    }
                }
                let value = |v: &str| match env.get(v) {
                    Some(Source::Value(value)) => Some(value.clone()),
                    _ => None,
                };
                for (variable, secret) in SECRET_FILES {
                    let Some(path) = value(variable) else { continue };
                    let mount = list(&container["volumeMounts"])
                        .iter()
                        .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().expect("mountPath"))))
                        .unwrap_or_else(|| panic!("{workload}: {variable} {path} is on no volume"));
                    let volume = list(&pod["volumes"]).iter().find(|v| v["name"] == mount["name"]).expect("the volume");
                    assert_eq!(
                        volume["secret"]["secretName"].as_str(),
                        Some(secret),
                        "{workload}: {variable}'s volume"
                    );
                }
                let bucket = value("BUCKET_URL").unwrap_or_else(|| panic!("{workload}: no BUCKET_URL"));
                assert!(bucket.starts_with('/') || bucket.starts_with("s3://"), "{workload}: BUCKET_URL {bucket}");
                assert!(value("MODEL_VER").is_some(), "{workload}: no MODEL_VER");
                match kind(object) {
                    "Deployment" => {
                        let prefix = match binary {
                            "serve-service" => "SERVE",
                            "train-service" => "TRAIN",
                            other => panic!("{workload} runs {other}"),
                        };
                        assert_eq!(command.len(), 1, "{workload} serves: no subcommand");
                        let ports: BTreeMap<String, i64> = list(&container["ports"])
                            .iter()
                            .map(|p| {
                                (
                                    p["name"].as_str().expect("port name").to_owned(),
                                    p["containerPort"].as_i64().expect("port"),
                                )
                            })
                            .collect();
                        for (setting, port_name) in
                            [("ADDR", "grpc"), ("HTTP_ADDR", "http"), ("METRICS_ADDR", "metrics")]
                        {
                            let variable = format!("{prefix}_{setting}");
                            let addr = value(&variable).unwrap_or_else(|| panic!("{workload}: no {variable}"));
                            let port = addr
                                .strip_prefix("0.0.0.0:")
                                .unwrap_or_else(|| panic!("{workload}: {variable}={addr} is not on 0.0.0.0"));
                            assert_eq!(
                                Some(&port.parse().expect("a port")),
                                ports.get(port_name),
                                "{workload}: {variable} and port {port_name}"
                            );
                        }
                        assert!(value("AUTH_TOKEN_FILE").is_some(), "{workload}: no AUTH_TOKEN_FILE");
                        if overlay == "s3" {
                            assert!(value("TLS_CERT").is_some() && value("TLS_KEY").is_some(), "{workload}: no TLS");
                        }
                        assert!(!env.contains_key("AUTH_TOKEN"), "{workload}: the token as a variable");
                    }
                    "Job" | "CronJob" => {
                        // One-shot commands listen nowhere and need no token.
                        for variable in env.keys() {
                            assert!(
                                !variable.ends_with("_ADDR") && !variable.starts_with("AUTH_TOKEN"),
                                "{workload} sets {variable}"
                            );
                        }
                        let args: Vec<&str> =
                            std::iter::once(binary).chain(command[1..].iter().map(String::as_str)).collect();
                        let parsed = match binary {
                            "serve-service" => {
                                serve_service::Config::try_parse_from(&args).map(|c| format!("{:?}", c.command))
                            }
                            "train-service" => {
                                train_service::Config::try_parse_from(&args).map(|c| format!("{:?}", c.command))
                            }
                            other => panic!("{workload} runs {other}"),
                        };
                        let parsed = parsed.unwrap_or_else(|e| panic!("{workload}: {args:?}: {e}"));
                        assert!(parsed.starts_with("Some("), "{workload}: {args:?} is no one-shot command");
                    }
                    other => panic!("{workload}: {other}"),
                }
                seen_workloads.insert(format!("{} {}", kind(object), name(object)));
            }
        }
    }
    let expected =
        ["CronJob crs-cycle", "Deployment crs-serve", "Deployment crs-train", "Job crs-batch", "Job crs-train-once"];
    for workload in expected {
        assert!(seen_workloads.contains(workload), "{workload} not found: {seen_workloads:?}");
    }
}

#[test]
fn the_jobs_and_services_are_shaped_for_scale_out() {
    for overlay in ["dev", "s3"] {
        let Some(objects) = render(overlay) else { return };
        let Some(jobs) = render(&format!("{overlay}/jobs")) else { return };
        let find = |objects: &'_ [Value], kind_name: &str, object_name: &str| -> Value {
            objects
                .iter()
                .find(|o| kind(o) == kind_name && name(o) == object_name)
                .unwrap_or_else(|| panic!("{overlay}: no {kind_name} {object_name}"))
                .clone()
        };
        let batch = find(&jobs, "Job", "crs-batch");
        assert_eq!(batch["spec"]["completionMode"].as_str(), Some("Indexed"));
        let args = command_of(&list(&batch["spec"]["template"]["spec"]["containers"])[0]);
        let shards = args.iter().position(|a| a == "--shards").map(|i| args[i + 1].parse::<i64>().expect("a number"));
        assert_eq!(
            shards,
            batch["spec"]["completions"].as_i64(),
            "{overlay}: --shards and completions differ: {args:?}"
        );
        assert!(args.iter().any(|a| a.ends_with('/')), "{overlay}: the batch's input is no prefix: {args:?}");
        let train = find(&jobs, "Job", "crs-train-once");
        let rules = list(&train["spec"]["podFailurePolicy"]["rules"]);
        assert!(
            rules.iter().any(|r| r["action"] == "FailJob"
                && list(&r["onExitCodes"]["values"])
                    .iter()
                    .any(|v| v.as_u64() == Some(u64::from(train_service::once::EXIT_REJECTED)))),
            "{overlay}: a rejected run is retried"
        );
        let cycle = find(&objects, "CronJob", "crs-cycle");
        assert_eq!(cycle["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
        let grpc = find(&objects, "Service", "crs-serve-grpc");
        assert_eq!(grpc["spec"]["clusterIP"].as_str(), Some("None"), "{overlay}: the gRPC Service is not headless");
        let hpa = find(&objects, "HorizontalPodAutoscaler", "crs-serve");
        assert_eq!(hpa["apiVersion"].as_str(), Some("autoscaling/v2"));
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"].as_str(), Some("cpu"));
        find(&objects, "PodDisruptionBudget", "crs-serve");
        let serve = find(&objects, "Deployment", "crs-serve");
        let container = &list(&serve["spec"]["template"]["spec"]["containers"])[0];
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/v2/health/live"),
            "liveness holds with no model"
        );
        assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/v2/health/ready"));
        assert!(container["startupProbe"].is_mapping(), "{overlay}: no startup probe");
        let env = environment(container, &settings_map(&objects));
        assert_eq!(
            env.get("MODEL_RUN"),
            Some(&Source::Value("production".into())),
            "{overlay}: serve follows production"
        );
        assert!(!list(&serve["spec"]["template"]["spec"]["topologySpreadConstraints"]).is_empty());
    }
}

#[test]
fn every_pod_runs_unprivileged_on_a_read_only_root() {
    let mut pods = 0;
    for (overlay, _) in OVERLAYS {
        let Some(objects) = render(overlay) else { return };
        for object in &objects {
            let Some(pod) = pod_spec(object) else { continue };
            let workload = format!("{overlay}: {} {}", kind(object), name(object));
            let context = &pod["securityContext"];
            assert_eq!(context["runAsNonRoot"].as_bool(), Some(true), "{workload}");
            assert_eq!(context["runAsUser"].as_i64(), Some(10001), "{workload}: the image's user");
            assert_eq!(context["runAsGroup"].as_i64(), Some(10001), "{workload}");
            assert_eq!(context["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"), "{workload}");
            assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false), "{workload}: API token mounted");
            assert_eq!(pod["serviceAccountName"].as_str(), Some("crs"), "{workload}");
            assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null(), "{workload}");
            for container in containers(pod) {
                let who = format!("{workload} container {}", container["name"].as_str().unwrap_or_default());
                let context = &container["securityContext"];
                assert_eq!(context["allowPrivilegeEscalation"].as_bool(), Some(false), "{who}");
                assert_eq!(context["readOnlyRootFilesystem"].as_bool(), Some(true), "{who}");
                assert_eq!(list(&context["capabilities"]["drop"]), [Value::from("ALL")], "{who}");
                assert!(context["capabilities"]["add"].is_null() && context["privileged"].is_null(), "{who}");
                let resources = &container["resources"];
                for (what, resource) in [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")] {
                    assert!(!resources[what][resource].is_null(), "{who}: no {what}.{resource}");
                }
                let binary = command_of(container).first().cloned().unwrap_or_default();
                if binary.ends_with("-service") {
                    // A read-only root needs somewhere to write temporary files.
                    let tmp = list(&container["volumeMounts"]).iter().find(|m| m["mountPath"] == "/tmp");
                    let tmp = tmp.unwrap_or_else(|| panic!("{who}: no /tmp"));
                    let volume = list(&pod["volumes"]).iter().find(|v| v["name"] == tmp["name"]).expect("volume");
                    assert!(volume["emptyDir"].is_mapping(), "{who}: /tmp is not an emptyDir");
                }
            }
            pods += 1;
        }
    }
    assert!(pods >= 11, "only {pods} pod templates checked");
}
