//! Jobs: what tenants submit and the engine places on workers.

use std::time::Duration;

use crate::ids::{ClassId, JobId, TenantId, WorkerId};
use crate::money::CostAccum;
use crate::requirements::{Requirements, SignatureId};
use crate::time::Timestamp;

/// A submission, as the API layer hands it to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Identity assigned by the store before the engine sees the job.
    pub id: JobId,
    /// Who pays and whose quota it uses.
    pub tenant: TenantId,
    /// Priority class and therefore SLA target.
    pub class: ClassId,
    /// What the job needs from a worker.
    pub requirements: Requirements,
    /// Attempts allowed when infrastructure loses the job (at least 1).
    pub max_attempts: u32,
    /// Attempts an earlier run of the scheduler already made (0 for a new
    /// submission). The engine owns the one attempt counter; a restarted
    /// scheduler hands back the persisted count so a re-run after a
    /// restart shows in it and `max_attempts` holds across restarts.
    pub attempts: u32,
    /// Run-time hint (e.g. from the project's history); helps decide
    /// whether a job can finish before a spot reclamation.
    pub expected_duration: Option<Duration>,
    /// When the job was first accepted, if earlier than the event that
    /// hands it to this engine: a restarted scheduler passes the stored
    /// submission time so the SLA clock and FIFO order survive recovery.
    /// `None` means "now".
    pub submitted_at: Option<Timestamp>,
}

/// Where a live job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting in the queue.
    Queued,
    /// Sent to a worker that has not yet confirmed it started.
    Assigned {
        /// The worker holding the slot.
        worker: WorkerId,
        /// When the assignment was made.
        at: Timestamp,
    },
    /// Confirmed running.
    Running {
        /// The worker running it.
        worker: WorkerId,
        /// When it started.
        since: Timestamp,
    },
}

impl JobState {
    /// The worker holding this job's slot, if any.
    pub fn worker(self) -> Option<WorkerId> {
        match self {
            JobState::Queued => None,
            JobState::Assigned { worker, .. } | JobState::Running { worker, .. } => Some(worker),
        }
    }
}

/// How a job attempt ended, as the worker (or the server) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// The job's command succeeded.
    Succeeded,
    /// The job's command failed; final, the job is not retried (a red build
    /// is a result, not an infrastructure fault).
    Failed,
    /// Stopped on request.
    Cancelled,
    /// The infrastructure lost it; retried while attempts remain.
    Lost,
}

/// The engine's record of a live job. Finished jobs are forgotten: the
/// store keeps history, the engine keeps only what decisions need.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub tenant: TenantId,
    pub class: ClassId,
    pub sig: SignatureId,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    pub submitted_at: Timestamp,
    /// Global submission order; breaks ties deterministically.
    pub seq: u64,
    /// Weighted-fair-queuing finish tag, fixed at first enqueue so a
    /// requeued job keeps its place.
    pub tag: u64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub expected_duration: Option<Duration>,
    pub state: JobState,
    pub cancel_requested: bool,
    /// Cost attributed so far (its share of the workers it ran on).
    pub cost: CostAccum,
}
