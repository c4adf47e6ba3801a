//! Two train-service processes (the real binary) on one bucket folder, asked
//! for a cycle at the same moment, five times over: one cycle runs each time
//! and both replicas name it, cycles of the version never overlap, each
//! promotion is one event of the cycle that won, and the history has no gap,
//! no repeat and no lost alias update.

use std::sync::Barrier;
use std::time::Instant;

use smoke_test::lifecycle::{
    TrainProcess, Weeks, check_ingestion, check_production, cycle_record, lifecycle_bucket, promotions, start_cycle,
    wait_for_cycle,
};
use smoke_test::{Crctl, build_binaries, free_addr};
use train_service::cycles::{CycleRecord, CycleState};
use train_service::gate::GateOutcome;

const ROUNDS: u32 = 5;

#[test]
fn two_replicas_run_one_cycle_at_a_time_and_lose_no_promotion() {
    let started = Instant::now();
    let progress = |step: &str| eprintln!("[replicas {:6.1} s] {step}", started.elapsed().as_secs_f64());
    progress("building the binaries (minutes if they are stale)");
    let bins = build_binaries();
    let dir = tempfile::Builder::new().prefix("crs-replicas-").tempdir().expect("temp dir");
    let crctl = Crctl::new(&bins, &free_addr(), &free_addr());
    // Three weeks for the first cycle, then one more for each later one.
    let weeks = Weeks::generate(&crctl, dir.path(), 2 + ROUNDS);
    let bucket = dir.path().join("bucket");
    lifecycle_bucket(&crctl, &bucket);
    weeks.deliver(&bucket, 1);
    weeks.deliver(&bucket, 2);
    let mut a = TrainProcess::start(&bins, &bucket, &dir.path().join("logs/a"), None);
    let b = TrainProcess::start(&bins, &bucket, &dir.path().join("logs/b"), None);

    let mut cycles = Vec::new();
    for round in 1..=ROUNDS {
        weeks.deliver(&bucket, 2 + round);
        progress(&format!("round {round}: a cycle asked of both replicas at once"));
        let barrier = Barrier::new(2);
        let ask = |crctl: &Crctl| {
            barrier.wait();
            start_cycle(crctl).unwrap_or_else(|e| panic!("round {round}: RunCycle failed: {e}"))
        };
        let (from_a, from_b) = std::thread::scope(|scope| {
            let asking_a = scope.spawn(|| ask(&a.crctl));
            let asking_b = scope.spawn(|| ask(&b.crctl));
            (asking_a.join().expect("replica a's request"), asking_b.join().expect("replica b's request"))
        });
        assert_eq!(from_a, from_b, "round {round}: the replicas started two cycles");
        // Asked again while it runs, either replica answers with the same cycle.
        let again = start_cycle(&b.crctl).expect("RunCycle");
        if again != from_a {
            let first = cycle_record(&bucket, &from_a).expect("the first cycle's record");
            assert_ne!(first["state"], "running", "round {round}: a second cycle started while {from_a} ran");
        }
        let record = wait_for_cycle(&bucket, &from_a, &mut a.service);
        assert_eq!(record["state"], "succeeded", "round {round}: {record:#}");
        progress(&format!("round {round}: {}", record["decision"]));
        cycles.push(from_a);
    }

    let records: Vec<CycleRecord> = cycles
        .iter()
        .map(|id| serde_json::from_value(cycle_record(&bucket, id).expect("record")).expect("a cycle record"))
        .collect();
    for pair in records.windows(2) {
        let ended = pair[0].finished_at.expect("an ended cycle has an end");
        assert!(ended <= pair[1].started_at, "cycles overlap: {:#?}", (&pair[0], &pair[1]));
    }
    assert!(records.iter().all(|r| r.state == CycleState::Succeeded), "{records:#?}");

    let (production, events) = check_production(&bucket);
    let promoted = promotions(&events);
    let mut winners = Vec::new();
    for record in &records {
        let by = format!("cycle {}", record.cycle_id);
        let own: Vec<_> = promoted.iter().filter(|(who, _)| *who == by).collect();
        if record.gate.as_ref().is_some_and(GateOutcome::promoted) {
            let run = record.run_id.clone().expect("a promoting cycle names its run");
            assert_eq!(
                own.len(),
                1,
                "cycle {} promoted, and has {} promotions: {events:#?}",
                record.cycle_id,
                own.len()
            );
            assert_eq!(own[0].1, run, "{events:#?}");
            assert_eq!(record.production_run_id.as_ref(), Some(&run), "{record:#?}");
            winners.push(run);
        } else {
            assert!(own.is_empty(), "cycle {} did not promote, yet: {events:#?}", record.cycle_id);
        }
    }
    assert!(!winners.is_empty(), "the first cycle promotes the first production run: {records:#?}");
    assert_eq!(promoted.iter().map(|(_, run)| run.clone()).collect::<Vec<_>>(), winners, "{events:#?}");
    assert_eq!(winners.last(), Some(&production), "production is what the last winning cycle promoted");
    check_ingestion(&bucket);
    progress(&format!("done: {} of {ROUNDS} cycles promoted", winners.len()));
}
