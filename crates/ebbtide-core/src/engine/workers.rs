//! Worker events: launch outcomes, registration, liveness, draining,
//! reclamation, termination — and cost accrual, which follows them.

use std::time::Duration;

use super::pools::PoolState;
use super::{Engine, EngineError};
use crate::command::{Command, LossReason};
use crate::config::Billing;
use crate::cost::InstanceLifetime;
use crate::event::LaunchFailure;
use crate::ids::{InstanceId, JobId, TenantId, WorkerId};
use crate::job::{JobOutcome, JobState};
use crate::ledger::{Booking, InstanceFacts, day_spans};
use crate::money::CostAccum;
use crate::money::PricePerHour;
use crate::time::Timestamp;
use crate::worker::{DrainReason, Market, WorkerState, WorkerTransition};

/// Longest pause between launch attempts after repeated failures.
const MAX_LAUNCH_BACKOFF: Duration = Duration::from_secs(600);

impl Engine {
    /// The only door to a worker's state: refuses illegal transitions.
    pub(super) fn transition(
        &mut self,
        wid: WorkerId,
        via: WorkerTransition,
    ) -> Result<(), EngineError> {
        let w = self
            .workers
            .get_mut(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        w.transition(via)
            .map_err(|source| EngineError::IllegalTransition {
                worker: wid,
                source,
            })
    }

    fn expect_state(&self, wid: WorkerId, via: WorkerTransition) -> Result<(), EngineError> {
        let w = self
            .workers
            .get(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        w.state
            .apply(via)
            .map(|_| ())
            .map_err(|source| EngineError::IllegalTransition {
                worker: wid,
                source,
            })
    }

    pub(super) fn on_launched(
        &mut self,
        wid: WorkerId,
        instance: InstanceId,
        zone: Option<String>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.transition(wid, WorkerTransition::Launched)?;
        let w = self
            .workers
            .get_mut(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        let pool = &mut self.pools[w.pool.0 as usize];
        let cfg = &pool.config;
        w.rate = self.prices.lookup(
            &cfg.shape.name,
            w.market,
            zone.as_deref(),
            cfg.on_demand_price,
        );
        w.instance = Some(instance);
        w.zone = zone;
        w.zones_asked = Vec::new();
        w.launched_at = Some(now);
        w.last_heartbeat = now;
        w.last_accrual = now;
        pool.consecutive_failures = 0;
        Ok(())
    }

    pub(super) fn on_launch_failed(
        &mut self,
        workers: &[WorkerId],
        reason: LaunchFailure,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        for wid in workers {
            self.expect_state(*wid, WorkerTransition::LaunchFailed)?;
        }
        let Some(first) = workers.first().and_then(|w| self.workers.get(w)) else {
            return Ok(());
        };
        let (pool_id, market) = (first.pool, first.market);
        let zones_asked = first.zones_asked.clone();
        for wid in workers {
            self.transition(*wid, WorkerTransition::LaunchFailed)?;
            self.forget_worker(*wid);
        }
        let pool = &mut self.pools[pool_id.0 as usize];
        match (reason, market) {
            (
                LaunchFailure::Capacity | LaunchFailure::Quota | LaunchFailure::Incomplete,
                Market::Spot,
            ) => {
                // Lock the offerings that failed, not the pool: the re-plan
                // below tries the next cheapest zone before on-demand.
                let until = now + pool.config.market.spot_fallback_for;
                if zones_asked.is_empty() {
                    pool.spot_blocked_until = until;
                }
                for zone in zones_asked {
                    pool.zone_locked_until.insert(zone, until);
                }
            }
            _ => {
                let base = match reason {
                    LaunchFailure::Permanent => Duration::from_secs(30),
                    _ => Duration::from_secs(2),
                };
                let backoff = base
                    .saturating_mul(1 << pool.consecutive_failures.min(16))
                    .min(MAX_LAUNCH_BACKOFF);
                pool.consecutive_failures += 1;
                pool.launch_blocked_until = now + backoff;
            }
        }
        out.push(Command::LaunchFailed {
            pool: pool_id,
            market,
            reason,
            count: u32::try_from(workers.len()).unwrap_or(u32::MAX),
        });
        // Re-plan at once: a spot capacity error moves to the next spot
        // zone (or, with all locked and jobs at risk, to on-demand) now, not
        // one tick later.
        self.rescale(now, out)
    }

    pub(super) fn on_registered(
        &mut self,
        wid: WorkerId,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        self.transition(wid, WorkerTransition::Registered)?;
        let w = self
            .workers
            .get_mut(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        w.idle_since = now;
        w.last_heartbeat = now;
        let pool = &mut self.pools[w.pool.0 as usize];
        let boot = now.saturating_since(w.requested_at);
        pool.boot_estimate = PoolState::ewma(pool.boot_estimate, boot);
        if pool.recent_boots.len() == super::pools::RECENT_BOOTS {
            pool.recent_boots.pop_front();
        }
        pool.recent_boots.push_back(boot);
        self.reindex(wid);
        self.dispatch_all(now, out)
    }

    pub(super) fn on_heartbeat(
        &mut self,
        wid: WorkerId,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let w = self
            .workers
            .get_mut(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        w.last_heartbeat = w.last_heartbeat.max(now);
        Ok(())
    }

    /// An agent said what it holds. A job it runs that is placed on
    /// another worker (requeued while the agent was away) is stopped there,
    /// so it never runs twice; a job placed on this worker that the agent
    /// neither runs nor finished never reached it (an agent forgets a job
    /// only once its result is stored) and is delivered again, the same
    /// attempt. The session counts as a heartbeat.
    pub(super) fn on_session_opened(
        &mut self,
        wid: WorkerId,
        running: &[JobId],
        finished: &[JobId],
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        self.on_heartbeat(wid, now)?;
        for &job in running {
            let placed = self.jobs.get(&job).and_then(|j| j.state.worker());
            if placed != Some(wid) && !finished.contains(&job) {
                out.push(Command::StopJob { job, worker: wid });
            }
        }
        for &job in self.jobs_on(wid) {
            if running.contains(&job) || finished.contains(&job) {
                continue;
            }
            if let Some(attempt) = self.jobs.get(&job).map(|j| j.attempts) {
                out.push(Command::Redeliver {
                    job,
                    worker: wid,
                    attempt,
                });
            }
        }
        Ok(())
    }

    pub(super) fn on_lost(
        &mut self,
        wid: WorkerId,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        self.expect_state(wid, WorkerTransition::Lost)?;
        self.lose_worker(wid, LossReason::Reported, now, out)?;
        self.dispatch_all(now, out)
    }

    /// Marks a worker lost: its jobs go back to the queue and its instance is
    /// terminated so it cannot leak.
    fn lose_worker(
        &mut self,
        wid: WorkerId,
        reason: LossReason,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        if let Some(w) = self.workers.get(&wid) {
            out.push(Command::WorkerLost {
                pool: w.pool,
                worker: wid,
                reason,
                jobs: w.jobs.len() as u32,
            });
        }
        self.requeue_jobs_of(wid, now, out)?;
        self.transition(wid, WorkerTransition::Lost)?;
        self.reindex(wid);
        let w = self
            .workers
            .get(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        if let Some(instance) = w.instance.clone() {
            out.push(Command::Terminate {
                pool: w.pool,
                worker: wid,
                instance,
            });
        }
        Ok(())
    }

    fn requeue_jobs_of(
        &mut self,
        wid: WorkerId,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let jobs: Vec<JobId> = self
            .workers
            .get(&wid)
            .map(|w| w.jobs.clone())
            .unwrap_or_default();
        for j in jobs {
            let cancelled = self.jobs.get(&j).is_some_and(|x| x.cancel_requested);
            self.detach(j, wid, now)?;
            if cancelled {
                self.finish_cancelled(j, out);
            } else {
                self.requeue_or_abandon(j, out);
            }
        }
        Ok(())
    }

    fn finish_cancelled(&mut self, j: JobId, out: &mut Vec<Command>) {
        if let Some(job) = self.jobs.remove(&j) {
            self.stats.completed += 1;
            out.push(Command::Completed {
                job: j,
                tenant: job.tenant,
                outcome: JobOutcome::Cancelled,
                cost: job.cost.to_micros(),
            });
        }
    }

    pub(super) fn on_drain_ack(
        &mut self,
        wid: WorkerId,
        _now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let w = self
            .workers
            .get_mut(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        if w.state != WorkerState::Draining {
            return Err(EngineError::IllegalTransition {
                worker: wid,
                source: crate::worker::IllegalTransition {
                    from: w.state,
                    via: WorkerTransition::Terminate,
                },
            });
        }
        w.drain_acked = true;
        self.terminate_if_drained(wid, out)
    }

    /// A drained worker is terminated only once it acknowledged the drain
    /// and holds no job: never kill a busy runner.
    pub(super) fn terminate_if_drained(
        &mut self,
        wid: WorkerId,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let w = self
            .workers
            .get(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        if w.state == WorkerState::Draining && w.drain_acked && w.jobs.is_empty() {
            let (pool, instance) = (w.pool, w.instance.clone());
            self.transition(wid, WorkerTransition::Terminate)?;
            if let Some(instance) = instance {
                out.push(Command::Terminate {
                    pool,
                    worker: wid,
                    instance,
                });
            }
        }
        Ok(())
    }

    /// An operator's drain: refused for a worker that has not booted yet or
    /// is already on its way out (draining again is a no-op).
    pub(super) fn on_drain_requested(
        &mut self,
        wid: WorkerId,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let state = self
            .workers
            .get(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?
            .state;
        match state {
            WorkerState::Booting | WorkerState::Idle | WorkerState::Busy => {
                self.start_drain(wid, DrainReason::Operator, out)
            }
            WorkerState::Draining => Ok(()),
            state => Err(EngineError::CannotDrain { worker: wid, state }),
        }
    }

    /// Stops giving a worker work. A worker that never registered has no
    /// agent to acknowledge, holds no job, and is terminated at once.
    pub(super) fn start_drain(
        &mut self,
        wid: WorkerId,
        reason: DrainReason,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let w = self
            .workers
            .get_mut(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        if w.drain.is_some() {
            return Ok(());
        }
        w.drain = Some(reason);
        if w.state == WorkerState::Booting {
            let (pool, instance) = (w.pool, w.instance.clone());
            self.transition(wid, WorkerTransition::Terminate)?;
            if let Some(instance) = instance {
                out.push(Command::Terminate {
                    pool,
                    worker: wid,
                    instance,
                });
            }
        } else {
            self.transition(wid, WorkerTransition::Drain)?;
            out.push(Command::Drain {
                worker: wid,
                reason,
            });
        }
        self.reindex(wid);
        Ok(())
    }

    pub(super) fn on_terminated(
        &mut self,
        wid: WorkerId,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        self.expect_state(wid, WorkerTransition::Terminated)?;
        self.requeue_jobs_of(wid, now, out)?;
        // An instance gone before its minimum charge is billed the rest of
        // it, as idle time: the ledger books what the provider will bill.
        let billed_until = self.billed_until(wid, now);
        self.accrue(wid, billed_until);
        self.transition(wid, WorkerTransition::Terminated)?;
        self.reindex(wid);
        if let Some(w) = self.workers.get(&wid) {
            out.push(Command::InstanceCost(InstanceLifetime {
                worker: wid,
                instance: w.instance.clone(),
                pool: w.pool,
                market: w.market,
                zone: w.zone.clone(),
                launched_at: w.launched_at,
                ended_at: now,
                cost: w.cost.to_micros(),
                on_demand_cost: w.on_demand_cost.to_micros(),
                idle_cost: w.idle_cost.to_micros(),
                jobs_served: w.uses,
            }));
        }
        self.forget_worker(wid);
        self.stats.terminated += 1;
        self.dispatch_all(now, out)
    }

    /// When the provider stops billing an instance that ended at `ended`:
    /// then, or at the end of its minimum charge if that is later.
    fn billed_until(&self, wid: WorkerId, ended: Timestamp) -> Timestamp {
        let Some(w) = self.workers.get(&wid) else {
            return ended;
        };
        match (self.pools[w.pool.0 as usize].config.billing, w.launched_at) {
            (Billing::PerSecond { minimum }, Some(launched)) => ended.max(launched + minimum),
            _ => ended,
        }
    }

    fn forget_worker(&mut self, wid: WorkerId) {
        if let Some(w) = self.workers.remove(&wid) {
            self.pools[w.pool.0 as usize].workers.remove(&wid);
            self.ledger.retire(wid, w.instance, w.zone);
        }
    }

    pub(super) fn on_reclamation(
        &mut self,
        wid: WorkerId,
        deadline: Timestamp,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let w = self
            .workers
            .get_mut(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        if !matches!(
            w.state,
            WorkerState::Booting | WorkerState::Idle | WorkerState::Busy | WorkerState::Draining
        ) {
            return Err(EngineError::IllegalTransition {
                worker: wid,
                source: crate::worker::IllegalTransition {
                    from: w.state,
                    via: WorkerTransition::Drain,
                },
            });
        }
        w.reclaim_deadline = Some(deadline);
        let mean = self.pools[w.pool.0 as usize].mean_job_duration;
        let doomed: Vec<JobId> = w
            .jobs
            .iter()
            .filter(|j| {
                self.jobs.get(j).is_some_and(|job| {
                    let started = match job.state {
                        JobState::Running { since, .. } => since,
                        JobState::Assigned { at, .. } => at,
                        JobState::Queued => now,
                    };
                    started + job.expected_duration.unwrap_or(mean) > deadline
                })
            })
            .copied()
            .collect();
        for j in doomed {
            let cancelled = self.jobs.get(&j).is_some_and(|x| x.cancel_requested);
            self.detach(j, wid, now)?;
            out.push(Command::StopJob {
                job: j,
                worker: wid,
            });
            if cancelled {
                self.finish_cancelled(j, out);
            } else {
                // Stopped by us, not failed: the attempt does not count.
                if let Some(job) = self.jobs.get_mut(&j) {
                    job.attempts = job.attempts.saturating_sub(1);
                }
                self.requeue_or_abandon(j, out);
            }
        }
        if self.workers.get(&wid).is_some_and(|w| w.drain.is_none()) {
            self.start_drain(wid, DrainReason::Reclamation, out)?;
        } else {
            self.terminate_if_drained(wid, out)?;
        }
        self.dispatch_all(now, out)?;
        // Launch the replacement now, before the instance disappears.
        self.rescale(now, out)
    }

    /// Boot timeouts and missed heartbeats.
    pub(super) fn expire_workers(
        &mut self,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let hb = self.config.heartbeat_timeout;
        let expired: Vec<(WorkerId, LossReason)> = self
            .workers
            .values()
            .filter_map(|w| match w.state {
                WorkerState::Booting => {
                    let boot_timeout = self.pools[w.pool.0 as usize].config.boot_timeout;
                    let booting_for = now.saturating_since(w.launched_at?);
                    (booting_for > boot_timeout)
                        .then_some((w.id, LossReason::BootTimeout { booting_for }))
                }
                WorkerState::Idle | WorkerState::Busy | WorkerState::Draining => {
                    let silent_for = now.saturating_since(w.last_heartbeat);
                    (silent_for > hb).then_some((w.id, LossReason::MissedHeartbeats { silent_for }))
                }
                _ => None,
            })
            .collect();
        for (wid, reason) in expired {
            self.lose_worker(wid, reason, now, out)?;
        }
        Ok(())
    }

    pub(super) fn on_price(
        &mut self,
        shape: &str,
        market: Market,
        zone: Option<String>,
        price: PricePerHour,
        now: Timestamp,
    ) {
        self.prices.set(shape, market, zone.as_deref(), price);
        let affected: Vec<WorkerId> = self
            .workers
            .values()
            .filter(|w| {
                w.market == market
                    && w.launched_at.is_some()
                    && self.pools[w.pool.0 as usize].config.shape.name == shape
            })
            .filter(|w| zone.is_none() || w.zone == zone)
            .map(|w| w.id)
            .collect();
        for wid in affected {
            self.accrue(wid, now);
            if let Some(w) = self.workers.get_mut(&wid) {
                let cfg = &self.pools[w.pool.0 as usize].config;
                w.rate = self.prices.lookup(
                    &cfg.shape.name,
                    w.market,
                    w.zone.as_deref(),
                    cfg.on_demand_price,
                );
            }
        }
    }

    /// Books the cost of a worker since its last accrual, split exactly
    /// between the jobs in its slots and idle waste, and cut at UTC
    /// midnights into the ledger's daily lines.
    pub(super) fn accrue(&mut self, wid: WorkerId, now: Timestamp) {
        let Some(w) = self.workers.get_mut(&wid) else {
            return;
        };
        if w.launched_at.is_none() || now <= w.last_accrual || w.state == WorkerState::Terminated {
            return;
        }
        let from = w.last_accrual;
        w.last_accrual = now;
        let w = &self.workers[&wid];
        let cfg = &self.pools[w.pool.0 as usize].config;
        let od_rate = self.prices.lookup(
            &cfg.shape.name,
            Market::OnDemand,
            w.zone.as_deref(),
            cfg.on_demand_price,
        );
        let cap = cfg.capacity_per_instance;
        let busy = u32::try_from(w.jobs.len()).unwrap_or(u32::MAX).min(cap);
        let facts = InstanceFacts::of(w, cap);
        let mut total = CostAccum::ZERO;
        let mut on_demand = CostAccum::ZERO;
        let mut idle = CostAccum::ZERO;
        // Every job holds one slot, so each gets the same share of a span.
        let mut job_share = CostAccum::ZERO;
        for (day, start, end) in day_spans(from.as_millis(), now.as_millis()) {
            let dt = Duration::from_millis(end - start);
            let span = w.rate.cost_for(dt);
            let span_od = od_rate.cost_for(dt);
            let (share, remainder) = span.split(cap);
            let (od_share, od_remainder) = span_od.split(cap);
            let span_idle = share.times(cap - busy) + remainder;
            for tenant in w
                .jobs
                .iter()
                .filter_map(|j| self.jobs.get(j))
                .map(|j| j.tenant)
            {
                let booking = Booking {
                    cost: share,
                    on_demand_cost: od_share,
                    slot_millis: end - start,
                    ..Booking::default()
                };
                self.ledger.book(day, facts, Some(tenant), booking);
            }
            job_share += share;
            let idle_booking = Booking {
                cost: span_idle,
                on_demand_cost: od_share.times(cap - busy) + od_remainder,
                slot_millis: (end - start) * u64::from(cap - busy),
                idle_millis: if busy == 0 { end - start } else { 0 },
                jobs_started: 0,
            };
            self.ledger.book(day, facts, None, idle_booking);
            total += span;
            on_demand += span_od;
            idle += span_idle;
        }
        let (pool, market) = (w.pool, w.market);
        for j in &w.jobs {
            if let Some(job) = self.jobs.get_mut(j) {
                job.cost += job_share;
                let t = job.tenant.0 as usize;
                self.costs.by_tenant[t] += job_share;
                self.tenants[t].add_spend(now, job_share);
            }
        }
        if let Some(w) = self.workers.get_mut(&wid) {
            w.cost += total;
            w.on_demand_cost += on_demand;
            w.idle_cost += idle;
        }
        self.costs.fleet += total;
        self.costs.on_demand_equivalent += on_demand;
        self.costs.idle += idle;
        self.costs.by_pool[pool.0 as usize] += total;
        if market == Market::Spot {
            self.costs.spot += total;
        }
    }

    /// Records in the ledger that `worker` started a job of `tenant`.
    pub(super) fn book_job_start(&mut self, wid: WorkerId, tenant: TenantId, now: Timestamp) {
        let Some(w) = self.workers.get(&wid) else {
            return;
        };
        let capacity = self.pools[w.pool.0 as usize].config.capacity_per_instance;
        let facts = InstanceFacts::of(w, capacity);
        let booking = Booking {
            jobs_started: 1,
            ..Booking::default()
        };
        self.ledger
            .book(now.utc_day(), facts, Some(tenant), booking);
    }
}
