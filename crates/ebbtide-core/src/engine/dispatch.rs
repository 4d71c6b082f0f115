//! Matching queued jobs to free slots.
//!
//! Order: jobs within one lead time of their deadline first, whatever
//! their class, earliest deadline first (they are the ones the planner
//! launched capacity for; a slow class's job at its deadline must not lose
//! the worker booted for it to a fast class's job that still has slack,
//! nor must fairness make it breach). Then the effective priority band
//! (class rank, promoted one band for every SLA target a job has waited, so
//! no job starves behind a busy class); inside a band, native jobs before
//! promoted ones, then the weighted-fair finish tag, then submission order. Placement: the first pool of the job's
//! chain (static pools first) with a fitting free slot, on its fullest
//! worker.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::{Engine, EngineError};
use crate::command::Command;
use crate::ids::{JobId, WorkerId};
use crate::job::JobState;
use crate::planner::lead_time;
use crate::queue::CellId;
use crate::requirements::SignatureId;
use crate::tenant::Allowance;
use crate::time::Timestamp;
use crate::worker::{DrainReason, WorkerState, WorkerTransition};

/// Dispatch order of a cell's head job; smaller goes first:
/// (0 if urgent else 1, deadline if urgent else 0, band, class, tag, seq, cell).
type HeadKey = (u8, u64, u8, u8, u64, u64, CellId);

impl Engine {
    /// Assigns queued jobs to free slots until no allowed job fits any free
    /// slot. Restores dispatch maximality after any event that frees a slot
    /// or lifts a quota.
    pub(super) fn dispatch_all(
        &mut self,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        if self.stopping || self.total_free_slots() == 0 || self.queue.len() == 0 {
            return Ok(());
        }
        let mut heap: BinaryHeap<Reverse<HeadKey>> = self
            .queue
            .nonempty_cells()
            .filter(|c| self.sig_has_free_slot(self.queue.cell(*c).sig))
            .filter_map(|c| self.head_key(c, now))
            .map(Reverse)
            .collect();
        while let Some(Reverse(key)) = heap.pop() {
            let cell = key.6;
            let Some(head) = self.queue.cell(cell).jobs.front().copied() else {
                continue;
            };
            let (sig, tenant, cpu, mem) = {
                let j = &self.jobs[&head.job];
                (j.sig, j.tenant, j.cpu_millis, j.memory_mib)
            };
            let t = &mut self.tenants[tenant.0 as usize];
            t.advance(now);
            if t.allowance(cpu, mem) == Allowance::Blocked {
                continue;
            }
            let Some(worker) = self.best_fit(sig, cpu, mem) else {
                continue;
            };
            self.queue.pop_head(cell);
            self.tenants[tenant.0 as usize].queued -= 1;
            self.assign(head.job, worker, now, out)?;
            if self.total_free_slots() == 0 {
                break;
            }
            if let Some(k) = self.head_key(cell, now) {
                heap.push(Reverse(k));
            }
        }
        Ok(())
    }

    fn head_key(&self, cell: CellId, now: Timestamp) -> Option<HeadKey> {
        let c = self.queue.cell(cell);
        let head = c.jobs.front()?;
        let target = self.class_target(c.class).as_millis().max(1);
        let waited = now.saturating_since(head.submitted).as_millis();
        let promotions = u8::try_from(waited / target).unwrap_or(u8::MAX);
        let band = c.class.0.saturating_sub(promotions);
        let deadline = head.submitted + self.class_target(c.class);
        let boot = self
            .sigs
            .get(c.sig)
            .chain
            .first()
            .map_or(Duration::ZERO, |p| self.pools[p.0 as usize].boot_estimate);
        let urgent = deadline <= now + lead_time(boot);
        let (flag, by) = if urgent {
            (0, deadline.as_millis())
        } else {
            (1, 0)
        };
        Some((flag, by, band, c.class.0, head.tag, head.seq, cell))
    }

    pub(super) fn total_free_slots(&self) -> u32 {
        self.pools.iter().map(|p| p.free_slots).sum()
    }

    pub(super) fn sig_has_free_slot(&self, sig: SignatureId) -> bool {
        self.sigs
            .get(sig)
            .chain
            .iter()
            .any(|p| self.pools[p.0 as usize].free_slots > 0)
    }

