//! `serve-service batch`, what an Indexed Job's pods run: the configured model
//! loaded as a slot loads it, one shard of a prefix predicted per process with
//! no listener, the summary once the last shard is done; a single file as
//! PredictBatch writes it.

use crs_platform::predictions::shards::{Shard, ShardArgs};
use crs_platform::storage::layout::PREDICTION_INPUT_KEY;
use crs_testkit::{Stack, key_of as key};
use serve_service::BatchCommand;

fn command(input: &str, shard: Option<&str>) -> BatchCommand {
    BatchCommand {
        input: input.to_owned(),
        output: None,
        overwrite: false,
        shard: ShardArgs { shard: shard.map(|s| s.parse::<Shard>().unwrap()), ..ShardArgs::default() },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_predicts_its_shard_and_the_last_writes_the_summary() {
    let mut stack = Stack::new().await;
    let run = stack.train("v1").await;
    let input = stack.bucket.get(&key(PREDICTION_INPUT_KEY)).await.unwrap();
    for i in 0..4 {
        stack.bucket.put(&key(&format!("data/predict/input/many/part-{i}.csv.gz")), input.clone()).await.unwrap();
    }
    let folder = format!("data/predict/output/v1/{run}/many");
    let mut summaries = Vec::new();
    for shard in ["1/2", "0/2"] {
        let response = serve_service::run_batch(
            stack.serve_config(),
            command("data/predict/input/many/", Some(shard)),
            std::future::pending(),
        )
        .await
        .expect("the shard succeeds");
        assert_eq!((response.run_id.as_str(), response.output_key.as_str()), (run.as_str(), folder.as_str()));
        assert_eq!((response.files.len(), response.inputs), (2, 4));
        assert!(response.files.iter().all(|f| !f.skipped && f.rows_written > 0));
        summaries.push(response.summary_key);
    }
    assert_eq!(summaries, [String::new(), format!("{folder}/_SUMMARY.json")]);
    assert!(
        stack.webhooks().texts().iter().any(|t| t.contains("batch prediction of data/predict/input/many/ succeeded"))
    );

    // One file, as PredictBatch writes it; a shard of one file is refused.
    let single =
        serve_service::run_batch(stack.serve_config(), command(PREDICTION_INPUT_KEY, None), std::future::pending())
            .await
            .expect("a single file");
    assert_eq!(single.output_key, format!("data/predict/output/v1/{run}/prediction_output.csv.gz"));
    assert!(single.files.is_empty());
    let err = serve_service::run_batch(
        stack.serve_config(),
        command(PREDICTION_INPUT_KEY, Some("0/2")),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("only a prefix (ending in '/') is split into shards"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_production_run_it_fails_saying_so() {
    let stack = Stack::new().await;
    let err = serve_service::run_batch(
        stack.serve_config(),
        command("data/predict/input/many/", None),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("model v1 has no production run yet"), "{err:#}");
}
