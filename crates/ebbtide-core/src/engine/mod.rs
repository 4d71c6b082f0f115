//! The engine: one deterministic state machine, events in, commands out.
//!
//! `Engine::handle(event, now)` validates the event against the current
//! state, applies it, and returns the commands that follow, in order. After
//! every event two invariants hold (and are checked by property tests via
//! [`Engine::check_invariants`]): the queue/worker bookkeeping agrees with
//! itself, and dispatch is *maximal* — no queued job that its tenant's quota
//! allows could run on a free slot that fits it. Maximality is what lets a
//! new submission be matched directly against free slots in microseconds.

mod adopt;
mod dispatch;
mod explain;
mod jobs;
mod pools;
mod reconfigure;
mod scaling;
mod view;
mod workers;

use crate::{CostAccum, Market, PricePerHour};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::command::Command;
use crate::config::{ConfigError, EngineConfig, HeadroomPolicy, ScalingMode};
use crate::cost::{CostTotals, PriceTable};
use crate::event::Event;
use crate::ids::{ClassId, InstanceId, JobId, PoolId, TenantId, WorkerId};
use crate::job::{Job, JobState};
use crate::ledger::{Ledger, LedgerLine};
use crate::queue::JobQueue;
use crate::requirements::{DetHashMap, SignatureTable};
use crate::tenant::{TenantState, Usage};
use crate::time::Timestamp;
use crate::worker::{Worker, WorkerState};

pub use explain::{Explanation, Holdup, PoolChoice, QuotaLimit};
use pools::PoolState;
pub use pools::PoolStatus;
pub use view::WorkerView;

/// Queued jobs of one tenant in one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStat {
    /// The class.
    pub class: ClassId,
    /// The tenant.
    pub tenant: TenantId,
    /// Jobs waiting.
    pub depth: usize,
    /// Submission time of the one waiting longest.
    pub oldest: Option<Timestamp>,
}
pub use reconfigure::ReconfigureError;

/// An event the engine could not apply. The state is unchanged: the caller
/// logs it and carries on (stale messages are normal in a distributed
/// system), but it is never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The event names a job the engine does not hold.
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    /// The event names a worker the engine does not hold.
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
    /// The job is not on that worker (e.g. a late report after a requeue).
    #[error("{job} is not held by {worker}")]
    NotOnWorker {
        /// The job.
        job: JobId,
        /// The worker that reported it.
        worker: WorkerId,
    },
    /// The event needs a job state the job is not in.
    #[error("{job} is {state:?}, cannot {action}")]
    WrongJobState {
        /// The job.
        job: JobId,
        /// Its state.
        state: JobState,
        /// What the event wanted.
        action: &'static str,
    },
    /// A worker id the engine already tracks was offered for adoption.
    #[error("{0} is already known; only an unknown worker can be adopted")]
    AlreadyKnown(WorkerId),
    /// An adopted worker would take its pool above its maximum (the
    /// configuration shrank while the scheduler was down).
    #[error("{0} is at its maximum size; the surviving worker cannot be adopted")]
    PoolAtMax(PoolId),
    /// The event names a pool that is not configured.
    #[error("unknown pool {0}")]
    UnknownPool(PoolId),
    /// `SetDesired` while the engine's own planner is in charge.
    #[error("desired capacity is set by the planner; external scaling is disabled")]
    ExternalScalingDisabled,
    /// Only a worker that booted or runs can be drained.
    #[error("{worker} is {state:?}: only a booting, idle or busy worker can be drained")]
    CannotDrain {
        /// The worker.
        worker: WorkerId,
        /// Its state.
        state: WorkerState,
    },
    /// The worker's state machine refused the transition.
    #[error("{worker}: {source}")]
    IllegalTransition {
        /// The worker.
        worker: WorkerId,
        /// The refused transition.
        source: crate::worker::IllegalTransition,
    },
}

/// The scaling engine.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    sigs: SignatureTable,
    queue: JobQueue,
    jobs: DetHashMap<JobId, Job>,
    tenants: Vec<TenantState>,
    pools: Vec<PoolState>,
    /// Pools in fill order (static first, then preference, price, index);
    /// every signature's chain is a subsequence of it.
    pool_order: Vec<PoolId>,
    workers: BTreeMap<WorkerId, Worker>,
    prices: PriceTable,
    costs: CostTotals,
    ledger: Ledger,
    next_worker: u64,
    next_seq: u64,
    stats: Stats,
    /// Latest `now` seen; only for invariant checks, never for decisions.
    clock: Timestamp,
    /// Set by `StopDispatch`: no job is started and nothing launched.
    stopping: bool,
}

