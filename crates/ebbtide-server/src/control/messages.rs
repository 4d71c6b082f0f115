//! What the loop is told and what it answers.

use super::*;

/// Sender half of a worker's Session stream.
/// Boxed: a channel reserves a block of 32 slots up front, so a small slot
/// keeps a thousand idle sessions from pinning megabytes.
pub type SessionSender = mpsc::Sender<Box<SchedulerMessage>>;

/// Everything the loop is told.
pub enum LoopMsg {
    /// A durable submission; the reply says whether the engine admitted it.
    Submit {
        /// The stored job.
        record: JobRecord,
        /// `Err(reason)` if refused.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A tenant cancels its job.
    Cancel {
        /// The job.
        job: u64,
    },
    /// An engine event from an adapter (worker API, provider task).
    Event(Event),
    /// An agent redeemed its bootstrap token; the reply says whether the
    /// engine accepts the registration.
    Register {
        /// The worker.
        worker: WorkerId,
        /// `Err(reason)` if refused.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Which provider a worker's pool uses and the instance launched for
    /// it (for the identity check at registration); `None` if unknown.
    Placement {
        /// The worker.
        worker: WorkerId,
        /// (provider name, instance id once launched).
        reply: oneshot::Sender<Option<(String, Option<String>)>>,
    },
    /// A Session stream opened.
    Connected {
        /// The worker.
        worker: WorkerId,
        /// Where to send it orders.
        sender: SessionSender,
        /// Jobs it says it is running.
        running: Vec<u64>,
        /// Results it holds that were never confirmed stored.
        results: Vec<ReportedResult>,
        /// `Err(reason)` if the worker is not (or no longer) wanted.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A Session stream closed.
    Disconnected {
        /// The worker.
        worker: WorkerId,
    },
    /// A job attempt ended on a worker.
    JobResult {
        /// The worker.
        worker: WorkerId,
        /// What it reported.
        result: ReportedResult,
    },
    /// A piece of a job's output, from the worker's session.
    Output {
        /// The worker whose session sent it.
        worker: WorkerId,
        /// The job it names.
        job: u64,
        /// The bytes.
        chunk: Vec<u8>,
    },
    /// Replace the engine configuration (SIGHUP).
    Reload {
        /// The new configuration.
        engine: Box<ebbtide_core::EngineConfig>,
        /// `Err(reason)` if refused; nothing changed then.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A provider's list, for the reconciler.
    Reconciled {
        /// The provider.
        provider: String,
        /// When the list call started.
        listed_at: Timestamp,
        /// What it returned.
        listed: Result<Vec<ebbtide_provider::InstanceInfo>, String>,
    },
    /// Terminate every instance (a stop with `server.on_stop =
    /// "terminate"`); answers how many once the providers confirmed.
    TerminateAll {
        /// The count.
        reply: oneshot::Sender<usize>,
    },
    /// Status for the API.
    Status {
        /// The answer.
        reply: oneshot::Sender<StatusReport>,
    },
}

/// A job result as an agent reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedResult {
    /// The job.
    pub job: u64,
    /// The attempt the agent ran (0 from an agent that does not say).
    pub attempt: u32,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
}

/// What `GET /v1/status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Jobs waiting.
    pub queued: usize,
    /// Jobs assigned to or running on a worker.
    pub on_workers: usize,
    /// Per pool.
    pub pools: Vec<PoolReport>,
}

/// One pool's state.
#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    /// Name.
    pub name: String,
    /// Desired instances.
    pub desired: u32,
    /// Instances by state.
    pub requested: u32,
    /// Booting.
    pub booting: u32,
    /// Idle.
    pub idle: u32,
    /// Busy.
    pub busy: u32,
    /// Draining or terminating.
    pub retiring: u32,
}
