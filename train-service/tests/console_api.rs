//! The console's JSON API and pages against a real HTTP server on the test
//! stack's bucket: real runs (one trained by a cycle, one by a job), a cycle,
//! a rejected file in the ledger, a promotion and a rollback; every endpoint,
//! every error with its status, the token rules and the headers on every answer.

mod common;

use std::time::Duration;

use crs_domain::data::synth::{SynthSpec, write_week};
use crs_domain::models::ModelVer;
use crs_platform::notify::webhook::Notifier;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::runs::ModelStore;
use crs_platform::service::security::{AuthLayer, Secret};
use crs_platform::storage::bucket::{Bucket, BucketKey};
use crs_server::http::{HttpLimits, HttpServer};
use crs_testkit::Stack;
use reqwest::StatusCode;
use serde_json::{Value, json};
use train_service::console::{self, Console, ConsoleRule};
use train_service::cycles::Cycles;
use train_service::jobs::Jobs;
use train_service::metrics::TrainMetrics;

const TOKEN: &str = "console-test-token";
const SPEC: SynthSpec = SynthSpec { first_entity: 1, keywords: 300, attributes: 10, seed: 5 };

fn week(week: i64) -> Vec<u8> {
    let mut csv = Vec::new();
    write_week(&SPEC, week, false, &mut csv).expect("in-memory write");
    csv
}

/// A train-service's catalog, jobs and cycles on `bucket`, built as `run` builds them.
fn console_on(bucket: &Bucket) -> Console {
    let catalog = Catalog::new(ModelStore::new(bucket.clone()));
    let metrics = std::sync::Arc::new(TrainMetrics::new(&mut prometheus_client::registry::Registry::default()));
    let jobs = Jobs::new(catalog.clone(), Notifier::disabled(), 2, metrics.clone());
    let incoming = BucketKey::parse(crs_platform::storage::layout::INCOMING_PREFIX).expect("key");
    let cycles =
        Cycles::new(catalog.clone(), jobs.clone(), Notifier::disabled(), incoming, Duration::from_secs(60), metrics);
    Console::new(catalog, jobs, cycles, ModelVer::parse("v1").expect("v1"))
}

/// The console served as the kit serves it: behind the token on 127.0.0.1:0.
async fn serve(console: Console, token: Option<&str>) -> (HttpServer, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = console::router(console).layer(AuthLayer::new(token.map(Secret::new), ConsoleRule));
    let server = HttpServer::start(listener, app, None, HttpLimits::default()).expect("start");
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET");
        assert_secured(&response, path);
        let status = response.status();
        (status, response.json().await.unwrap_or_else(|e| panic!("{path}: not JSON: {e}")))
    }

    async fn page(&self, path: &str) -> (StatusCode, String) {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET");
        assert_secured(&response, path);
        let status = response.status();
        let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
        assert!(content_type.starts_with("text/html"), "{path}: {content_type}");
        (status, response.text().await.expect("text"))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST");
        assert_secured(&response, path);
        let status = response.status();
        (status, response.json().await.unwrap_or_else(|e| panic!("{path}: not JSON: {e}")))
    }
}

