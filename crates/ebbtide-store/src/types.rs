//! Records the store keeps, and its errors.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The engine's ids: the store numbers jobs and keeps the worker ids the
/// engine chose, in the same types the engine decides with.
pub use ebbtide_core::{JobId, WorkerId};

/// What a job needs from a worker, as stored (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequirementsRecord {
    /// Labels the worker must offer.
    #[serde(default)]
    pub labels: Vec<String>,
    /// CPU in millicores.
    #[serde(default)]
    pub cpu_millis: u32,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mib: u32,
    /// Operating system, if required.
    #[serde(default)]
    pub os: Option<String>,
    /// Architecture, if required.
    #[serde(default)]
    pub arch: Option<String>,
}

/// A submission to make durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Owning tenant.
    pub tenant: String,
    /// Priority class name.
    pub class: String,
    /// Needs.
    pub requirements: RequirementsRecord,
    /// Shell command the agent runs.
    pub command: String,
    /// The agent kills the job after this long.
    pub timeout: Duration,
    /// Attempts allowed when infrastructure loses the job.
    pub max_attempts: u32,
    /// Submission time, ms since the epoch.
    pub submitted_at_ms: u64,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// Sent to a worker.
    Assigned,
    /// Running on a worker.
    Running,
    /// Finished, exit code 0.
    Succeeded,
    /// Finished, non-zero exit or timeout.
    Failed,
    /// Cancelled by its tenant.
    Cancelled,
    /// Lost by the infrastructure more often than allowed.
    Lost,
    /// Refused at submission.
    Rejected,
}

impl JobStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Assigned => "assigned",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Lost => "lost",
            JobStatus::Rejected => "rejected",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "assigned" => JobStatus::Assigned,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            "lost" => JobStatus::Lost,
            "rejected" => JobStatus::Rejected,
            _ => return None,
        })
    }

    /// Whether the job is over.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            JobStatus::Queued | JobStatus::Assigned | JobStatus::Running
        )
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    /// Id.
    pub id: JobId,
    /// Owning tenant.
    pub tenant: String,
    /// Priority class.
    pub class: String,
    /// Needs.
    pub requirements: RequirementsRecord,
    /// Command.
    pub command: String,
    /// Timeout, ms.
    pub timeout_ms: u64,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Where it is.
    pub status: JobStatus,
    /// Submission time, ms since the epoch.
    pub submitted_at_ms: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Worker of the current or last attempt.
    pub worker: Option<WorkerId>,
    /// Exit code of the final attempt.
    pub exit_code: Option<i32>,
    /// Why it ended as it did (rejections, losses).
    pub reason: Option<String>,
    /// Cost attributed to it, micro-dollars.
    pub cost_micros: i64,
    /// When it finished, ms since the epoch.
    pub finished_at_ms: Option<u64>,
}

/// A change to a job's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobUpdate {
    /// Sent to a worker.
    Assigned {
        /// The worker.
        worker: WorkerId,
        /// Attempts so far, this one included.
        attempts: u32,
    },
    /// The worker started it.
    Running,
    /// Back in the queue.
    Requeued {
        /// Attempts so far.
        attempts: u32,
    },
    /// Over.
    Finished {
        /// Final status.
        status: JobStatus,
        /// Exit code, if it ran to the end.
        exit_code: Option<i32>,
        /// Why, when not obvious.
        reason: Option<String>,
        /// Attributed cost, micro-dollars.
        cost_micros: i64,
        /// When, ms since the epoch.
        at_ms: u64,
    },
}

/// One write of the control loop's ordered stream: a job's state change or
/// a piece of its output. A batch of them commits in one transaction, in
/// order, so a job's log and its final state land together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobWrite {
    /// A state change.
    Update(JobId, JobUpdate),
    /// Output of an attempt, appended to the job's log.
    Log {
        /// The job.
        job: JobId,
        /// The attempt that produced it.
        attempt: u32,
        /// The bytes.
        chunk: Vec<u8>,
    },
}

/// A page of a job's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    /// Chunks in order, each with the attempt that wrote it.
    pub chunks: Vec<LogChunk>,
    /// Where the next page starts, if there is more.
    pub next: Option<u64>,
}

/// A piece of a job's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Byte offset of `bytes` in the whole log.
    pub offset: u64,
    /// The attempt that wrote it (0 for logs stored before attempts were).
    pub attempt: u32,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this tenant's (the API always sets it: tenants see their own).
    pub tenant: Option<String>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs with a larger id (paging).
    pub after: Option<JobId>,
    /// At most this many (capped at 1000).
    pub limit: u32,
}

/// The outcome of redeeming a bootstrap token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// Valid: the worker may register into `pool`. The token is now spent.
    Valid {
        /// The pool the worker was launched for.
        pool: String,
    },
    /// No such token.
    Unknown,
    /// Already used once.
    Reused,
    /// Past its expiry.
    Expired,
    /// Issued for another worker.
    WrongWorker,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not decode (corruption or a newer schema).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The job does not exist.
    #[error("no job {0:?}")]
    NoSuchJob(JobId),
    /// The store's writer stopped (the server is shutting down).
    #[error("the store is closed")]
    Closed,
}
