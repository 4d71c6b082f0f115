//! Job events: admission, cancellation, start, finish, requeue.

use super::{Engine, EngineError};
use crate::command::{Command, Rejection};
use crate::config::HeadroomPolicy;
use crate::ids::{JobId, WorkerId};
use crate::job::{Job, JobOutcome, JobSpec, JobState};
use crate::money::CostAccum;
use crate::queue::QueuedRef;
use crate::requirements::SignatureId;
use crate::tenant::Allowance;
use crate::time::Timestamp;
use crate::worker::{WorkerState, WorkerTransition};

impl Engine {
    pub(super) fn on_submit(
        &mut self,
        spec: JobSpec,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let sig = match self.admit(&spec, now, true) {
            Ok(sig) => sig,
            Err(reason) => {
                self.reject(spec.id, reason, out);
                return Ok(());
            }
        };
        let job = self.new_job(&spec, sig, now);
        let (cpu, mem) = (job.cpu_millis, job.memory_mib);
        self.jobs.insert(spec.id, job);
        if spec.attempts >= spec.max_attempts {
            // Handed back by a restarted scheduler after its last allowed
            // attempt was lost with its worker: no further run.
            self.complete(spec.id, JobOutcome::Lost, out);
            return Ok(());
        }
        // Dispatch is maximal before this event, so no queued job can use a
        // free slot this job fits: taking one directly respects the order.
        let tenant = &mut self.tenants[spec.tenant.0 as usize];
        tenant.advance(now);
        let allowed = tenant.allowance(cpu, mem) != Allowance::Blocked;
        if allowed
            && !self.stopping
            && let Some(worker) = self.best_fit(sig, cpu, mem)
        {
            return self.assign(spec.id, worker, now, out);
        }
        self.enqueue(spec.id);
        Ok(())
    }

    /// Refuses a job at the door, with the reason the submitter is told.
    pub(super) fn reject(&mut self, job: JobId, reason: Rejection, out: &mut Vec<Command>) {
        self.stats.rejected += 1;
        out.push(Command::Rejected { job, reason });
    }

    /// The engine's record of a job it has just admitted; counts it as
    /// submitted and feeds the arrival forecast of its first pool.
    pub(super) fn new_job(&mut self, spec: &JobSpec, sig: SignatureId, now: Timestamp) -> Job {
        self.stats.submitted += 1;
        let weight = self.tenants[spec.tenant.0 as usize].config.weight;
        let tag = self.queue.next_tag(spec.class, spec.tenant, weight);
        let seq = self.alloc_seq();
        let req = &self.sigs.get(sig).requirements;
        let job = Job {
            tenant: spec.tenant,
            class: spec.class,
            sig,
            cpu_millis: req.cpu_millis,
            memory_mib: req.memory_mib,
            submitted_at: spec.submitted_at.map_or(now, |t| t.min(now)),
            seq,
            tag,
            attempts: spec.attempts,
            max_attempts: spec.max_attempts,
            expected_duration: spec.expected_duration,
            state: JobState::Queued,
            cancel_requested: false,
            cost: CostAccum::ZERO,
        };
        if let Some(first) = self.sigs.get(sig).chain.first().copied() {
            let exposure = self.headroom_exposure(first);
            let pool = &mut self.pools[first.0 as usize];
            pool.forecast.observe(now);
            pool.recent_arrivals.observe(now);
            if let (Some(exposure), HeadroomPolicy::Auto { coverage_milli }) =
                (exposure, pool.config.headroom)
            {
                pool.headroom.observe(now, exposure, coverage_milli);
            }
        }
        job
    }

