//! `explain`: why a job is where it is — the question operators ask most
//! of a job that waits. Read-only; it states what the dispatcher and the
//! planner see for this job, in the order they would let it through.

use std::fmt;
use std::time::Duration;

use super::Engine;
use crate::config::PoolKind;
use crate::ids::{ClassId, JobId, TenantId};
use crate::job::JobState;
use crate::requirements::Requirements;
use crate::tenant::Allowance;
use crate::time::Timestamp;
use crate::worker::WorkerState;

/// What holds a job, with everything that decides when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The job.
    pub job: JobId,
    /// Whose it is.
    pub tenant: TenantId,
    /// Its class.
    pub class: ClassId,
    /// Queued, assigned or running.
    pub state: JobState,
    /// Attempts made so far.
    pub attempts: u32,
    /// Since it was submitted.
    pub waited: Duration,
    /// Its class's wait target.
    pub target: Duration,
    /// What a worker must offer it.
    pub needs: Requirements,
    /// Queued jobs of its class submitted before it (FIFO inside a class;
    /// fair queuing may let another tenant's job of the class go first).
    pub ahead_in_class: usize,
    /// The pools that can run it, in the order dispatch tries them.
    pub pools: Vec<PoolChoice>,
    /// What keeps it waiting, most decisive first; empty once it is on a
    /// worker.
    pub holdups: Vec<Holdup>,
}

/// One pool that can run the job, as the planner sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolChoice {
    /// The pool's name.
    pub pool: String,
    /// Free job slots in the pool now.
    pub free_slots: u32,
    /// Instances the planner wants.
    pub desired: u32,
    /// Instances that exist, in any state (what counts against `max`).
    pub existing: u32,
    /// Its ceiling.
    pub max: u32,
    /// Instances asked for or booting.
    pub booting: u32,
    /// When the first of them should be ready, by the learned boot time.
    pub first_ready: Option<Timestamp>,
}

/// Why a queued job has not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holdup {
    /// The scheduler is stopping: nothing new starts.
    Stopping,
    /// Its tenant is at a quota (and has no burst left for it).
    Quota {
        /// Which limit, with usage and the limit.
        limit: QuotaLimit,
    },
    /// A slot that fits is free: the job starts at the next dispatch,
    /// unless jobs ahead of it take the slot first.
    SlotFree {
        /// The pool with the slot.
        pool: String,
    },
    /// Capacity is booting for it.
    Booting {
        /// The pool.
        pool: String,
        /// Instances asked for or booting.
        count: u32,
        /// How long until the first should be ready, by the learned boot
        /// time (zero once overdue).
        ready_in: Duration,
    },
    /// Every pool that can run it has reached its `max`.
    PoolsAtMax {
        /// The pools, in chain order.
        pools: Vec<String>,
    },
    /// The fleet's `max_cost_per_hour` leaves no room for another instance.
    Budget,
    /// None of the above: the planner expects a slot to free up before the
    /// job's deadline (its class has slack), so it launches nothing yet.
    PlannerWaits {
        /// Time left before the job's deadline (zero once past it).
        slack: Duration,
    },
}

/// A tenant limit that blocks a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimit {
    /// `max_running_jobs`.
    RunningJobs {
        /// Running now.
        running: u32,
        /// The limit.
        max: u32,
    },
    /// `max_cpu_millis`.
    Cpu {
        /// In use now.
        used: u64,
        /// The limit.
        max: u64,
    },
    /// `max_memory_mib`.
    Memory {
        /// In use now.
        used: u64,
        /// The limit.
        max: u64,
    },
}

impl fmt::Display for Holdup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holdup::Stopping => write!(f, "the scheduler is stopping: no job starts"),
            Holdup::Quota { limit } => match limit {
                QuotaLimit::RunningJobs { running, max } => write!(
                    f,
                    "its tenant's quota: {running} of max_running_jobs = {max} running, and no burst left"
                ),
                QuotaLimit::Cpu { used, max } => write!(
                    f,
                    "its tenant's quota: {used} of max_cpu_millis = {max} in use, and no burst left"
                ),
                QuotaLimit::Memory { used, max } => write!(
                    f,
                    "its tenant's quota: {used} of max_memory_mib = {max} in use, and no burst left"
                ),
            },
            Holdup::SlotFree { pool } => write!(
                f,
                "a slot that fits is free in pool {pool}: it starts at the next dispatch unless jobs ahead take it"
            ),
            Holdup::Booting {
                pool,
                count,
                ready_in,
            } => write!(
                f,
                "waiting for {count} instance(s) booting in pool {pool}, the first ready in about {} s",
                ready_in.as_secs()
            ),
            Holdup::PoolsAtMax { pools } => write!(
                f,
                "every pool that can run it is at its max: {}",
                pools.join(", ")
            ),
            Holdup::Budget => write!(
                f,
                "the fleet's engine.max_cost_per_hour leaves no room for another instance"
            ),
            Holdup::PlannerWaits { slack } => write!(
                f,
                "the planner expects a slot to free up within the {} s left before its deadline, so it launches nothing for it yet",
                slack.as_secs()
            ),
        }
    }
}

