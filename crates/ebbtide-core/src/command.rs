//! Commands: everything the engine asks the outside world to do or record.

use crate::cost::InstanceLifetime;
use crate::event::LaunchFailure;
use crate::ids::{InstanceId, JobId, PoolId, TenantId, WorkerId};
use crate::job::JobOutcome;
use crate::money::Micros;
use crate::reason::{MarketReason, ScaleDecision};
use crate::worker::{DrainReason, Market};

/// One instruction or record for the adapters, in the order they must be
/// carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send this job to this worker. Write-ahead: the adapter makes the
    /// assignment (with `attempt`) durable before the worker sees it, so a
    /// restarted scheduler knows where every job may be running.
    Assign {
        /// The job to send.
        job: JobId,
        /// Where it goes: a worker with a free slot that meets its needs.
        worker: WorkerId,
        /// Which attempt this is, counting every earlier run (1 = first).
        attempt: u32,
    },
    /// Launch one instance per worker id in `pool` on `market`.
    Launch {
        /// The pool (its provider and shape).
        pool: PoolId,
        /// Spot or on-demand.
        market: Market,
        /// Ids the engine gave the new workers; outcomes refer to them.
        workers: Vec<WorkerId>,
        /// Zones to try, in this order (cheapest open spot offering first);
        /// a zone not listed is locked after a capacity error. Empty: the
        /// provider's own choice (on-demand, or no zonal prices known).
        zones: Vec<String>,
        /// Why this market, for the log and the launch metric.
        why: MarketReason,
    },
    /// Record: spot instances the policy wants are held back because every
    /// spot offering is locked after capacity errors and no job would miss
    /// its target by waiting; they are launched when an offering opens, or
    /// on-demand as soon as waiting would cost an SLA.
    SpotAwaited {
        /// The pool whose launch waits.
        pool: PoolId,
        /// Instances held back.
        count: u32,
        /// When the first spot offering opens again.
        until: crate::time::Timestamp,
    },
    /// Tell a worker to take no new job and acknowledge.
    Drain {
        /// The worker to drain.
        worker: WorkerId,
        /// Idle, worn out or about to be reclaimed: logged, and what the
        /// agent is told.
        reason: DrainReason,
    },
    /// The engine gave up on a worker: its jobs went back to the queue (or
    /// ran out of attempts) and its instance is terminated next. Says why,
    /// so an operator can tell a dead machine from a network problem.
    WorkerLost {
        /// Its pool, for the per-pool loss metric.
        pool: PoolId,
        /// The worker given up on.
        worker: WorkerId,
        /// Why it was declared lost.
        reason: LossReason,
        /// Jobs it held, now requeued or lost for good.
        jobs: u32,
    },
    /// A worker did not confirm it started an assigned job in time: it is
    /// told to stop it (`StopJob` follows) and the job is requeued.
    AssignmentExpired {
        /// The job requeued.
        job: JobId,
        /// The worker that never started it.
        worker: WorkerId,
        /// How long the assignment waited.
        waited: std::time::Duration,
    },
    /// Ask the provider to terminate an instance (idempotent).
    Terminate {
        /// The pool (its provider).
        pool: PoolId,
        /// The worker whose instance goes; `Event::InstanceTerminated`
        /// answers for it.
        worker: WorkerId,
        /// The provider's instance to terminate.
        instance: InstanceId,
    },
    /// Tell a worker to stop a job (cancelled, or cannot finish before the
    /// worker is reclaimed).
    StopJob {
        /// The job to stop.
        job: JobId,
        /// The worker running it.
        worker: WorkerId,
    },
    /// Send a stored assignment to its worker again: the agent, at a
    /// (re)connect, neither runs the job nor holds its result, so the
    /// assignment never reached it. The same attempt, not a new run: the
    /// adapter delivers what it already stored (and nothing still on its
    /// way to the disk, which its own commit delivers).
    Redeliver {
        /// The job whose stored assignment is sent again.
        job: JobId,
        /// The worker it is assigned to.
        worker: WorkerId,
        /// The stored attempt.
        attempt: u32,
    },
    /// Record: the job is back in the queue.
    Requeued {
        /// The job back in the queue.
        job: JobId,
        /// Attempts made so far.
        attempts: u32,
    },
    /// Record: the submission was refused.
    Rejected {
        /// The job refused at the door.
        job: JobId,
        /// Why, precise enough to show the tenant.
        reason: Rejection,
    },
    /// Record: the job is finished for good.
    Completed {
        /// The job finished for good.
        job: JobId,
        /// Its tenant.
        tenant: TenantId,
        /// The final outcome (`Lost` when attempts ran out).
        outcome: JobOutcome,
        /// Cost attributed to the job over all its attempts.
        cost: Micros,
    },
    /// Record: a desired-capacity change and its reason.
    Scale(ScaleDecision),
    /// Record: a launch failed (for metrics; the plan already adapted).
    LaunchFailed {
        /// The pool whose launch failed.
        pool: PoolId,
        /// The market tried.
        market: Market,
        /// Capacity, quota, throttling…: it decides the back-off or the
        /// market fallback that already followed.
        reason: LaunchFailure,
        /// How many instances were affected.
        count: u32,
    },
    /// Record: an instance's whole life and what it cost.
    InstanceCost(InstanceLifetime),
}

/// Why a submission was refused at the door.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The tenant id is not configured.
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// The class rank is not configured.
    #[error("unknown priority class {0}")]
    UnknownClass(u8),
    /// A job with this id is already live.
    #[error("job id already in use")]
    DuplicateJob,
    /// `max_attempts` was 0.
    #[error("max_attempts must be at least 1")]
    NoAttempts,
    /// No configured pool can ever run this job.
    #[error("no pool offers labels {labels:?} with {cpu_millis}m cpu and {memory_mib} MiB memory")]
    NoPoolCanServe {
        /// The requested labels.
        labels: Vec<String>,
        /// Requested CPU.
        cpu_millis: u32,
        /// Requested memory.
        memory_mib: u32,
    },
    /// The job alone is larger than the tenant's concurrency quota allows.
    #[error("job needs more than the tenant's whole concurrency quota")]
    LargerThanQuota,
    /// The tenant already has `max_queued_jobs` waiting.
    #[error("tenant has {queued} jobs queued, the limit is {limit}")]
    QueueFull {
        /// Jobs waiting now.
        queued: u32,
        /// The configured limit.
        limit: u32,
    },
    /// The tenant reached today's spend limit.
    #[error("tenant reached its daily spend limit of {limit}")]
    DailySpendReached {
        /// The configured limit.
        limit: Micros,
    },
}

/// Why the engine declared a worker lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// It never registered within its pool's boot timeout.
    BootTimeout {
        /// How long it had been booting.
        booting_for: std::time::Duration,
    },
    /// Its heartbeats stopped for longer than `engine.heartbeat_timeout`.
    MissedHeartbeats {
        /// How long it had been silent.
        silent_for: std::time::Duration,
    },
    /// An adapter reported it gone (its provider no longer runs it, or its
    /// transport closed for good).
    Reported,
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossReason::BootTimeout { booting_for } => write!(
                f,
                "never registered: booting for {} s, past the pool's boot_timeout",
                booting_for.as_secs()
            ),
            LossReason::MissedHeartbeats { silent_for } => write!(
                f,
                "no heartbeat for {} s, past engine.heartbeat_timeout",
                silent_for.as_secs()
            ),
            LossReason::Reported => f.write_str("its provider or transport reported it gone"),
        }
    }
}
