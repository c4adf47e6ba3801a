//! Every state a job passes through, appended to its log, a `watch` channel.
//! Readers take the last entry; watchers walk the log from where they joined,
//! so a slow watcher still sees every phase instead of only the newest one.

use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Cancellation, Job, JobPhase};

/// Every state of one job, oldest first (never empty), and whether someone
/// asked for it to be cancelled.
#[derive(Clone, Debug)]
pub(super) struct JobLog {
    states: watch::Sender<Vec<Job>>,
    cancel: CancellationToken,
    /// The first request to cancel; later ones change nothing.
    cancellation: Arc<Mutex<Option<Cancellation>>>,
}

impl JobLog {
    pub(super) fn new(job: Job) -> Self {
        JobLog { states: watch::Sender::new(vec![job]), cancel: CancellationToken::new(), cancellation: Arc::default() }
    }

    /// Asks the job to stop; it notices at its next phase boundary, or at once while waiting or training.
    pub(super) fn request_cancel(&self, cancellation: Cancellation) {
        self.cancellation.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(cancellation);
        self.cancel.cancel();
    }

    pub(super) async fn cancel_requested(&self) {
        self.cancel.cancelled().await;
    }

    /// The error the job ends with, once cancellation was asked for.
    pub(super) fn cancelled(&self) -> Option<super::JobError> {
        let cancellation = self.cancellation.lock().unwrap_or_else(|e| e.into_inner()).clone();
        cancellation.filter(|_| self.cancel.is_cancelled()).map(super::JobError::Cancelled)
    }

    pub(super) fn current(&self) -> Job {
        self.states.borrow().last().cloned().expect("a job's log starts with its creation")
    }

    pub(super) fn update(&self, change: impl FnOnce(&mut Job)) {
        self.states.send_modify(|log| {
            let mut next = log.last().cloned().expect("a job's log starts with its creation");
            change(&mut next);
            log.push(next);
        });
    }

    pub(super) fn enter(&self, phase: JobPhase) {
        self.update(|job| {
            job.phase = Some(phase);
            job.progress = phase.progress();
        });
    }

    /// The current state, then every later one, ending after the terminal state.
    pub(super) fn updates(&self) -> impl Stream<Item = Job> + Send + 'static + use<> {
        let receiver = self.states.subscribe();
        let current = receiver.borrow().len() - 1;
        futures::stream::unfold(Some((receiver, current)), |state| async move {
            let (mut receiver, next) = state?;
            loop {
                let job = receiver.borrow_and_update().get(next).cloned();
                if let Some(job) = job {
                    let rest = (!job.state.is_terminal()).then_some((receiver, next + 1));
                    return Some((job, rest));
                }
                receiver.changed().await.ok()?;
            }
        })
    }
}