/// Lifetime counters, for the simulator, metrics and invariant checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Jobs accepted.
    pub submitted: u64,
    /// Jobs refused at submission.
    pub rejected: u64,
    /// Assignments made (a requeued job is assigned again).
    pub assignments: u64,
    /// Jobs finished for good (any outcome).
    pub completed: u64,
    /// Times a job went back to the queue.
    pub requeued: u64,
    /// Instances asked for.
    pub launched: u64,
    /// Instances terminated.
    pub terminated: u64,
}

impl Engine {
    /// Builds an engine from a validated configuration.
    pub fn new(config: EngineConfig, now: Timestamp) -> Result<Engine, Vec<ConfigError>> {
        config.validate()?;
        let tenants = config
            .tenants
            .iter()
            .map(|t| TenantState::new(t.clone(), now))
            .collect();
        let pools: Vec<PoolState> = config
            .pools
            .iter()
            .map(|p| PoolState::new(p.clone(), config.default_job_duration))
            .collect();
        let mut pool_order: Vec<PoolId> = (0..pools.len()).map(|i| PoolId(i as u32)).collect();
        pool_order.sort_by_key(|p| pools::fill_order_key(&config.pools[p.0 as usize], p.0));
        let costs = CostTotals {
            by_tenant: vec![Default::default(); config.tenants.len()],
            by_pool: vec![Default::default(); config.pools.len()],
            spot: CostAccum::ZERO,
            ..Default::default()
        };
        Ok(Engine {
            queue: JobQueue::new(config.classes.len()),
            config,
            sigs: SignatureTable::default(),
            jobs: DetHashMap::default(),
            tenants,
            pools,
            pool_order,
            workers: BTreeMap::new(),
            prices: PriceTable::default(),
            costs,
            ledger: Ledger::default(),
            next_worker: 1,
            next_seq: 0,
            stats: Stats::default(),
            clock: now,
            stopping: false,
        })
    }

    /// Applies one event at time `now` and returns what must happen next.
    pub fn handle(&mut self, event: Event, now: Timestamp) -> Result<Vec<Command>, EngineError> {
        let mut out = Vec::new();
        self.clock = self.clock.max(now);
        match event {
            Event::JobSubmitted(spec) => self.on_submit(spec, now, &mut out)?,
            Event::JobCancelled { job } => self.on_cancel(job, now, &mut out)?,
            Event::JobStarted { job, worker } => self.on_started(job, worker, now)?,
            Event::JobFinished {
                job,
                worker,
                outcome,
            } => self.on_finished(job, worker, outcome, now, &mut out)?,
            Event::InstanceLaunched {
                worker,
                instance,
                zone,
            } => self.on_launched(worker, instance, zone, now)?,
            Event::LaunchFailed { workers, reason } => {
                self.on_launch_failed(&workers, reason, now, &mut out)?
            }
            Event::WorkerRegistered { worker } => self.on_registered(worker, now, &mut out)?,
            Event::Heartbeat { worker } => self.on_heartbeat(worker, now)?,
            Event::SessionOpened {
                worker,
                running,
                finished,
            } => self.on_session_opened(worker, &running, &finished, now, &mut out)?,
            Event::WorkerLost { worker } => self.on_lost(worker, now, &mut out)?,
            Event::DrainAcknowledged { worker } => self.on_drain_ack(worker, now, &mut out)?,
            Event::InstanceTerminated { worker } => self.on_terminated(worker, now, &mut out)?,
            Event::ReclamationNotice { worker, deadline } => {
                self.on_reclamation(worker, deadline, now, &mut out)?
            }
            Event::PriceUpdate {
                shape,
                market,
                zone,
                price,
            } => self.on_price(&shape, market, zone, price, now),
            Event::SetDesired { pool, desired } => {
                self.on_set_desired(pool, desired, now, &mut out)?
            }
            Event::DrainRequested { worker } => self.on_drain_requested(worker, &mut out)?,
            Event::Tick => self.on_tick(now, &mut out)?,
            Event::StopDispatch => self.stopping = true,
            Event::WorkerAdopted(adoption) => self.on_adopted(adoption, now, &mut out)?,
        }
        Ok(out)
    }

    fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Command>) -> Result<(), EngineError> {
        for t in &mut self.tenants {
            t.advance(now);
        }
        for i in 0..self.pools.len() {
            let exposure = self.headroom_exposure(PoolId(i as u32));
            let p = &mut self.pools[i];
            p.forecast.roll(now);
            if let (Some(exposure), HeadroomPolicy::Auto { coverage_milli }) =
                (exposure, p.config.headroom)
            {
                p.headroom.advance(now, exposure, coverage_milli);
            }
        }
        self.expire_workers(now, out)?;
        self.expire_assignments(now, out)?;
        self.dispatch_all(now, out)?;
        self.rescale(now, out)
    }

    /// Re-plans (planner mode) or re-applies the desired sizes (external
    /// mode) at once, after events that change capacity out of turn.
    pub(crate) fn rescale(
        &mut self,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        if self.stopping {
            return Ok(());
        }
        match self.config.scaling_mode {
            ScalingMode::Planner => self.plan_and_scale(now, out),
            ScalingMode::External => self.reconcile_external(now, out),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Lifetime counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether `StopDispatch` was applied.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Jobs waiting.
    pub fn queued_jobs(&self) -> usize {
        self.queue.len()
    }

    /// Jobs the engine holds (queued, assigned or running).
    pub fn live_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Where a live job is; `None` once finished (or never seen).
    pub fn job_state(&self, job: JobId) -> Option<JobState> {
        self.jobs.get(&job).map(|j| j.state)
    }

    /// How many attempts a live job has had, the current one included.
    pub fn job_attempts(&self, job: JobId) -> Option<u32> {
        self.jobs.get(&job).map(|j| j.attempts)
    }

    /// The jobs a worker holds (assigned or running), in assignment order.
    pub fn jobs_on(&self, worker: WorkerId) -> &[JobId] {
        self.workers.get(&worker).map_or(&[], |w| w.jobs.as_slice())
    }

    /// Current state of a worker; `None` once terminated and forgotten.
    pub fn worker_state(&self, worker: WorkerId) -> Option<WorkerState> {
        self.workers.get(&worker).map(|w| w.state)
    }

    /// A worker's pool and, once launched, its provider instance: what the
    /// reconciler compares with the provider's own list.
    pub fn worker_placement(&self, worker: WorkerId) -> Option<(PoolId, Option<&InstanceId>)> {
        self.workers
            .get(&worker)
            .map(|w| (w.pool, w.instance.as_ref()))
    }

    /// Queued jobs per (class, tenant) with the oldest submission time, for
    /// queue-depth and oldest-wait gauges. Allocates; meant for a metrics
    /// scrape, not the hot path.
    pub fn queue_stats(&self) -> Vec<QueueStat> {
        let mut out: Vec<QueueStat> = Vec::new();
        for id in self.queue.nonempty_cells() {
            let cell = self.queue.cell(id);
            let oldest = cell.jobs.iter().map(|r| r.submitted).min();
            let depth = cell.jobs.len();
            match out
                .iter_mut()
                .find(|s| s.class == cell.class && s.tenant == cell.tenant)
            {
                Some(s) => {
                    s.depth += depth;
                    s.oldest = match (s.oldest, oldest) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => out.push(QueueStat {
                    class: cell.class,
                    tenant: cell.tenant,
                    depth,
                    oldest,
                }),
            }
        }
        out
    }

    /// What the fleet costs per hour right now, per pool and market: the
    /// sum of the rates of every launched, not yet terminated instance.
    pub fn cost_rates(&self) -> Vec<(PoolId, Market, PricePerHour)> {
        let mut out: Vec<(PoolId, Market, PricePerHour)> = Vec::new();
        for w in self.workers.values() {
            if w.launched_at.is_none() || w.state == WorkerState::Terminated {
                continue;
            }
            match out
                .iter_mut()
                .find(|(p, m, _)| *p == w.pool && *m == w.market)
            {
                Some((_, _, rate)) => rate.0 += w.rate.0,
                None => out.push((w.pool, w.market, w.rate)),
            }
        }
        out
    }

    /// Workers not yet terminated, in id order.
    pub fn live_workers(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers.keys().copied()
    }

    /// What a tenant is using now.
    pub fn tenant_usage(&self, tenant: TenantId) -> Option<Usage> {
        self.tenants.get(tenant.0 as usize).map(|t| t.usage)
    }

    /// Burst time a tenant has left (`None` when it has no burst allowance).
    pub fn tenant_burst_remaining(&self, tenant: TenantId) -> Option<Duration> {
        self.tenants
            .get(tenant.0 as usize)
            .and_then(|t| t.burst_remaining())
    }

    /// Looks a tenant up by name.
    pub fn tenant_id(&self, name: &str) -> Option<TenantId> {
        self.config
            .tenants
            .iter()
            .position(|t| t.name == name)
            .map(|i| TenantId(i as u32))
    }

    /// Looks a class up by name.
    pub fn class_id(&self, name: &str) -> Option<ClassId> {
        self.config
            .classes
            .iter()
            .position(|c| c.name == name)
            .and_then(|i| u8::try_from(i).ok())
            .map(ClassId)
    }

    /// Looks a pool up by name.
    pub fn pool_id(&self, name: &str) -> Option<PoolId> {
        self.config
            .pools
            .iter()
            .position(|p| p.name == name)
            .map(|i| PoolId(i as u32))
    }

    /// Cost totals so far (accrued up to the last event that touched each
    /// worker).
    pub fn costs(&self) -> &CostTotals {
        &self.costs
    }

    /// Makes sure new worker ids are above `used`: after a restart the
    /// engine must never reuse an id an earlier run gave to an instance
    /// (its credentials and records name it).
    pub fn reserve_worker_ids(&mut self, used: WorkerId) {
        self.next_worker = self.next_worker.max(used.0.saturating_add(1));
    }

    /// Books every instance's cost up to `now`, so [`Engine::costs`] is
    /// current for a report (costs otherwise accrue at each worker's next
    /// event). Fleet totals are exact either way.
    pub fn accrue_all(&mut self, now: Timestamp) {
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for w in ids {
            self.accrue(w, now);
        }
    }

    /// Books every instance's cost up to `now` and hands over the ledger
    /// lines booked since the last call, for the adapter to add to its
    /// durable ledger. Lines of the same key from two calls add up.
    pub fn take_ledger(&mut self, now: Timestamp) -> Vec<LedgerLine> {
        self.accrue_all(now);
        let workers = &self.workers;
        self.ledger.take(|id| {
            workers
                .get(&id)
                .map(|w| (w.instance.clone(), w.zone.clone()))
        })
    }

    /// Queue wait target of a class.
    pub fn sla_target(&self, class: ClassId) -> Option<Duration> {
        self.config
            .classes
            .get(usize::from(class.0))
            .map(|c| c.sla_target)
    }

    fn class_target(&self, class: ClassId) -> Duration {
        self.config.classes[usize::from(class.0)].sla_target
    }

    fn alloc_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// The earliest instant at which a timeout the engine enforces runs
    /// out (quinn's `poll_timeout`): a booting worker's boot timeout, a
    /// silent worker's heartbeat timeout, an unconfirmed assignment's
    /// timeout, an idle worker's idle timeout. The shell wakes the engine
    /// (`Event::Tick`) then instead of up to a tick later; planning still
    /// re-runs at every tick. Only instants after the last one the engine
    /// saw count: one already past (an idle worker kept by `idle_count`)
    /// must not wake the shell in a loop. `None`: nothing waits on a
    /// timeout.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        // Each expires strictly after its limit (`elapsed > limit`).
        let after = |from: Timestamp, limit: std::time::Duration| {
            from + limit + std::time::Duration::from_millis(1)
        };
        let hb = self.config.heartbeat_timeout;
        let workers = self.workers.values().filter_map(|w| {
            let pool = &self.pools[w.pool.0 as usize].config;
            match w.state {
                WorkerState::Booting => Some(after(w.launched_at?, pool.boot_timeout)),
                WorkerState::Idle => {
                    Some(after(w.last_heartbeat, hb).min(w.idle_since + pool.idle_timeout))
                }
                WorkerState::Busy | WorkerState::Draining => Some(after(w.last_heartbeat, hb)),
                _ => None,
            }
        });
        let limit = self.config.assignment_timeout;
        let assignments = self.jobs.values().filter_map(|j| match j.state {
            JobState::Assigned { at, .. } => Some(after(at, limit)),
            _ => None,
        });
        workers.chain(assignments).filter(|t| *t > self.clock).min()
    }

    /// Verifies the engine's internal consistency; used after every step of
    /// the property tests, and every N events by the simulator
    /// (`SimParams::check_every`, `ebbtide simulate --check N`).
    pub fn check_invariants(&self) -> Result<(), String> {
        invariants::check(self)
    }
}

mod invariants;
