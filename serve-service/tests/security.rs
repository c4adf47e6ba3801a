//! The bearer token and TLS on both services, against real servers: every RPC
//! either service serves is called without the token, with a wrong one and
//! with the right one, and is refused UNAUTHENTICATED exactly where the one
//! table (`crs_proto::RPC_ACCESS`) says; TLS servers answer
//! clients that trust their CA and no plaintext client; and neither the token
//! nor the webhook URL ever shows in logs, answers or the bucket.
//!
//! Every test captures the logs first: the first subscriber of a process stays.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crs_platform::service::security::Secret;
use crs_platform::storage::layout::EVAL_KEY;
use crs_proto::serve::LoadModelRequest;
use crs_proto::train::StartTrainingRequest;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::{Access, RPC_ACCESS};
use crs_testkit::{Behaviour, Setup, Stack, capture_logs, fixture_dir, gunzip, reflected_services, wait_for_end};
use prost::Message;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const TOKEN: &str = "tok-0f9e8d7c6b5a-right";
const WRONG: &str = "tok-guess-1a2b3c-wrong";

fn secured(token: &str) -> crs_platform::service::security::ServerSecurity {
    crs_platform::service::security::ServerSecurity {
        token: crs_platform::service::security::TokenSettings {
            auth_token: Some(Secret::new(token)),
            auth_token_file: None,
        },
        ..Default::default()
    }
}

/// `message` with `authorization: Bearer <token>`, if a token is given.
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    }
    request
}