    /// Checks everything that can refuse a job at the door. `at_door` is
    /// false for a job an earlier run already admitted and that is running
    /// (adoption): queue length and daily spend no longer apply to it, only
    /// that the engine can still represent it.
    pub(super) fn admit(
        &mut self,
        spec: &JobSpec,
        now: Timestamp,
        at_door: bool,
    ) -> Result<SignatureId, Rejection> {
        let tenant = self
            .tenants
            .get_mut(spec.tenant.0 as usize)
            .ok_or(Rejection::UnknownTenant(spec.tenant))?;
        if usize::from(spec.class.0) >= self.config.classes.len() {
            return Err(Rejection::UnknownClass(spec.class.0));
        }
        if self.jobs.contains_key(&spec.id) {
            return Err(Rejection::DuplicateJob);
        }
        if spec.max_attempts == 0 {
            return Err(Rejection::NoAttempts);
        }
        let quota = tenant.config.quota;
        if let Some(limit) = quota.max_queued_jobs
            && at_door
            && tenant.queued >= limit
        {
            return Err(Rejection::QueueFull {
                queued: tenant.queued,
                limit,
            });
        }
        if at_door && tenant.over_daily_spend(now) {
            let limit = quota.max_daily_spend.unwrap_or_default();
            return Err(Rejection::DailySpendReached { limit });
        }
        // Most submissions arrive with canonical labels: borrow them rather
        // than clone on the hot path.
        let normalized;
        let req = if spec.requirements.labels.windows(2).all(|w| w[0] < w[1]) {
            &spec.requirements
        } else {
            normalized = spec.requirements.clone().normalized();
            &normalized
        };
        let pct = tenant.config.burst.map_or(100, |b| b.multiplier_percent);
        let over = |need: u64, max: Option<u64>| {
            max.is_some_and(|m| need > m.saturating_mul(u64::from(pct)) / 100)
        };
        if over(u64::from(req.cpu_millis), quota.max_cpu_millis)
            || over(u64::from(req.memory_mib), quota.max_memory_mib)
            || quota.max_running_jobs == Some(0)
        {
            return Err(Rejection::LargerThanQuota);
        }
        let sig = self.sigs.intern(req, &self.config.pools);
        if self.sigs.get(sig).chain.is_empty() {
            return Err(Rejection::NoPoolCanServe {
                labels: req.labels.clone(),
                cpu_millis: req.cpu_millis,
                memory_mib: req.memory_mib,
            });
        }
        Ok(sig)
    }

