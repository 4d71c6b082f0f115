//! Self-checks over the whole engine state. Cheap enough for property tests
//! after every event; far too slow for production ticks.

use std::collections::BTreeSet;

use super::Engine;
use crate::ids::JobId;
use crate::job::JobState;
use crate::tenant::{Allowance, Usage};
use crate::worker::WorkerState;

pub(super) fn check(e: &Engine) -> Result<(), String> {
    check_queue(e)?;
    check_workers(e)?;
    check_tenants(e)?;
    check_maximal_dispatch(e)
}

fn check_queue(e: &Engine) -> Result<(), String> {
    let mut queued = BTreeSet::new();
    for c in e.queue.nonempty_cells() {
        for r in &e.queue.cell(c).jobs {
            if !queued.insert(r.job) {
                return Err(format!("{} queued twice", r.job));
            }
            let j = e
                .jobs
                .get(&r.job)
                .ok_or_else(|| format!("queued {} unknown", r.job))?;
            if j.state != JobState::Queued {
                return Err(format!("{} in queue but {:?}", r.job, j.state));
            }
        }
    }
    let expected = e
        .jobs
        .values()
        .filter(|j| j.state == JobState::Queued)
        .count();
    if queued.len() != expected || e.queue.len() != expected {
        return Err(format!(
            "queue holds {} (len {}), {} jobs are Queued",
            queued.len(),
            e.queue.len(),
            expected
        ));
    }
    Ok(())
}

fn check_workers(e: &Engine) -> Result<(), String> {
    let mut held: BTreeSet<JobId> = BTreeSet::new();
    for w in e.workers.values() {
        let pool = &e.pools[w.pool.0 as usize];
        if w.jobs.len() > pool.config.capacity_per_instance as usize {
            return Err(format!(
                "{} holds {} jobs, capacity {}",
                w.id,
                w.jobs.len(),
                pool.config.capacity_per_instance
            ));
        }
        if !w.jobs.is_empty() && !matches!(w.state, WorkerState::Busy | WorkerState::Draining) {
            return Err(format!("{} holds jobs in state {:?}", w.id, w.state));
        }
        if w.state == WorkerState::Busy && w.jobs.is_empty() {
            return Err(format!("{} busy without jobs", w.id));
        }
        for j in &w.jobs {
            if !held.insert(*j) {
                return Err(format!("{j} held by two workers"));
            }
            match e.jobs.get(j).map(|x| x.state.worker()) {
                Some(Some(owner)) if owner == w.id => {}
                other => return Err(format!("{} holds {j} whose state names {other:?}", w.id)),
            }
        }
    }
    let running = e
        .jobs
        .values()
        .filter(|j| j.state != JobState::Queued)
        .count();
    if running != held.len() {
        return Err(format!(
            "{running} jobs assigned/running, workers hold {}",
            held.len()
        ));
    }
    for (i, p) in e.pools.iter().enumerate() {
        if p.workers.len() > p.config.max as usize {
            return Err(format!(
                "pool {i} has {} instances, max {}",
                p.workers.len(),
                p.config.max
            ));
        }
        let free: u32 = p
            .workers
            .iter()
            .filter_map(|w| e.workers.get(w))
            .filter(|w| {
                matches!(w.state, WorkerState::Idle | WorkerState::Busy) && w.drain.is_none()
            })
            .map(|w| p.config.capacity_per_instance - w.jobs.len() as u32)
            .sum();
        if free != p.free_slots || p.available.len() > p.workers.len() {
            return Err(format!(
                "pool {i} index says {} free slots, workers say {free}",
                p.free_slots
            ));
        }
    }
    Ok(())
}

fn check_tenants(e: &Engine) -> Result<(), String> {
    for (i, t) in e.tenants.iter().enumerate() {
        let mut u = Usage::default();
        let mut queued = 0;
        for j in e.jobs.values().filter(|j| j.tenant.0 as usize == i) {
            if j.state == JobState::Queued {
                queued += 1;
            } else {
                u.running_jobs += 1;
                u.cpu_millis += u64::from(j.cpu_millis);
                u.memory_mib += u64::from(j.memory_mib);
            }
        }
        if u != t.usage || queued != t.queued {
            return Err(format!(
                "tenant {i}: usage {:?}/{} recorded, {u:?}/{queued} actual",
                t.usage, t.queued
            ));
        }
        if !t.within_ceiling() {
            return Err(format!("tenant {i} above its quota ceiling: {u:?}"));
        }
    }
    Ok(())
}

/// No queued job that its tenant may run fits a free slot (unless the
/// engine is stopping, when nothing is dispatched on purpose).
fn check_maximal_dispatch(e: &Engine) -> Result<(), String> {
    if e.stopping {
        return Ok(());
    }
    for c in e.queue.nonempty_cells() {
        let cell = e.queue.cell(c);
        let Some(head) = cell.jobs.front() else {
            continue;
        };
        let j = &e.jobs[&head.job];
        let mut tenant = e.tenants[cell.tenant.0 as usize].clone();
        tenant.advance(e.clock);
        if tenant.allowance(j.cpu_millis, j.memory_mib) != Allowance::Blocked
            && let Some(w) = e.best_fit(j.sig, j.cpu_millis, j.memory_mib)
        {
            return Err(format!(
                "{} waits while {w} has a fitting free slot",
                head.job
            ));
        }
    }
    Ok(())
}