    /// The fullest worker, in the most preferred pool, with room for the job.
    pub(super) fn best_fit(&self, sig: SignatureId, cpu: u32, mem: u32) -> Option<WorkerId> {
        for pid in &self.sigs.get(sig).chain {
            let pool = &self.pools[pid.0 as usize];
            if pool.free_slots == 0 {
                continue;
            }
            let shape = &pool.config.shape;
            let fits = pool.available.iter().find(|(_, _, _, w)| {
                let w = &self.workers[w];
                shape.cpu_millis.saturating_sub(w.used_cpu) >= cpu
                    && shape.memory_mib.saturating_sub(w.used_mem) >= mem
            });
            if let Some((_, _, _, w)) = fits {
                return Some(*w);
            }
        }
        None
    }

    /// Puts a job on a worker. The job must already be out of the queue.
    /// Tells the headroom of the job's first pool whether a job it exists
    /// for (its class's target is shorter than a launch at arrival can
    /// meet) started in time: the plan's online correction.
    fn note_first_start(
        &mut self,
        sig: SignatureId,
        class: crate::ids::ClassId,
        waited: Duration,
        now: Timestamp,
    ) {
        let Some(pid) = self.sigs.get(sig).chain.first().copied() else {
            return;
        };
        let target = self.class_target(class);
        let pool = &mut self.pools[pid.0 as usize];
        if pool.config.headroom != crate::config::HeadroomPolicy::Off
            && target < lead_time(pool.boot_estimate)
        {
            pool.headroom.started(now, waited > target);
        }
    }

    pub(super) fn assign(
        &mut self,
        job_id: JobId,
        wid: WorkerId,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Result<(), EngineError> {
        self.accrue(wid, now);
        let job = self
            .jobs
            .get_mut(&job_id)
            .ok_or(EngineError::UnknownJob(job_id))?;
        job.state = JobState::Assigned {
            worker: wid,
            at: now,
        };
        job.attempts += 1;
        let attempt = job.attempts;
        let first_start =
            (attempt == 1).then(|| (job.sig, job.class, now.saturating_since(job.submitted_at)));
        self.queue.served(job.class, job.tag);
        let (tenant, cpu, mem) = (job.tenant, job.cpu_millis, job.memory_mib);
        if let Some((sig, class, waited)) = first_start {
            self.note_first_start(sig, class, waited, now);
        }
        let t = &mut self.tenants[tenant.0 as usize];
        t.advance(now);
        t.take(cpu, mem);
        let w = self
            .workers
            .get_mut(&wid)
            .ok_or(EngineError::UnknownWorker(wid))?;
        w.jobs.push(job_id);
        w.used_cpu += cpu;
        w.used_mem += mem;
        w.uses += 1;
        let worn_out = self.pools[w.pool.0 as usize]
            .config
            .max_uses
            .is_some_and(|m| w.uses >= m);
        self.transition(wid, WorkerTransition::JobAssigned)?;
        self.book_job_start(wid, tenant, now);
        out.push(Command::Assign {
            job: job_id,
            worker: wid,
            attempt,
        });
        self.stats.assignments += 1;
        if worn_out {
            self.start_drain(wid, DrainReason::WornOut, out)?;
        }
        self.reindex(wid);
        Ok(())
    }

    /// Keeps the pool's free-slot index in step with a worker's state.
    pub(super) fn reindex(&mut self, wid: WorkerId) {
        let Some(w) = self.workers.get_mut(&wid) else {
            return;
        };
        let pool = &mut self.pools[w.pool.0 as usize];
        if let Some((free, rate, since)) = w.indexed.take() {
            pool.available.remove(&(free, rate, Reverse(since), wid));
            pool.free_slots -= free;
        }
        let cap = pool.config.capacity_per_instance;
        let free = cap.saturating_sub(u32::try_from(w.jobs.len()).unwrap_or(u32::MAX));
        let takes_work =
            matches!(w.state, WorkerState::Idle | WorkerState::Busy) && w.drain.is_none();
        if takes_work && free > 0 {
            let rate = w.rate.0.0;
            pool.available
                .insert((free, rate, Reverse(w.idle_since), wid));
            pool.free_slots += free;
            w.indexed = Some((free, rate, w.idle_since));
        }
    }
}
