//! Every state a job passes through, appended to its log, a `watch` channel.
//! Readers take the last entry; watchers walk the log from where they joined,
//! so a slow watcher still sees every stage instead of only the newest one.

use futures::Stream;
use tokio::sync::watch;

use super::{Job, JobStage};

/// Every state of one job, oldest first; never empty.
#[derive(Clone, Debug)]
pub(super) struct JobLog(watch::Sender<Vec<Job>>);

impl JobLog {
    pub(super) fn new(job: Job) -> Self {
        JobLog(watch::Sender::new(vec![job]))
    }

    pub(super) fn current(&self) -> Job {
        self.0.borrow().last().cloned().expect("a job's log starts with its creation")
    }

    pub(super) fn update(&self, change: impl FnOnce(&mut Job)) {
        self.0.send_modify(|log| {
            let mut next = log.last().cloned().expect("a job's log starts with its creation");
            change(&mut next);
            log.push(next);
        });
    }

    pub(super) fn enter(&self, stage: JobStage) {
        self.update(|job| {
            job.stage = Some(stage);
            job.progress = stage.progress();
        });
    }

    /// The current state, then every later one, ending after the terminal state.
    pub(super) fn updates(&self) -> impl Stream<Item = Job> + Send + 'static + use<> {
        let receiver = self.0.subscribe();
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
