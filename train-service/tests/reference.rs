//! Runs scored on the version's reference set (`reference_key` in
//! lifecycle.yaml): once per run, kept beside it, equal to what `Score` says of
//! the same file, and again (beside the old score) when the file changes.

use crs_domain::models::ModelVer;
use crs_platform::registry::catalog::Catalog;
use crs_platform::registry::reference::ReferenceScore;
use crs_platform::registry::runs::ModelStore;
use crs_platform::storage::layout::{EVAL_KEY, RunId, TRAIN_KEY};
use crs_proto::train::{JobState, ScoreRequest, StartTrainingRequest};
use crs_testkit::{Stack, key_of, train_to_end};

const REFERENCE_KEY: &str = "data/reference/reference.csv.gz";

fn request(eval_key: &str) -> StartTrainingRequest {
    StartTrainingRequest { model_ver: "v1".into(), eval_key: Some(eval_key.into()), ..Default::default() }
}

/// The reference score files of `run`, by name.
fn score_files(stack: &Stack, run: &str) -> Vec<String> {
    let dir = stack.bucket_dir().join("model/v1").join(run).join("reference");
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn read_score(stack: &Stack, run: &str, name: &str) -> ReferenceScore {
    let path = stack.bucket_dir().join("model/v1").join(run).join("reference").join(name);
    serde_json::from_slice(&std::fs::read(path).expect("score file")).expect("a reference score")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_is_scored_once_on_the_reference_set_as_score_would() {
    let stack = Stack::new().await;
    let train = stack.start_train(stack.train_config()).await;
    let mut client = train.client.clone();

    // No reference_key: nothing is scored.
    let before = train_to_end(&mut client, request(EVAL_KEY)).await;
    assert_eq!(before.state(), JobState::Succeeded, "{}", before.error);
    assert!(score_files(&stack, &before.run_id).is_empty());

    // The evaluation file is the reference set; its hash names the score.
    let reference = stack.get(EVAL_KEY).await.expect("generated eval file");
    stack.put(REFERENCE_KEY, reference.clone()).await;
    stack.put("config/v1/lifecycle.yaml", format!("reference_key: {REFERENCE_KEY}\n")).await;
    let sha = crs_domain::models::sha256_hex(&reference);
    let job = train_to_end(&mut client, request(EVAL_KEY)).await;
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.error);
    assert_eq!(score_files(&stack, &job.run_id), vec![format!("{sha}.json")]);
    let score = read_score(&stack, &job.run_id, &format!("{sha}.json"));
    assert_eq!((score.run_id.as_str(), score.reference_key.as_str()), (job.run_id.as_str(), REFERENCE_KEY));
    assert_eq!(score.reference_sha256, sha);

    // The same numbers Score gives for the production run on that file.
    let catalog = Catalog::new(ModelStore::new(stack.bucket.clone()));
    let v1 = ModelVer::parse("v1").unwrap();
    let production = catalog.production(v1).await.expect("history").expect("a production run");
    let scored = client
        .score(ScoreRequest { model_ver: "v1".into(), data_key: REFERENCE_KEY.into() })
        .await
        .expect("score")
        .into_inner();
    assert_eq!(scored.run_id, production.as_str());
    assert_eq!(production.as_str(), before.run_id, "the first run became production; the second is a challenger");
    let kept = catalog
        .references()
        .score(v1, &production, &catalog.references().resolve(&key_of(REFERENCE_KEY)).await.unwrap())
        .await
        .unwrap();
    let wire = scored.evaluation.expect("evaluation").model.expect("model metrics");
    assert_eq!((kept.evaluation.model.logloss, kept.evaluation.model.wmse), (wire.logloss, wire.wmse));

    // Scoring again reads the kept score: same time, no second file.
    let set = catalog.references().resolve(&key_of(REFERENCE_KEY)).await.unwrap();
    let again = Catalog::new(ModelStore::new(stack.bucket.clone()))
        .references()
        .score(v1, &RunId::parse(&job.run_id).unwrap(), &set)
        .await
        .unwrap();
    assert_eq!(again, score);

    // A changed file: new scores named by its new hash, the old ones kept.
    let changed = stack.get(TRAIN_KEY).await.expect("generated train file");
    stack.put(REFERENCE_KEY, changed.clone()).await;
    let new_sha = crs_domain::models::sha256_hex(&changed);
    let scored = train_service::reference::score_unscored_runs(&catalog, v1).await.expect("score the kept runs");
    assert_eq!(scored, 2, "both runs lack a score on the changed file");
    let mut expected = vec![format!("{sha}.json"), format!("{new_sha}.json")];
    expected.sort();
    assert_eq!(score_files(&stack, &job.run_id), expected);
    // The production run was scored on the old file above, through the catalog.
    assert_eq!(score_files(&stack, &before.run_id), expected);
    assert_eq!(train_service::reference::score_unscored_runs(&catalog, v1).await.unwrap(), 0, "nothing left to score");
    let on_new = read_score(&stack, &job.run_id, &format!("{new_sha}.json"));
    assert_ne!(on_new.evaluation.model.logloss, score.evaluation.model.logloss, "a different file, a different score");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_reference_file_leaves_the_run_unscored_and_the_job_succeeding() {
    let stack = Stack::new().await;
    stack.put("config/v1/lifecycle.yaml", "reference_key: data/reference/missing.csv.gz\n").await;
    let train = stack.start_train(stack.train_config()).await;
    let job = train_to_end(&mut train.client.clone(), request(EVAL_KEY)).await;
    assert_eq!(job.state(), JobState::Succeeded, "{}", job.error);
    assert!(score_files(&stack, &job.run_id).is_empty());
    let catalog = Catalog::new(ModelStore::new(stack.bucket.clone()));
    let err = train_service::reference::score_unscored_runs(&catalog, ModelVer::parse("v1").unwrap())
        .await
        .expect_err("no such file")
        .to_string();
    assert!(err.contains("data/reference/missing.csv.gz"), "{err}");
}
