//! The corpus of broken input files (`crs_testkit::BAD_FILES`), each through
//! training and through a batch on real servers: a refused file fails with a
//! message naming the file (and the row and column where there is one), and
//! leaves no run and no output behind; an accepted one gives the same result as
//! the valid file it was made from.

use crs_platform::storage::layout::{EVAL_KEY, PREDICTION_INPUT_KEY, TRAIN_KEY};
use crs_proto::serve::PredictBatchRequest;
use crs_proto::serve::serve_service_client::ServeServiceClient;
use crs_proto::train::train_service_client::TrainServiceClient;
use crs_proto::train::{Evaluation, JobState, StartTrainingRequest};
use crs_testkit::{BAD_FILES, Expect, Stack, ValidFile, gunzip, train_to_end, wait_until_serving};
use tonic::Code;
use tonic::transport::Channel;

/// Data rows of the valid files the cases are made from: small, since the
/// dev-profile CSV reader is slow.
const ROWS: usize = 60;
/// The corpus trains v0, the baseline: the data contract is the same for every
/// version, v0 fits in no time, and serve-service keeps serving v1's run.
const CORPUS_MODEL: &str = "v0";
/// A message this long is not a precise one (and would not fit a gRPC header).
const MAX_MESSAGE_CHARS: usize = 1000;

struct Services {
    stack: Stack,
    train: TrainServiceClient<Channel>,
    serve: ServeServiceClient<Channel>,
}

impl Services {
    /// Trains `key` with v0 against the generated evaluation file: the job's
    /// final state, and whether it added a run folder.
    async fn train(&mut self, key: &str) -> (crs_proto::train::TrainingJob, bool) {
        let before = self.stack.run_dirs(CORPUS_MODEL);
        let request = StartTrainingRequest {
            model_ver: CORPUS_MODEL.into(),
            train_key: key.into(),
            eval_key: Some(EVAL_KEY.into()),
            ..Default::default()
        };
        let job = train_to_end(&mut self.train, request).await;
        (job, self.stack.run_dirs(CORPUS_MODEL) != before)
    }

    async fn batch(&mut self, input: &str, output: &str) -> Result<String, tonic::Status> {
        let request =
            PredictBatchRequest { input_key: input.into(), output_key: Some(output.into()), ..Default::default() };
        self.serve.predict_batch(request).await?;
        Ok(gunzip(&self.stack.get(output).await.expect("a successful batch wrote its output")))
    }

    /// Every object and staging file in the output folder whose name starts with `name`.
    fn outputs_named(&self, name: &str) -> Vec<String> {
        let dir = self.stack.bucket_dir().join("data/predict/output/corpus");
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .filter(|file| file.contains(name))
            .collect()
    }
}

/// The message's mistakes against `expect` for a file at `key`, if any.
fn message_problems(key: &str, message: &str, parts: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if message.len() > MAX_MESSAGE_CHARS {
        problems.push(format!("message of {} chars", message.len()));
    }
    let shown: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    for part in std::iter::once(key).chain(parts.iter().copied()) {
        if !message.contains(part) {
            problems.push(format!("{shown:?} does not contain {part:?}"));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_file_is_refused_precisely_or_accepted_by_training_and_batch() {
    let stack = Stack::new().await;
    let mut trainer = stack.start_train(stack.train_config()).await;
    let request =
        StartTrainingRequest { model_ver: "v1".into(), eval_key: Some(EVAL_KEY.into()), ..Default::default() };
    let job = train_to_end(&mut trainer.client, request).await;
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.error);
    let server = stack.start_serve(stack.serve_config()).await;
    wait_until_serving(&server).await;
    let mut services = Services { train: trainer.client.clone(), serve: server.client.clone(), stack };

    let training_file = ValidFile::first_rows(&gunzip(&services.stack.get(TRAIN_KEY).await.expect("train")), ROWS);
    let input_file =
        ValidFile::first_rows(&gunzip(&services.stack.get(PREDICTION_INPUT_KEY).await.expect("input")), ROWS);

    // What the valid files give: what an accepted case must give too.
    services.stack.put("data/train/corpus/valid.csv", training_file.csv("\n")).await;
    let (job, _) = services.train("data/train/corpus/valid.csv").await;
    assert_eq!(job.state(), JobState::Succeeded, "the valid training file: {}", job.error);
    let expected_evaluation: Option<Evaluation> = job.evaluation;
    services.stack.put("data/predict/input/corpus/valid.csv", input_file.csv("\n")).await;
    let expected_output = services
        .batch("data/predict/input/corpus/valid.csv", "data/predict/output/corpus/valid.csv.gz")
        .await
        .expect("the valid input");
    assert!(expected_output.lines().count() > 1, "{expected_output}");

    let mut failures = Vec::new();
    for case in BAD_FILES {
        let mut problems = Vec::new();

        let key = format!("data/train/corpus/{}.csv", case.name);
        services.stack.put(&key, (case.build)(&training_file)).await;
        let started = std::time::Instant::now();
        let (job, wrote_run) = services.train(&key).await;
        match case.training {
            Expect::Refused(parts) => {
                if job.state() != JobState::Failed {
                    problems.push(format!("training: {:?}, expected FAILED", job.state()));
                }
                problems
                    .extend(message_problems(&key, &job.error, parts).into_iter().map(|p| format!("training: {p}")));
                if wrote_run {
                    problems.push("training: a failed job left a run folder under model/".into());
                }
            }
            Expect::Accepted => {
                if job.state() != JobState::Succeeded {
                    problems.push(format!("training: {:?}: {}", job.state(), job.error));
                } else if job.evaluation != expected_evaluation {
                    problems.push(format!(
                        "training: evaluation {:?}, the valid file gave {expected_evaluation:?}",
                        job.evaluation
                    ));
                }
            }
        }

        let input = format!("data/predict/input/corpus/{}.csv", case.name);
        let output = format!("data/predict/output/corpus/{}.csv.gz", case.name);
        services.stack.put(&input, (case.build)(&input_file)).await;
        match (case.batch, services.batch(&input, &output).await) {
            (Expect::Refused(parts), Err(status)) => {
                if status.code() != Code::InvalidArgument {
                    problems.push(format!("batch: {:?}, expected InvalidArgument", status.code()));
                }
                problems.extend(
                    message_problems(&input, status.message(), parts).into_iter().map(|p| format!("batch: {p}")),
                );
                let left = services.outputs_named(case.name);
                if !left.is_empty() {
                    problems.push(format!("batch: a refused batch left {left:?}"));
                }
            }
            (Expect::Refused(_), Ok(_)) => problems.push("batch: accepted, expected a refusal".into()),
            (Expect::Accepted, Err(status)) => problems.push(format!("batch: refused: {status:?}")),
            (Expect::Accepted, Ok(text)) => {
                if text != expected_output {
                    problems.push(format!("batch: output {text:?}, the valid input gave {expected_output:?}"));
                }
            }
        }
        eprintln!("{}: {:.1} s", case.name, started.elapsed().as_secs_f64());
        failures.extend(problems.into_iter().map(|p| format!("{}: {p}", case.name)));
    }
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
    server.stop().await.expect("clean stop");
    trainer.stop().await.expect("clean stop");
}