fn assert_secured(response: &reqwest::Response, path: &str) {
    let headers = response.headers();
    assert_eq!(
        headers.get("content-security-policy").map(|v| v.to_str().unwrap()),
        Some(console::CONTENT_SECURITY_POLICY),
        "{path}"
    );
    assert_eq!(
        headers.get("content-security-policy").unwrap(),
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'"
    );
    assert_eq!(headers.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{path}");
}

fn assert_error(answer: &(StatusCode, Value), status: StatusCode, kind: &str, says: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["kind"], kind, "{}", answer.1);
    let message = answer.1["error"].as_str().expect("an error message");
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

async fn wait_for_cycle(client: &Client, path: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (status, cycle) = client.get(path).await;
        assert_eq!(status, StatusCode::OK, "{cycle}");
        if cycle["state"] != "running" {
            return cycle;
        }
        assert!(tokio::time::Instant::now() < deadline, "cycle did not end: {cycle}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run_ids(body: &Value) -> Vec<String> {
    body["runs"].as_array().expect("runs").iter().map(|r| r["run_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_with_real_runs_a_cycle_a_rejection_a_promotion_and_a_rollback() {
    let mut stack = Stack::new().await;
    stack.put("config/v1/lifecycle.yaml", "train_weeks: 2\nholdout_weeks: 1\n").await;
    for w in 1..=3 {
        stack.put(&format!("data/incoming/week{w}.csv"), week(w)).await;
    }
    // Row 2's last field (Conversions) broken: the ledger keeps row, column and problem as fields.
    let text = String::from_utf8(week(4)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let broken = lines[2].rsplit_once(',').map(|(head, _)| format!("{head},lots")).unwrap();
    lines[2] = broken;
    stack.put("data/incoming/broken.csv", lines.join("\n") + "\n").await;

    let (_server, base) = serve(console_on(&stack.bucket), Some(TOKEN)).await;
    let client = Client { http: reqwest::Client::new(), base };

    // An empty bucket reads as empty, not as an error.
    let (status, models) = client.get("/api/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["models"], json!([]));

    // Starting a cycle needs the token.
    let refused = client.post("/api/v1/models/v1/cycles", None, "").await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthenticated", "bearer token");
    let refused = client.post("/api/v1/models/v1/cycles", Some("wrong"), "").await;
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
    let (status, started) = client.post("/api/v1/models/v1/cycles", Some(TOKEN), r#"{"by": "carol"}"#).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["by"], "carol");
    let cycle_id = started["cycle_id"].as_str().unwrap().to_owned();
    let cycle = wait_for_cycle(&client, &format!("/api/v1/models/v1/cycles/{cycle_id}")).await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    let first = cycle["run_id"].as_str().expect("the first cycle trains a run").to_owned();
    assert_eq!(cycle["production_run_id"], first, "the first run becomes production: {cycle}");

    // A second run, trained by a job of another train-service on the same
    // bucket, held for a person by the gate.
    stack.put("config/v1/lifecycle.yaml", "promotion: manual\ntrain_weeks: 2\nholdout_weeks: 1\n").await;
    let second = stack.train("v1").await;

    let (status, models) = client.get("/api/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    let v1 = &models["models"][0];
    assert_eq!(v1["model_ver"], "v1");
    assert_eq!(v1["runs"], 2);
    assert_eq!(v1["production"]["run"]["run_id"], first);
    assert_eq!(v1["production"]["by"], format!("cycle {cycle_id}"));
    assert_eq!(v1["latest"]["run_id"], second);
    assert_eq!(v1["last_cycle"]["cycle_id"], cycle_id);
    assert!(v1["production"]["run"]["eval"]["logloss"].as_f64().unwrap() > 0.0, "{v1}");

    // Runs: filtered, sorted, paged; bad parameters are 400 with what was wrong.
    let (_, runs) = client.get("/api/v1/models/v1/runs").await;
    assert_eq!(runs["total"], 2);
    assert_eq!(run_ids(&runs), [second.clone(), first.clone()], "newest first");
    let (_, production) = client.get("/api/v1/models/v1/runs?stage=production").await;
    assert_eq!(run_ids(&production), [first.as_str()]);
    let (_, by_loss) = client.get("/api/v1/models/v1/runs?sort=logloss&order=asc").await;
    let losses: Vec<f64> =
        by_loss["runs"].as_array().unwrap().iter().map(|r| r["eval"]["logloss"].as_f64().unwrap()).collect();
    assert!(losses[0] <= losses[1], "{losses:?}");
    let (_, paged) = client.get("/api/v1/models/v1/runs?limit=1&offset=1").await;
    assert_eq!((paged["total"].as_u64(), run_ids(&paged)), (Some(2), vec![first.clone()]));
    let (_, labelled) = client.get("/api/v1/models/v1/runs?label=nosuchlabel").await;
    assert_eq!(labelled["total"], 0);
    assert_error(
        &client.get("/api/v1/models/v1/runs?stage=shipped").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "shipped",
    );
    assert_error(
        &client.get("/api/v1/models/v1/runs?sort=colour").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "sort",
    );
    assert_error(
        &client.get("/api/v1/models/v1/runs?order=up").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "order",
    );
    assert_error(
        &client.get("/api/v1/models/v1/runs?limit=0").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "limit",
    );
    assert_error(
        &client.get("/api/v1/models/v1/runs?offset=-1").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "offset",
    );
    assert_error(&client.get("/api/v1/models/v7/runs").await, StatusCode::BAD_REQUEST, "invalid_input", "v7");

    // One run: lineage, report, job.
    let (status, run) = client.get(&format!("/api/v1/models/v1/runs/{second}")).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["summary"]["stage"], "candidate", "{}", run["summary"]);
    assert_eq!(run["metadata"]["train_data"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(run["report_key"], format!("reports/v1/runs/{second}.html"));
    assert_eq!(run["job"]["run_id"], second);
    let unknown = client.get("/api/v1/models/v1/runs/20200101T000000Z-000000").await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found", "no run");
    assert_error(&client.get("/api/v1/models/v1/runs/..%2Fetc").await, StatusCode::BAD_REQUEST, "invalid_input", "");

    // The chart: no reference_key, so each run's own score and a warning.
    let (_, chart) = client.get("/api/v1/models/v1/chart").await;
    assert_eq!(chart["comparable"], false);
    assert!(chart["note"].as_str().unwrap().contains("do not compare"), "{chart}");
    assert_eq!(chart["points"].as_array().unwrap().len(), 2);

    // The production run's statistics and diagnostics; scoring a labelled file.
    let (status, diagnostics) = client.get("/api/v1/models/v1/production").await;
    assert_eq!(status, StatusCode::OK, "{diagnostics}");
    assert_eq!(diagnostics["production"]["run"]["run_id"], first);
    assert!(!diagnostics["profile"].as_array().unwrap().is_empty());
    assert!(!diagnostics["stage_seconds"].as_array().unwrap().is_empty());
    let score_body = json!({ "data_key": "data/incoming/week3.csv" }).to_string();
    let (status, scored) = client.post("/api/v1/models/v1/score", None, &score_body).await;
    assert_eq!(status, StatusCode::OK, "scoring needs no token: {scored}");
    assert_eq!(scored["run_id"], first);
    assert!(scored["evaluation"]["model"]["logloss"].as_f64().unwrap() > 0.0);
    let missing = client.post("/api/v1/models/v1/score", None, r#"{"data_key": "data/none.csv"}"#).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found", "data/none.csv");
    let unsafe_key = client.post("/api/v1/models/v1/score", None, r#"{"data_key": "../etc/passwd"}"#).await;
    assert_error(&unsafe_key, StatusCode::BAD_REQUEST, "invalid_input", "");
    let no_key = client.post("/api/v1/models/v1/score", None, "{}").await;
    assert_error(&no_key, StatusCode::BAD_REQUEST, "invalid_input", "data_key");

    // Promotion: token, body and state checked; who and why recorded.
    let path = "/api/v1/models/v1/promote";
    let body = json!({ "run_id": second, "by": "alice", "reason": "better on the new weeks" }).to_string();
    assert_eq!(client.post(path, None, &body).await.0, StatusCode::UNAUTHORIZED);
    assert_error(&client.post(path, Some(TOKEN), "{not json").await, StatusCode::BAD_REQUEST, "invalid_input", "body");
    let extra = json!({ "run_id": second, "colour": "red" }).to_string();
    assert_error(&client.post(path, Some(TOKEN), &extra).await, StatusCode::BAD_REQUEST, "invalid_input", "colour");
    let nobody = json!({ "run_id": "20200101T000000Z-000000" }).to_string();
    assert_error(&client.post(path, Some(TOKEN), &nobody).await, StatusCode::NOT_FOUND, "not_found", "no run");
    let (status, event) = client.post(path, Some(TOKEN), &body).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!((event["by"].as_str(), event["change"]["kind"].as_str()), (Some("alice"), Some("promote")));
    let again = client.post(path, Some(TOKEN), &body).await;
    assert_error(&again, StatusCode::CONFLICT, "precondition", "already production");

    // A second replica on the same bucket shows the new production at once (no cache).
    let (_other, other_base) = serve(console_on(&stack.bucket), Some(TOKEN)).await;
    let other = Client { http: reqwest::Client::new(), base: other_base };
    let (_, models) = other.get("/api/v1/models").await;
    assert_eq!(models["models"][0]["production"]["run"]["run_id"], second);
    assert_eq!(models["models"][0]["production"]["by"], "alice");

    // Rollback, on the other replica: production goes back to the first run in the bucket.
    assert_eq!(other.post("/api/v1/models/v1/rollback", None, "").await.0, StatusCode::UNAUTHORIZED);
    let (status, event) =
        other.post("/api/v1/models/v1/rollback", Some(TOKEN), r#"{"by": "bob", "reason": "alerts"}"#).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["change"], json!({ "kind": "rollback", "run_id": first, "demoted": second }));
    let catalog = Catalog::new(ModelStore::new(Bucket::open(&stack.bucket_url).expect("bucket")));
    let v1 = ModelVer::parse("v1").unwrap();
    assert_eq!(catalog.production(v1).await.unwrap().map(|r| r.to_string()), Some(first.clone()));
    let no_target = client.post("/api/v1/models/v1/rollback", Some(TOKEN), "").await;
    assert_error(&no_target, StatusCode::CONFLICT, "precondition", "no earlier production run");

    let (_, history) = client.get("/api/v1/models/v1/history").await;
    let events = history["events"].as_array().unwrap();
    let who: Vec<(&str, &str)> =
        events.iter().map(|e| (e["by"].as_str().unwrap(), e["change"]["kind"].as_str().unwrap())).collect();
    assert_eq!(who[..2], [("bob", "rollback"), ("alice", "promote")], "{history}");
    assert_eq!(history["production"], first);

    // Cycles, paged; one cycle; errors.
    let (_, cycles) = client.get("/api/v1/models/v1/cycles").await;
    assert_eq!(
        (cycles["total"].as_u64(), cycles["cycles"][0]["cycle_id"].as_str()),
        (Some(1), Some(cycle_id.as_str()))
    );
    assert_eq!(cycles["cycles"][0]["by"], "carol");
    let none = client.get("/api/v1/models/v1/cycles/20200101T000000Z-000000").await;
    assert_error(&none, StatusCode::NOT_FOUND, "not_found", "");

    // The ledger: three weeks ingested, the broken file rejected with its row and column as fields.
    let (_, ledger) = client.get("/api/v1/ledger").await;
    assert_eq!(ledger["total"], 4);
    let rejected: Vec<&Value> =
        ledger["entries"].as_array().unwrap().iter().filter(|e| e["outcome"] == "rejected").collect();
    assert_eq!(rejected.len(), 1, "{ledger}");
    assert_eq!(rejected[0]["key"], "data/incoming/broken.csv");
    assert_eq!(rejected[0]["rejection"]["row"], 2, "{}", rejected[0]);
    assert_eq!(rejected[0]["rejection"]["column"], "Conversions");
    assert!(rejected[0]["rejection"]["problem"].as_str().unwrap().contains("lots"), "{}", rejected[0]);

    // Jobs: the cycle's and the other service's, ended; one job; cancelling.
    let (_, jobs) = client.get("/api/v1/jobs").await;
    assert_eq!(jobs["ended_total"], 2, "{jobs}");
    let job_id = run["job"]["id"].as_str().unwrap().to_owned();
    let (status, job) = client.get(&format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!((status, job["state"].as_str()), (StatusCode::OK, Some("succeeded")));
    assert_error(&client.get("/api/v1/jobs/job-nope").await, StatusCode::NOT_FOUND, "not_found", "job-nope");
    let cancel = format!("/api/v1/jobs/{job_id}/cancel");
    assert_eq!(client.post(&cancel, None, "").await.0, StatusCode::UNAUTHORIZED);
    assert_error(&client.post(&cancel, Some(TOKEN), "").await, StatusCode::CONFLICT, "precondition", "already ended");
    let unknown = client.post("/api/v1/jobs/job-nope/cancel", Some(TOKEN), "").await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found", "job-nope");

    // Anything else is a JSON 404 with the headers.
    assert_error(&client.get("/api/v1/nothing").await, StatusCode::NOT_FOUND, "not_found", "");

    // The pages show the same runs, stages and numbers.
    let (status, html) = client.page("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&first) && html.contains(&second), "{html}");
    let (status, html) = client.page("/models/v1").await;
    assert_eq!(status, StatusCode::OK);
    for text in [
        &first,
        &second,
        "production",
        "candidate",
        "bob",
        "alice",
        "alerts",
        &cycle_id,
        "do not compare",
        "<svg",
        "id=\"trends\"",
    ] {
        assert!(html.contains(text), "the version page lacks {text}");
    }
    assert!(!html.contains("<script>"), "no inline script");
    let (_, html) = client.page("/models/v1?stage=production").await;
    assert!(html.contains(&first) && !html.contains(&format!("data-run=\"{second}\"")), "filtered by stage");
    let (status, html) = client.page(&format!("/models/v1/runs/{first}")).await;
    assert_eq!(status, StatusCode::OK);
    for text in [first.as_str(), "production", "Lineage", "Feature importance", "seconds per stage", "job-log"] {
        assert!(html.contains(text), "the run page lacks {text}");
    }
    let (status, report) = client.page(&format!("/models/v1/runs/{first}/report")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(report.contains(&first));
    let (status, html) = client.page(&format!("/models/v1/cycles/{cycle_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("succeeded") && html.contains(&first));
    let (_, html) = client.page("/jobs").await;
    assert!(html.contains(&job_id));
    let (_, html) = client.page("/ledger").await;
    assert!(html.contains("broken.csv") && html.contains("Conversions"));
    let (status, html) = client.page("/models/v7").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("v7"));
    let (status, _) = client.page("/models/v1/runs/20200101T000000Z-000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let script = client.http.get(format!("{}/static/console.js", client.base)).send().await.unwrap();
    assert_secured(&script, "/static/console.js");
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));

    // gRPC's Promote records its caller's `by` (crctl sends the login name) in the same history.
    let grpc = stack.start_train(stack.train_config()).await;
    let request = crs_proto::train::PromoteRequest {
        model_ver: "v1".into(),
        run_id: second.clone(),
        reason: "from crctl".into(),
        by: "erin".into(),
    };
    grpc.client.clone().promote(request).await.expect("promote over gRPC");
    let (_, history) = client.get("/api/v1/models/v1/history").await;
    assert_eq!(
        (history["events"][0]["by"].as_str(), history["events"][0]["reason"].as_str()),
        (Some("erin"), Some("from crctl"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_cancelled_with_the_token_and_actions_are_open_without_one() {
    let stack = Stack::new().await;
    stack.put(common::SLOW_CONFIG_KEY, "trees: 60\nmax_depth: 6\nmin_leaf_clicks: 20\n").await;
    let console = console_on(&stack.bucket);
    let (_server, base) = serve(console.clone(), None).await;
    let client = Client { http: reqwest::Client::new(), base };

    let request = crs_proto::train::StartTrainingRequest {
        model_ver: "v1".into(),
        config_key: Some(common::SLOW_CONFIG_KEY.into()),
        ..Default::default()
    };
    let job = console
        .jobs()
        .start(train_service::convert::job_request(request, ModelVer::parse("v1").unwrap()).unwrap())
        .await;
    let job = job.expect("job started");
    let (_, jobs) = client.get("/api/v1/jobs").await;
    let live: Vec<&str> = jobs["queued"]
        .as_array()
        .unwrap()
        .iter()
        .chain(jobs["running"].as_array().unwrap())
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(live, [job.id.as_str()], "{jobs}");

    // No token configured: actions go through without one.
    let (status, cancelled) = client
        .post(&format!("/api/v1/jobs/{}/cancel", job.id), None, r#"{"by": "dave", "reason": "wrong data"}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["cancelled"], json!({ "by": "dave", "reason": "wrong data" }));
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let stack = Stack::new().await;
    let (_server, base) = serve(console_on(&stack.bucket), None).await;
    let served = reqwest::get(format!("{base}/api/v1/openapi.json")).await.unwrap().text().await.unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/console-openapi.json")).unwrap();
    assert_eq!(served, committed, "docs/console-openapi.json differs from what the server serves");
    let document: Value = serde_json::from_str(&served).expect("JSON");
    assert_eq!(document["openapi"], "3.0.3");
    assert!(document["paths"].as_object().unwrap().keys().all(|p| p.starts_with("/api/v1/")));
}

/// train-service itself serves the console on TRAIN_HTTP_ADDR through the
/// server kit: the token on actions, the security headers, the HTTP metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_the_console_on_its_http_listener() {
    let stack = Stack::new().await;
    let mut config = stack.train_config();
    config.common.security.token.auth_token = Some(Secret::new(TOKEN));
    let (_train, ports) = stack.start_train_with_http(config).await;
    let client = Client {
        http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client"),
        base: format!("http://{}", ports.http),
    };
    let (status, page) = client.page("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("v1"), "the models page names the default version: {page}");
    let (status, _) = client.get("/api/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    let (status, refused) = client.post("/api/v1/models/v1/rollback", None, r#"{"reason": "no token"}"#).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");

    let (code, _, text) = crs_testkit::scrape(ports.metrics).await;
    assert_eq!(code, 200);
    let answered: Vec<_> = text.lines().filter(|l| l.starts_with("crs_train_http_requests_total{")).collect();
    assert!(answered.iter().any(|l| l.contains("status=\"401\"")), "{answered:?}");
    assert!(answered.iter().any(|l| l.contains("status=\"200\"")), "{answered:?}");
}

#[tokio::test]
async fn a_version_declared_in_the_bucket_after_start_has_its_pages() {
    let stack = Stack::new().await;
    let (_server, base) = serve(console_on(&stack.bucket), None).await;
    let client = Client { http: reqwest::Client::new(), base };
    assert_error(
        &client.get("/api/v1/models/console-xgb/runs").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "no version is declared for imports",
    );

    // Declared by another replica (or by hand) while this one runs.
    stack.put("config/console-xgb/model.yaml", "framework: xgboost\n").await;
    let (status, runs) = client.get("/api/v1/models/console-xgb/runs").await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    assert_eq!(runs["total"], 0, "{runs}");
    let (status, page) = client.page("/models/console-xgb").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("console-xgb"), "{page}");
    assert_error(
        &client.get("/api/v1/models/console-lgb/runs").await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "declared for imports in the bucket: console-xgb",
    );
}
