//! The load generator's loops: callers that each send one request at a time,
//! timed one by one, either as fast as answers come back (closed loop,
//! [`throughput`]) or at a set rate (open loop, [`paced`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One caller: its own client (or connection) and the request it sends.
pub trait Caller: Send + 'static {
    /// Sends the request once and checks the answer.
    fn call(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Calls made before a latency measurement, to warm up connections and caches.
pub const WARM_UP_CALLS: usize = 200;

/// [`WARM_UP_CALLS`] calls, untimed.
pub async fn warm_up(caller: &mut impl Caller) -> anyhow::Result<()> {
    for _ in 0..WARM_UP_CALLS {
        caller.call().await?;
    }
    Ok(())
}

/// Calls one at a time for `duration` (warm the caller up first: [`warm_up`]);
/// returns each call's latency in microseconds, sorted.
pub async fn latencies(duration: Duration, caller: &mut impl Caller) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        caller.call().await?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// What the callers of one throughput measurement did.
#[derive(Debug)]
pub struct Throughput {
    pub requests: u64,
    pub elapsed: Duration,
    /// Every call's latency in microseconds, sorted.
    pub latencies: Vec<f64>,
}

impl Throughput {
    pub fn per_second(&self, per_request: usize) -> f64 {
        (self.requests * per_request as u64) as f64 / self.elapsed.as_secs_f64()
    }
}

/// The callers, each on a task of its own, calling for `duration`.
pub async fn throughput<C: Caller>(duration: Duration, callers: Vec<C>) -> anyhow::Result<Throughput> {
    run_callers(duration, callers, None).await
}

/// Requests at `per_second`, each sent at its own time on a fixed schedule
/// whatever the answers before it took (open loop), by the first of the
/// callers that is free; `duration` long. A schedule the callers cannot keep
/// shows as a rate below `per_second`: give enough callers that one is
/// always free (at least the rate times the slowest answer).
pub async fn paced<C: Caller>(duration: Duration, per_second: f64, callers: Vec<C>) -> anyhow::Result<Throughput> {
    run_callers(duration, callers, Some(Duration::from_secs_f64(1.0 / per_second))).await
}

/// Closed loop without `interval`; open loop at one request per `interval` with it.
async fn run_callers<C: Caller>(
    duration: Duration,
    callers: Vec<C>,
    interval: Option<Duration>,
) -> anyhow::Result<Throughput> {
    let started = Instant::now();
    let next_slot = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|mut caller| {
            let next_slot = next_slot.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    if let Some(interval) = interval {
                        let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                        let at = interval.mul_f64(slot as f64);
                        if at >= duration {
                            break;
                        }
                        tokio::time::sleep_until((started + at).into()).await;
                    } else if started.elapsed() >= duration {
                        break;
                    }
                    let t = Instant::now();
                    caller.call().await?;
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed();
    all.sort_by(f64::total_cmp);
    Ok(Throughput { requests: all.len() as u64, elapsed, latencies: all })
}