    fn enqueue(&mut self, id: JobId) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.state = JobState::Queued;
        let r = QueuedRef {
            submitted: j.submitted_at,
            seq: j.seq,
            tag: j.tag,
            job: id,
        };
        self.queue.push(j.class, j.sig, j.tenant, r);
        self.tenants[j.tenant.0 as usize].queued += 1;
    }

    pub(super) fn on_cancel(
        &mut self,
        id: JobId,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let job = self.jobs.get_mut(&id).ok_or(EngineError::UnknownJob(id))?;
        match job.state {
            JobState::Queued => {
                let (c, s, t, at, seq) =
                    (job.class, job.sig, job.tenant, job.submitted_at, job.seq);
                self.queue.remove(c, s, t, at, seq);
                self.tenants[t.0 as usize].queued -= 1;
                self.complete(id, JobOutcome::Cancelled, out);
            }
            JobState::Assigned { worker, .. } | JobState::Running { worker, .. } => {
                if !job.cancel_requested {
                    job.cancel_requested = true;
                    out.push(Command::StopJob { job: id, worker });
                }
            }
        }
        let _ = now;
        Ok(())
    }

    pub(super) fn on_started(
        &mut self,
        id: JobId,
        wid: WorkerId,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let job = self.jobs.get_mut(&id).ok_or(EngineError::UnknownJob(id))?;
        match job.state {
            JobState::Assigned { worker, .. } if worker == wid => {
                job.state = JobState::Running { worker, since: now };
                Ok(())
            }
            JobState::Running { worker, .. } if worker == wid => Ok(()),
            JobState::Queued => Err(EngineError::WrongJobState {
                job: id,
                state: job.state,
                action: "start",
            }),
            _ => Err(EngineError::NotOnWorker {
                job: id,
                worker: wid,
            }),
        }
    }

    pub(super) fn on_finished(
        &mut self,
        id: JobId,
        wid: WorkerId,
        outcome: JobOutcome,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let job = self.jobs.get(&id).ok_or(EngineError::UnknownJob(id))?;
        if job.state.worker() != Some(wid) {
            return Err(EngineError::NotOnWorker {
                job: id,
                worker: wid,
            });
        }
        if let (JobState::Running { since, .. }, JobOutcome::Succeeded | JobOutcome::Failed) =
            (job.state, outcome)
        {
            let pool = self.workers.get(&wid).map(|w| w.pool);
            if let Some(p) = pool {
                let p = &mut self.pools[p.0 as usize];
                p.mean_job_duration =
                    super::pools::PoolState::ewma(p.mean_job_duration, now.saturating_since(since));
            }
        }
        let cancelled = job.cancel_requested;
        self.detach(id, wid, now)?;
        if let Some(pid) = self.workers.get(&wid).map(|w| w.pool) {
            // A slot freed here takes the next arrival as an idle one would.
            let exposure = self.headroom_exposure(pid);
            let pool = &mut self.pools[pid.0 as usize];
            if let (Some(exposure), HeadroomPolicy::Auto { coverage_milli }) =
                (exposure, pool.config.headroom)
            {
                pool.headroom.freed(now, exposure, coverage_milli);
            }
        }
        match outcome {
            JobOutcome::Lost if !cancelled => self.requeue_or_abandon(id, out),
            JobOutcome::Lost | JobOutcome::Cancelled => {
                self.complete(id, JobOutcome::Cancelled, out)
            }
            other => self.complete(id, other, out),
        }
        self.after_slot_freed(wid, now, out)?;
        self.dispatch_all(now, out)
    }

    /// Takes back assignments no worker confirmed within
    /// `assignment_timeout`: the worker is told to stop the job (in case it
    /// did start and the confirmation was lost) and it is requeued.
    pub(super) fn expire_assignments(
        &mut self,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let limit = self.config.assignment_timeout;
        let mut expired: Vec<(JobId, WorkerId, std::time::Duration)> = self
            .jobs
            .iter()
            .filter_map(|(id, j)| match j.state {
                JobState::Assigned { worker, at } if now.saturating_since(at) > limit => {
                    Some((*id, worker, now.saturating_since(at)))
                }
                _ => None,
            })
            .collect();
        expired.sort_by_key(|(id, _, _)| *id);
        for (job, worker, waited) in expired {
            out.push(Command::AssignmentExpired {
                job,
                worker,
                waited,
            });
            out.push(Command::StopJob { job, worker });
            let cancelled = self.jobs.get(&job).is_some_and(|j| j.cancel_requested);
            self.detach(job, worker, now)?;
            if cancelled {
                self.complete(job, JobOutcome::Cancelled, out);
            } else {
                self.requeue_or_abandon(job, out);
            }
            self.after_slot_freed(worker, now, out)?;
        }
        Ok(())
    }

    /// Takes a job off its worker, releasing the slot and the tenant quota.
    pub(super) fn detach(
        &mut self,
        id: JobId,
        wid: WorkerId,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.accrue(wid, now);
        let job = self.jobs.get(&id).ok_or(EngineError::UnknownJob(id))?;
        let (tenant, cpu, mem) = (job.tenant, job.cpu_millis, job.memory_mib);
        let w = self
            .workers
            .get_mut(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        w.jobs.retain(|j| *j != id);
        w.used_cpu -= cpu;
        w.used_mem -= mem;
        let t = &mut self.tenants[tenant.0 as usize];
        t.advance(now);
        t.release(cpu, mem);
        Ok(())
    }

    /// After a slot freed: a worker with no job left goes idle, or retires
    /// if it was draining and has acknowledged.
    pub(super) fn after_slot_freed(
        &mut self,
        wid: WorkerId,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let Some(w) = self.workers.get_mut(&wid) else {
            return Ok(());
        };
        if w.jobs.is_empty() {
            match w.state {
                WorkerState::Busy => {
                    w.idle_since = now;
                    self.transition(wid, WorkerTransition::JobsDone)?;
                }
                WorkerState::Draining => self.terminate_if_drained(wid, out)?,
                _ => {}
            }
        }
        self.reindex(wid);
        Ok(())
    }

    /// Puts a job whose attempt the infrastructure lost back in the queue,
    /// at its original place, or gives up once attempts are exhausted.
    pub(super) fn requeue_or_abandon(&mut self, id: JobId, out: &mut Vec<Command>) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.attempts >= job.max_attempts {
            self.complete(id, JobOutcome::Lost, out);
            return;
        }
        let attempts = job.attempts;
        self.enqueue(id);
        self.stats.requeued += 1;
        out.push(Command::Requeued { job: id, attempts });
    }

    fn complete(&mut self, id: JobId, outcome: JobOutcome, out: &mut Vec<Command>) {
        if let Some(job) = self.jobs.remove(&id) {
            self.stats.completed += 1;
            out.push(Command::Completed {
                job: id,
                tenant: job.tenant,
                outcome,
                cost: job.cost.to_micros(),
            });
        }
    }
}
