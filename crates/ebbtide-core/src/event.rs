//! Events: everything the outside world tells the engine.

use crate::ids::{InstanceId, JobId, WorkerId};
use crate::job::{JobOutcome, JobSpec};
use crate::money::PricePerHour;
use crate::time::Timestamp;
use crate::worker::Market;

/// One thing that happened. Adapters translate API calls, gRPC messages,
/// provider answers and timers into these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A tenant submitted a job (already durable in the store).
    JobSubmitted(JobSpec),
    /// A tenant cancelled a job.
    JobCancelled {
        /// The job to cancel (queued: dropped; running: stopped).
        job: JobId,
    },
    /// A worker confirmed it started an assigned job.
    JobStarted {
        /// The job the agent started.
        job: JobId,
        /// The worker that started it.
        worker: WorkerId,
    },
    /// A job attempt ended on a worker.
    JobFinished {
        /// The job whose attempt ended.
        job: JobId,
        /// The worker it ran on.
        worker: WorkerId,
        /// How it ended.
        outcome: JobOutcome,
    },
    /// The provider created the instance for a requested worker.
    InstanceLaunched {
        /// The engine's worker.
        worker: WorkerId,
        /// The provider's instance id.
        instance: InstanceId,
        /// Availability zone, where the provider has them.
        zone: Option<String>,
    },
    /// The provider could not create instances for these workers.
    LaunchFailed {
        /// The workers of the failed (part of the) launch.
        workers: Vec<WorkerId>,
        /// Why, as a kind the engine can act on.
        reason: LaunchFailure,
    },
    /// A worker's agent registered with a valid bootstrap credential.
    WorkerRegistered {
        /// The worker whose agent registered.
        worker: WorkerId,
    },
    /// A worker's agent opened a session (first connect or reconnect) and
    /// said what it holds: jobs it runs, and jobs whose results it still
    /// keeps for the scheduler. The engine reconciles that with where it
    /// placed jobs (`Command::StopJob`, `Command::Redeliver`).
    SessionOpened {
        /// The worker whose agent connected.
        worker: WorkerId,
        /// Jobs the agent runs now.
        running: Vec<JobId>,
        /// Jobs it finished whose results it has not had confirmed.
        finished: Vec<JobId>,
    },
    /// A worker is alive.
    Heartbeat {
        /// The worker heard from.
        worker: WorkerId,
    },
    /// The transport lost a worker (stream closed for good, instance gone).
    WorkerLost {
        /// The worker the transport lost.
        worker: WorkerId,
    },
    /// A worker acknowledged a drain order.
    DrainAcknowledged {
        /// The worker that will take no new job.
        worker: WorkerId,
    },
    /// The provider confirmed an instance is gone.
    InstanceTerminated {
        /// The worker whose instance it was.
        worker: WorkerId,
    },
    /// The provider will reclaim this (spot) worker at `deadline`.
    ReclamationNotice {
        /// The spot worker to be reclaimed.
        worker: WorkerId,
        /// When the instance will be taken away.
        deadline: Timestamp,
    },
    /// A new price for a shape on a market (and zone).
    PriceUpdate {
        /// Instance shape name.
        shape: String,
        /// Market the price is for.
        market: Market,
        /// Zone, or `None` for "any zone".
        zone: Option<String>,
        /// Price per instance-hour.
        price: PricePerHour,
    },
    /// External scaling mode only: keep `pool` at `desired` instances.
    SetDesired {
        /// The pool.
        pool: crate::ids::PoolId,
        /// Instances wanted (capped at the pool's `max`).
        desired: u32,
    },
    /// An operator retires this worker: it takes no new job, finishes what
    /// it runs and is terminated; the planner launches a replacement if the
    /// queue needs one. A worker still booting is terminated at once.
    DrainRequested {
        /// The worker.
        worker: WorkerId,
    },
    /// Time passed: re-plan, expire timeouts, age the queue.
    Tick,
    /// The scheduler is stopping: start no more jobs and launch nothing;
    /// jobs already on workers finish, queued ones wait (durably) for the
    /// next scheduler. Lasts for the rest of this engine's life.
    StopDispatch,
    /// A restarted scheduler takes back a worker that outlived it: its
    /// instance is still up and its agent reconnected with a valid session.
    /// The jobs it reports running continue there instead of being re-run.
    WorkerAdopted(Adoption),
}

/// A worker that survived a scheduler restart, with the jobs it still runs.
///
/// Why a separate event rather than launch + register + assign: the
/// instance was launched and its jobs started by an earlier run, so the
/// engine must not emit `Launch` or `Assign` for them, only take them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    /// The worker id the earlier run gave it (never reused).
    pub worker: WorkerId,
    /// Its pool.
    pub pool: crate::ids::PoolId,
    /// The provider's instance.
    pub instance: InstanceId,
    /// Its zone, where the provider has zones.
    pub zone: Option<String>,
    /// The market it was bought on (for its cost rate).
    pub market: Market,
    /// Jobs it is running, each already admitted once by the earlier run.
    pub running: Vec<JobSpec>,
    /// Until when the earlier run booked its cost (its last durable ledger
    /// flush, or the instance's launch if later): the instance ran — and
    /// was billed — while no scheduler watched, so its cost accrues from
    /// here rather than from the adoption. That time is booked as idle (no
    /// job is known to have held a slot). `None`: from the adoption.
    pub accrue_from: Option<Timestamp>,
}

/// Why a launch failed, in the terms that decide what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LaunchFailure {
    /// No capacity for this shape/market/zone now: try another market.
    Capacity,
    /// API rate limit: retry later, same plan.
    Throttled,
    /// Account quota (vCPU limit, spot instance count): like capacity.
    Quota,
    /// Bad configuration or credentials: retrying will not help.
    Permanent,
    /// The provider launched fewer instances than asked and gave no error
    /// for the rest: a shortfall of that market, handled like capacity.
    Incomplete,
    /// Ebbtide could not record the workers' bootstrap credentials (its
    /// own store failed), so nothing was asked of the provider: retried
    /// with back-off, no market is blamed.
    NotIssued,
}