/// Every method of `service`, as `/package.Service/Method`, from the descriptor sets.
fn methods_of(service: &str) -> Vec<String> {
    let sets = [
        crs_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = Vec::new();
    for set in sets {
        let set = prost_types::FileDescriptorSet::decode(set).expect("descriptor set");
        for file in set.file {
            for described in &file.service {
                if format!("{}.{}", file.package(), described.name()) == service {
                    methods.extend(described.method.iter().map(|m| format!("/{service}/{}", m.name())));
                }
            }
        }
    }
    assert!(!methods.is_empty(), "no descriptor of {service}");
    methods
}

/// Calls `path` with an empty message (the encoding of any request type's defaults) as a
/// stream of one, which any kind of method takes, and returns the code the
/// call was answered with: OK once the answer's headers say the call reached
/// the service.
async fn code_of(channel: Channel, path: &str, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let request = with_token(tokio_stream::iter([()]), token);
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let method = path.parse().expect("method path");
    match tokio::time::timeout(Duration::from_secs(30), grpc.streaming(request, method, codec)).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => panic!("{path} did not answer within 30 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_the_token_exactly_where_the_table_says() {
    let _logs = capture_logs();
    let stack = Stack::with(Setup { webhook: None, ..Default::default() }).await;
    let mut train_config = stack.train_config();
    train_config.common.security = secured(TOKEN);
    let mut serve_config = stack.serve_config();
    serve_config.common.security = secured(TOKEN);
    let train = stack.start_train(train_config).await;
    let serve = stack.start_serve(serve_config).await;

    let mut walked = BTreeSet::new();
    for channel in [train.channel(), serve.channel()] {
        let (services, _) = reflected_services(channel.clone()).await;
        for service in services {
            for path in methods_of(&service) {
                let listed = RPC_ACCESS.iter().find(|(rpc, _)| *rpc == path).map(|(_, access)| *access);
                assert!(listed.is_some(), "{path} is served but not in RPC_ACCESS: add it there");
                let needs_token = listed == Some(Access::Token);
                for (token, refused) in [(None, needs_token), (Some(WRONG), needs_token), (Some(TOKEN), false)] {
                    let code = code_of(channel.clone(), &path, token).await;
                    assert_eq!(code == Code::Unauthenticated, refused, "{path} with token {token:?}: {code:?}");
                }
                walked.insert(path.clone());
            }
        }
    }
    let table: BTreeSet<String> = RPC_ACCESS.iter().map(|(rpc, _)| (*rpc).to_owned()).collect();
    assert_eq!(walked, table, "RPC_ACCESS lists exactly the RPCs the services serve");
    serve.stop().await.expect("serve stops");
    train.stop().await.expect("train stops");
}

/// A channel to `addr` over TLS, trusting the test CA.
async fn tls_channel(addr: std::net::SocketAddr) -> Result<Channel, tonic::transport::Error> {
    let ca = Certificate::from_pem(std::fs::read(fixture_dir().join("tls/ca.pem")).expect("test CA"));
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(ClientTlsConfig::new().ca_certificate(ca))?
        .connect()
        .await
}

fn with_tls(
    mut security: crs_platform::service::security::ServerSecurity,
) -> crs_platform::service::security::ServerSecurity {
    security.tls_cert = Some(fixture_dir().join("tls/server.pem"));
    security.tls_key = Some(fixture_dir().join("tls/server.key"));
    security
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_servers_answer_clients_that_trust_the_ca_and_no_plaintext_client() {
    let _logs = capture_logs();
    let stack = Stack::with(Setup { webhook: None, ..Default::default() }).await;
    let mut train_config = stack.train_config();
    train_config.common.security = with_tls(secured(TOKEN));
    let mut serve_config = stack.serve_config();
    serve_config.common.security = with_tls(Default::default());
    let train = stack.start_train(train_config).await;
    let serve = stack.start_serve(serve_config).await;

    for server in [train.addr, serve.addr] {
        let channel = tls_channel(server).await.expect("a TLS connection with the test CA");
        let answer = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
        assert!(answer.is_ok(), "{server} over TLS: {answer:?}");
        // The running services' own plaintext clients (`http://`) get no answer.
        let plain = Channel::from_shared(format!("http://{server}")).expect("uri").connect_lazy();
        let mut plain = HealthClient::new(plain);
        let check = plain.check(HealthCheckRequest { service: String::new() });
        let answer = tokio::time::timeout(Duration::from_secs(10), check).await;
        assert!(!matches!(answer, Ok(Ok(_))), "{server} answered a plaintext client: {answer:?}");
    }
    // The token holds over TLS too.
    let mut client = TrainServiceClient::new(tls_channel(train.addr).await.expect("TLS"));
    let refused = client.ingest(with_token(crs_proto::train::IngestRequest {}, None)).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    client.ingest(with_token(crs_proto::train::IngestRequest {}, Some(TOKEN))).await.expect("ingest with the token");
    serve.stop().await.expect("serve stops");
    train.stop().await.expect("train stops");
}

/// Every file under `dir`, gzip files unpacked.
fn bucket_texts(dir: &Path, texts: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read bucket dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            bucket_texts(&path, texts);
            continue;
        }
        let bytes = std::fs::read(&path).expect("read bucket file");
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            gunzip(&bytes)
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        texts.push((path.display().to_string(), text));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_the_webhook_url_never_show_in_logs_answers_or_the_bucket() {
    let logs = capture_logs();
    // Every notice fails, so the services log their failures too.
    let stack = Stack::with(Setup { webhook: Some(Behaviour::Fail(500)), ..Default::default() }).await;
    let webhook_url = stack.webhooks().url();
    let secrets = [TOKEN, WRONG, webhook_url.as_str(), "test-secret-token"];
    let mut train_config = stack.train_config();
    train_config.common.security = secured(TOKEN);
    let mut serve_config = stack.serve_config();
    serve_config.common.security = secured(TOKEN);
    serve_config.model_ver = "v0".parse().expect("v0");
    let mut seen = vec![format!("{train_config:?}"), format!("{serve_config:?}")];
    let mut train = stack.start_train(train_config).await;
    let mut serve = stack.start_serve(serve_config).await;

    // Refused calls, a call that fails, a job that fails, a job that succeeds, a load.
    let start = |train_key: &str| StartTrainingRequest {
        model_ver: "v0".into(),
        train_key: train_key.into(),
        eval_key: Some(EVAL_KEY.into()),
        ..Default::default()
    };
    for token in [None, Some(WRONG)] {
        let refused = train.client.start_training(with_token(start(""), token)).await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated);
        seen.push(format!("{refused:?}"));
        let refused =
            serve.client.load_model(with_token(LoadModelRequest::default(), token)).await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated);
        seen.push(format!("{refused:?}"));
    }
    let missing = train.client.start_training(with_token(start("data/train/none.csv"), Some(TOKEN))).await;
    seen.push(format!("{:?}", missing.expect_err("no such file")));
    stack.put("data/train/broken.csv", "entity_id,device\nnot a number,Computer\n").await;
    let broken = train.client.start_training(with_token(start("data/train/broken.csv"), Some(TOKEN))).await;
    let broken = broken.expect("queued");
    seen.push(format!("{broken:?}"));
    let failed = wait_for_end(&mut train.client, &broken.into_inner().job_id).await;
    seen.push(format!("{failed:?}"));
    let trained = train.client.start_training(with_token(start(""), Some(TOKEN))).await.expect("queued");
    seen.push(format!("{trained:?}"));
    let trained = wait_for_end(&mut train.client, &trained.into_inner().job_id).await;
    assert!(!trained.run_id.is_empty(), "the job trained: {trained:?}");
    let load = LoadModelRequest { model_ver: "v0".into(), run: trained.run_id.clone() };
    let loaded = serve.client.load_model(with_token(load, Some(TOKEN))).await;
    seen.push(format!("{loaded:?}"));

    // Both services' notices have failed and been logged by the time they stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while logs.lines().iter().filter(|line| line["fields"]["message"] == "webhook notice not delivered").count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no failed webhook notices were logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.trigger_shutdown();
    train.trigger_shutdown();
    serve.stopped(Duration::from_secs(60)).await.expect("serve stops");
    train.stopped(Duration::from_secs(60)).await.expect("train stops");

    let logged: Vec<String> = logs.lines().iter().map(ToString::to_string).collect();
    assert!(logged.iter().any(|line| line.contains("call refused")), "the refusals were logged");
    let mut files = Vec::new();
    bucket_texts(&stack.bucket_dir(), &mut files);
    assert!(files.iter().any(|(name, _)| name.contains("jobs")), "the jobs were recorded");
    let everything = logged
        .iter()
        .map(|line| ("log line".to_owned(), line.clone()))
        .chain(files)
        .chain(seen.into_iter().map(|answer| ("answer".to_owned(), answer)));
    for (place, text) in everything {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret:?} in {place}: {text}");
        }
    }
}
