//! The write-ahead journal between the control loop and the store.
//!
//! Every job state change and every piece of job output the loop decides
//! on is appended here, in the order it happened, together with what may
//! only happen once it is durable: sending an assignment to its worker
//! ("an assignment is stored before it is sent") and telling an agent its
//! result is stored so it may forget it ("a result is durable before the
//! agent is told"). One batch is in flight at a time; while it commits the
//! next one collects, so writes group-commit without the loop ever waiting
//! on a disk. When the backlog passes its bound the loop stops taking new
//! messages (back-pressure on the APIs) until the store catches up: the
//! journal never grows without limit and never drops a write.
//!
//! How far behind the store can be: the loop's view runs ahead of the
//! store by at most the batch being committed plus the one collecting, and
//! nothing outside the scheduler (an agent, an API reader) sees a change
//! before it is committed, so the API is never behind what any worker was
//! told by more than that one commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ebbtide_core::WorkerId;
use ebbtide_store::{JobId, JobUpdate, JobWrite, Store};
use tokio::sync::mpsc;

/// Writes waiting (not yet in flight) beyond which the loop stops reading
/// new messages until a commit lands.
const MAX_PENDING_WRITES: usize = 20_000;
/// Output bytes waiting beyond which the loop stops reading new messages.
const MAX_PENDING_BYTES: usize = 64 << 20;
/// Longest pause between retries of a batch the store refused.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// What the loop does once a batch is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterCommit {
    /// Send the assignment of `job` (attempt `attempt`) to `worker`.
    Deliver {
        /// The job.
        job: JobId,
        /// The worker it was assigned to.
        worker: WorkerId,
        /// The attempt stored with it.
        attempt: u32,
    },
    /// Tell `worker` the result of `job` is stored.
    ConfirmResult {
        /// The job.
        job: JobId,
        /// The worker that reported it.
        worker: WorkerId,
    },
    /// Tell `worker` the output of `job`'s `attempt` is stored before
    /// offset `through`, so it may forget what it kept for resending.
    ConfirmOutput {
        /// The job.
        job: JobId,
        /// The worker that sent it.
        worker: WorkerId,
        /// The attempt the output belongs to.
        attempt: u32,
        /// Everything before this offset is stored.
        through: u64,
    },
}

struct Batch {
    writes: Arc<[JobWrite]>,
    then: Vec<AfterCommit>,
}

/// A batch that reached the disk, with what waited for it.
pub(crate) struct Committed {
    /// Actions to carry out now, in order.
    pub then: Vec<AfterCommit>,
}

/// The loop's side of the journal.
pub(crate) struct Journal {
    writes: Vec<JobWrite>,
    bytes: usize,
    then: Vec<AfterCommit>,
    /// Output acknowledgements for the batch collecting, one per worker and
    /// job (the furthest offset): a chatty job costs one message a commit,
    /// not one per chunk.
    output_acks: HashMap<(WorkerId, JobId), (u32, u64)>,
    in_flight: bool,
    to_writer: mpsc::Sender<Batch>,
}

impl Journal {
    /// Starts the writer task; commits come back on the returned receiver.
    pub(crate) fn start(store: Arc<dyn Store>) -> (Journal, mpsc::Receiver<Committed>) {
        // One batch in flight and one answer outstanding: capacity 1 each
        // can never block the side that sends.
        let (to_writer, mut batches) = mpsc::channel::<Batch>(1);
        let (done, committed) = mpsc::channel::<Committed>(1);
        tokio::spawn(async move {
            while let Some(batch) = batches.recv().await {
                commit(store.as_ref(), &batch.writes).await;
                if done.send(Committed { then: batch.then }).await.is_err() {
                    return;
                }
            }
        });
        (
            Journal {
                writes: Vec::new(),
                bytes: 0,
                then: Vec::new(),
                output_acks: HashMap::new(),
                in_flight: false,
                to_writer,
            },
            committed,
        )
    }

    /// Records a state change of a job.
    pub(crate) fn update(&mut self, job: JobId, update: JobUpdate) {
        self.writes.push(JobWrite::Update(job, update));
    }

    /// Records output of an attempt.
    pub(crate) fn log(&mut self, job: JobId, attempt: u32, chunk: Vec<u8>) {
        self.bytes += chunk.len();
        self.writes.push(JobWrite::Log {
            job,
            attempt,
            chunk,
        });
    }

    /// Runs `action` once everything recorded so far is durable.
    pub(crate) fn after_commit(&mut self, action: AfterCommit) {
        self.then.push(action);
    }

    /// Tells `worker` once everything recorded so far is durable that the
    /// output of `job`'s `attempt` is stored before `through`.
    pub(crate) fn confirm_output(
        &mut self,
        worker: WorkerId,
        job: JobId,
        attempt: u32,
        through: u64,
    ) {
        let ack = self
            .output_acks
            .entry((worker, job))
            .or_insert((attempt, through));
        if ack.0 != attempt {
            *ack = (attempt, through);
        } else {
            ack.1 = ack.1.max(through);
        }
    }

    /// Whether the backlog is at its bound: the loop takes no new message
    /// until a commit lands.
    pub(crate) fn is_full(&self) -> bool {
        self.writes.len() >= MAX_PENDING_WRITES || self.bytes >= MAX_PENDING_BYTES
    }

    /// Whether anything is waiting or in flight.
    pub(crate) fn is_idle(&self) -> bool {
        !self.in_flight
            && self.writes.is_empty()
            && self.then.is_empty()
            && self.output_acks.is_empty()
    }

    /// Hands what collected to the writer unless a batch is in flight.
    pub(crate) fn flush(&mut self) {
        if self.in_flight
            || (self.writes.is_empty() && self.then.is_empty() && self.output_acks.is_empty())
        {
            return;
        }
        self.then.extend(
            self.output_acks
                .drain()
                .map(
                    |((worker, job), (attempt, through))| AfterCommit::ConfirmOutput {
                        job,
                        worker,
                        attempt,
                        through,
                    },
                ),
        );
        let batch = Batch {
            writes: std::mem::take(&mut self.writes).into(),
            then: std::mem::take(&mut self.then),
        };
        self.bytes = 0;
        match self.to_writer.try_send(batch) {
            Ok(()) => self.in_flight = true,
            Err(
                mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch),
            ) => {
                // Cannot happen with one batch in flight; keep it rather
                // than lose it.
                tracing::error!("journal writer unavailable; writes kept for the next flush");
                self.writes = batch.writes.to_vec();
                self.then = batch.then;
            }
        }
    }

    /// The in-flight batch landed.
    pub(crate) fn landed(&mut self) {
        self.in_flight = false;
    }
}

/// Commits one batch, retrying (with a growing pause) for as long as the
/// store refuses it: what follows a batch must never run before it is
/// durable, and dropping it would lose a job's state.
async fn commit(store: &dyn Store, writes: &Arc<[JobWrite]>) {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.apply(writes.clone()).await {
            Ok(missing) => {
                if !missing.is_empty() {
                    tracing::error!(jobs = ?missing, "journal writes named jobs the store does not hold");
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, writes = writes.len(), retry_in_ms = delay.as_millis() as u64, "store refused a journal batch; retrying (the scheduler waits for it)");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}
