//! Adoption: a restarted scheduler takes back the workers that outlived it,
//! so the jobs they run continue instead of running a second time.

use super::{Engine, EngineError};
use crate::command::Command;
use crate::event::Adoption;
use crate::job::{JobSpec, JobState};
use crate::time::Timestamp;
use crate::worker::{Worker, WorkerTransition};

/// How long an adopted worker's agent may take to reconnect, on top of the
/// heartbeat timeout, before it is declared lost. While the scheduler was
/// down the agent backed off to its ceiling (5 s, with jitter of up to as
/// much again), so its next attempt can come up to 10 s after the restart.
/// Declaring it lost sooner would run its jobs a second time, though they
/// ran on, or had already finished, in the container that outlived us.
const ADOPTED_RECONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Engine {
    pub(super) fn on_adopted(
        &mut self,
        adoption: Adoption,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let Adoption {
            worker,
            pool,
            instance,
            zone,
            market,
            running,
            accrue_from,
        } = adoption;
        if self.workers.contains_key(&worker) {
            return Err(EngineError::AlreadyKnown(worker));
        }
        if pool.0 as usize >= self.pools.len() {
            return Err(EngineError::UnknownPool(pool));
        }
        let state = &self.pools[pool.0 as usize];
        if state.workers.len() >= state.config.max as usize {
            return Err(EngineError::PoolAtMax(pool));
        }
        self.reserve_worker_ids(worker);
        self.workers
            .insert(worker, Worker::requested(worker, pool, market, now));
        let state = &mut self.pools[pool.0 as usize];
        state.workers.insert(worker);
        // Before the first plan the pool's desired size is what it was
        // given back, so the first decision after a restart starts from
        // the adopted fleet (and a fleet already the right size needs none).
        if !state.scaler.decided_once {
            state.scaler.desired += 1;
        }
        self.on_launched(worker, instance, zone, now)?;
        self.transition(worker, WorkerTransition::Registered)?;
        if let Some(w) = self.workers.get_mut(&worker) {
            w.idle_since = now;
            w.last_heartbeat = now + ADOPTED_RECONNECT_GRACE;
            if let Some(from) = accrue_from.filter(|t| *t < now) {
                w.launched_at = Some(from);
                w.last_accrual = from;
            }
        }
        self.reindex(worker);
        for spec in running {
            self.adopt_job(spec, worker, now, out)?;
        }
        // Slots the adopted worker has left over serve the queue at once.
        self.dispatch_all(now, out)
    }

    /// Places a job that is already running on `worker` without sending it
    /// there again: the `Assign` the normal path emits is swallowed. A job
    /// the current configuration can no longer represent (its tenant or
    /// class was removed) is rejected and stopped on the worker.
    fn adopt_job(
        &mut self,
        spec: JobSpec,
        worker: crate::ids::WorkerId,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        let sig = match self.admit(&spec, now, false) {
            Ok(sig) => sig,
            Err(reason) => {
                self.reject(spec.id, reason, out);
                out.push(Command::StopJob {
                    job: spec.id,
                    worker,
                });
                return Ok(());
            }
        };
        let job = self.new_job(&spec, sig, now);
        self.jobs.insert(spec.id, job);
        let mut placed = Vec::new();
        self.assign(spec.id, worker, now, &mut placed)?;
        out.extend(
            placed
                .into_iter()
                .filter(|c| !matches!(c, Command::Assign { job, .. } if *job == spec.id)),
        );
        if let Some(j) = self.jobs.get_mut(&spec.id) {
            j.state = JobState::Running { worker, since: now };
            // The attempt that runs there was counted by the run that made
            // it; taking it back is not a new one.
            j.attempts = spec.attempts.max(1);
        }
        Ok(())
    }
}