impl Engine {
    /// Why `job` is where it is, as of `now`; `None` for a job the engine
    /// does not hold (finished, or never submitted).
    pub fn explain(&self, job: JobId, now: Timestamp) -> Option<Explanation> {
        let j = self.jobs.get(&job)?;
        let sig = self.sigs.get(j.sig);
        let target = self.class_target(j.class);
        let ahead_in_class = self
            .queue
            .nonempty_cells()
            .map(|c| self.queue.cell(c))
            .filter(|c| c.class == j.class)
            .map(|c| {
                c.jobs
                    .iter()
                    .filter(|r| (r.submitted, r.seq) < (j.submitted_at, j.seq) && r.job != job)
                    .count()
            })
            .sum();
        let pools: Vec<PoolChoice> = sig
            .chain
            .iter()
            .filter_map(|pid| {
                let pool = self.pools.get(pid.0 as usize)?;
                let status = self.pool_status(*pid)?;
                let booting_ready = pool
                    .workers
                    .iter()
                    .filter_map(|w| self.workers.get(w))
                    .filter(|w| matches!(w.state, WorkerState::Requested | WorkerState::Booting))
                    .map(|w| (w.requested_at + pool.boot_estimate).max(now))
                    .min();
                Some(PoolChoice {
                    pool: pool.config.name.clone(),
                    free_slots: pool.free_slots,
                    desired: pool.scaler.desired,
                    existing: status.physical(),
                    max: pool.config.max,
                    booting: status.requested + status.booting,
                    first_ready: booting_ready,
                })
            })
            .collect();
        let holdups = if j.state == JobState::Queued {
            self.holdups(j, &pools, now)
        } else {
            Vec::new()
        };
        Some(Explanation {
            job,
            tenant: j.tenant,
            class: j.class,
            state: j.state,
            attempts: j.attempts,
            waited: now.saturating_since(j.submitted_at),
            target,
            needs: sig.requirements.clone(),
            ahead_in_class,
            pools,
            holdups,
        })
    }

    fn holdups(&self, j: &crate::job::Job, pools: &[PoolChoice], now: Timestamp) -> Vec<Holdup> {
        let mut out = Vec::new();
        if self.stopping {
            out.push(Holdup::Stopping);
        }
        let tenant = &self.tenants[j.tenant.0 as usize];
        if tenant.allowance(j.cpu_millis, j.memory_mib) == Allowance::Blocked {
            let q = &tenant.config.quota;
            let u = tenant.usage;
            let limit = if let Some(max) = q.max_running_jobs.filter(|m| u.running_jobs >= *m) {
                QuotaLimit::RunningJobs {
                    running: u.running_jobs,
                    max,
                }
            } else if let Some(max) = q
                .max_cpu_millis
                .filter(|m| u.cpu_millis + u64::from(j.cpu_millis) > *m)
            {
                QuotaLimit::Cpu {
                    used: u.cpu_millis,
                    max,
                }
            } else {
                QuotaLimit::Memory {
                    used: u.memory_mib,
                    max: q.max_memory_mib.unwrap_or(0),
                }
            };
            out.push(Holdup::Quota { limit });
        }
        if let Some(pid) = self
            .sigs
            .get(j.sig)
            .chain
            .iter()
            .copied()
            .find(|p| self.pools[p.0 as usize].free_slots > 0)
            && self.best_fit(j.sig, j.cpu_millis, j.memory_mib).is_some()
        {
            out.push(Holdup::SlotFree {
                pool: self.pools[pid.0 as usize].config.name.clone(),
            });
        }
        if let Some((p, ready_at)) = pools
            .iter()
            .filter_map(|p| p.first_ready.map(|t| (p, t)))
            .min_by_key(|(_, t)| *t)
        {
            out.push(Holdup::Booting {
                pool: p.pool.clone(),
                count: p.booting,
                ready_in: ready_at.saturating_since(now),
            });
        }
        if !pools.is_empty() && pools.iter().all(|p| p.existing >= p.max) {
            out.push(Holdup::PoolsAtMax {
                pools: pools.iter().map(|p| p.pool.clone()).collect(),
            });
        } else if self.over_budget(pools) {
            out.push(Holdup::Budget);
        }
        if out.is_empty() {
            out.push(Holdup::PlannerWaits {
                slack: (j.submitted_at + self.class_target(j.class)).saturating_since(now),
            });
        }
        out
    }

    /// Whether the fleet's cost ceiling leaves no room for one more
    /// instance of any dynamic pool in `pools` that is below its max.
    fn over_budget(&self, pools: &[PoolChoice]) -> bool {
        let Some(budget) = self.config.max_cost_per_hour else {
            return false;
        };
        let rate: i64 = self.cost_rates().iter().map(|(_, _, r)| r.0.0).sum();
        let growable: Vec<&crate::config::PoolConfig> = self
            .pools
            .iter()
            .map(|p| &p.config)
            .filter(|c| matches!(c.kind, PoolKind::Dynamic { .. }))
            .filter(|c| pools.iter().any(|p| p.pool == c.name && p.existing < p.max))
            .collect();
        !growable.is_empty()
            && growable
                .iter()
                .all(|c| rate + c.on_demand_price.0.0 > budget.0.0)
    }
}
