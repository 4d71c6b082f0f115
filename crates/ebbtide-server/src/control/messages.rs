//! What the loop is told and what it answers.

use super::*;

/// Sender half of a worker's Session stream.
/// Boxed: a channel reserves a block of 32 slots up front, so a small slot
/// keeps a thousand idle sessions from pinning megabytes.
pub type SessionSender = mpsc::Sender<Box<SchedulerMessage>>;

/// Why the loop refused a stored submission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitRefused {
    /// Its tenant was removed from the configuration while it waited.
    #[error("tenant {0:?} is no longer configured")]
    UnknownTenant(String),
    /// Its class was removed from the configuration while it waited.
    #[error("class {0:?} is no longer configured")]
    UnknownClass(String),
    /// The engine refused it at the door (quota, no pool can run it, …).
    #[error("{0}")]
    Rejected(ebbtide_core::Rejection),
    /// The engine could not take the event at all.
    #[error("{0}")]
    Engine(ebbtide_core::EngineError),
}

/// Why a worker may not register or open a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerRefused {
    /// It is not (or no longer) an active member of this cluster.
    #[error("{0} is not an active member of this cluster")]
    NotActive(WorkerId),
    /// Its state does not allow a registration.
    #[error("{worker} cannot register in state {state:?}")]
    CannotRegister {
        /// Who asked.
        worker: WorkerId,
        /// The state it is in (`None`: unknown to the engine).
        state: Option<ebbtide_core::WorkerState>,
    },
}

/// Why a configuration reload was refused; nothing changed then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadRefused {
    /// A pool names a provider the running scheduler did not build.
    #[error(
        "pool {pool:?} uses provider {provider:?}, which is not running (restart to add providers)"
    )]
    ProviderNotRunning {
        /// The pool.
        pool: String,
        /// Its provider.
        provider: String,
    },
    /// The engine refused the change (an entry removed or reordered, a
    /// broken rule).
    #[error("{0}")]
    Engine(ebbtide_core::ReconfigureError),
    /// The control loop is gone.
    #[error("scheduler loop not running")]
    LoopGone,
}

/// Everything the loop is told.
pub enum LoopMsg {
    /// A durable submission; the reply says whether the engine admitted it.
    Submit {
        /// The stored job.
        record: JobRecord,
        /// Why, if refused.
        reply: oneshot::Sender<Result<(), SubmitRefused>>,
    },
    /// A tenant cancels its job.
    Cancel {
        /// The job to cancel; the HTTP layer has already checked that the
        /// caller's tenant owns it.
        job: JobId,
    },
    /// An operator retires a worker (`Event::DrainRequested`).
    Drain {
        /// The worker.
        worker: WorkerId,
        /// Why not, if the engine refused (unknown worker, wrong state).
        reply: oneshot::Sender<Result<(), ebbtide_core::EngineError>>,
    },
    /// An engine event from an adapter (worker API, provider task).
    Event(Event),
    /// An agent redeemed its bootstrap token; the reply says whether the
    /// engine accepts the registration.
    Register {
        /// The worker the agent claims to be, proven by redeeming the
        /// one-time token issued for it.
        worker: WorkerId,
        /// Why, if refused.
        reply: oneshot::Sender<Result<(), WorkerRefused>>,
    },
    /// Which provider a worker's pool uses and the instance launched for
    /// it (for the identity check at registration); `None` if unknown.
    Placement {
        /// The worker asking to register.
        worker: WorkerId,
        /// (provider name, instance id once launched).
        reply: oneshot::Sender<Option<(String, Option<String>)>>,
    },
    /// A Session stream opened.
    Connected {
        /// The worker, as its session token proves.
        worker: WorkerId,
        /// Where to send it orders.
        sender: SessionSender,
        /// What its Hello says it holds.
        holds: AgentHolds,
        /// Why, if the worker is not (or no longer) wanted.
        reply: oneshot::Sender<Result<(), WorkerRefused>>,
    },
    /// A Session stream closed.
    Disconnected {
        /// The worker whose stream closed; it stays a member until its
        /// heartbeat timeout.
        worker: WorkerId,
    },
    /// A job attempt ended on a worker.
    JobResult {
        /// The worker whose session reported it; checked against where
        /// the engine placed the job.
        worker: WorkerId,
        /// What it reported.
        result: ReportedResult,
    },
    /// A piece of a job's output, from the worker's session.
    Output {
        /// The worker whose session sent it.
        worker: WorkerId,
        /// What it sent.
        output: ReportedOutput,
    },
    /// Replace the engine configuration (SIGHUP).
    Reload {
        /// The new configuration.
        engine: Box<ebbtide_core::EngineConfig>,
        /// Why, if refused; nothing changed then.
        reply: oneshot::Sender<Result<(), ReloadRefused>>,
    },
    /// A provider's list, for the reconciler.
    Reconciled {
        /// The provider.
        provider: String,
        /// When the list call started.
        listed_at: Timestamp,
        /// What it returned; an error skips this pass.
        listed: Result<Vec<ebbtide_provider::InstanceInfo>, ebbtide_provider::ProviderError>,
        /// Instances it reports as taken back (spot preemptions).
        reclaimed: Vec<ebbtide_core::InstanceId>,
        /// The machines it owns and their health, after this list.
        hosts: Vec<ebbtide_provider::HostReport>,
    },
    /// Terminate every instance (a stop with `server.on_stop =
    /// "terminate"`); answers how many once the providers confirmed.
    TerminateAll {
        /// The count.
        reply: oneshot::Sender<usize>,
    },
    /// Readiness: answered as soon as the loop reads it.
    Ping {
        /// The answer.
        reply: oneshot::Sender<()>,
    },
    /// Status for the API.
    Status {
        /// The answer.
        reply: oneshot::Sender<StatusReport>,
    },
    /// Why a job is where it is; `None` if the engine does not hold it.
    Explain {
        /// The job.
        job: JobId,
        /// The answer.
        reply: oneshot::Sender<Option<ExplainReport>>,
    },
}

/// What an agent's Hello says it holds, applied in this order: the
/// running jobs (the engine hears which it has), the output it kept, then
/// the results (so a result never closes a job before its output lands).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentHolds {
    /// Jobs it says it is running (or still reporting on).
    pub running: Vec<JobId>,
    /// Output it sent but was never told is stored.
    pub output: Vec<ReportedOutput>,
    /// Results it holds that were never confirmed stored.
    pub results: Vec<ReportedResult>,
}

/// A chunk of a job's output as an agent sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedOutput {
    /// The job it names (checked against the engine: a worker may only
    /// write to the log of a job placed on it).
    pub job: JobId,
    /// The attempt the agent runs (0 from an agent that does not say).
    pub attempt: u32,
    /// Where the chunk starts in the attempt's output, so a repeat is
    /// stored once; `None` from an agent that does not number its output.
    pub offset: Option<u64>,
    /// The bytes.
    pub chunk: Vec<u8>,
}

/// A job result as an agent reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedResult {
    /// The job the result is for.
    pub job: JobId,
    /// The attempt the agent ran (0 from an agent that does not say).
    pub attempt: u32,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
}
