//! What an operator reads about the fleet: each worker as the engine keeps
//! it, with its cost so far. Read-only and allocating; for status pages,
//! not the hot path.

use super::Engine;
use crate::ids::{InstanceId, JobId, PoolId, WorkerId};
use crate::money::{Micros, PricePerHour};
use crate::time::Timestamp;
use crate::worker::{DrainReason, Market, WorkerState};

/// One worker as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    /// Its id.
    pub id: WorkerId,
    /// The pool it belongs to.
    pub pool: PoolId,
    /// Where it is in its life.
    pub state: WorkerState,
    /// Spot or on-demand.
    pub market: Market,
    /// The provider's instance, once launched.
    pub instance: Option<InstanceId>,
    /// Its zone, once known.
    pub zone: Option<String>,
    /// Jobs holding its slots now (assigned or running).
    pub jobs: Vec<JobId>,
    /// When the engine decided to launch it.
    pub requested_at: Timestamp,
    /// When its instance came up (uptime counts from here).
    pub launched_at: Option<Timestamp>,
    /// Jobs it was given over its life.
    pub jobs_served: u32,
    /// Spent on it so far, up to `now`.
    pub cost: Micros,
    /// What it costs per hour.
    pub rate: PricePerHour,
    /// Why it drains, when it does.
    pub drain: Option<DrainReason>,
}

impl Engine {
    /// Every worker not yet forgotten, in id order, with its cost up to
    /// `now` (what is booked plus the time since its last accrual).
    pub fn worker_views(&self, now: Timestamp) -> Vec<WorkerView> {
        self.workers
            .values()
            .map(|w| {
                let mut cost = w.cost;
                if w.launched_at.is_some()
                    && w.state != WorkerState::Terminated
                    && now > w.last_accrual
                {
                    cost += w.rate.cost_for(now.saturating_since(w.last_accrual));
                }
                WorkerView {
                    id: w.id,
                    pool: w.pool,
                    state: w.state,
                    market: w.market,
                    instance: w.instance.clone(),
                    zone: w.zone.clone(),
                    jobs: w.jobs.clone(),
                    requested_at: w.requested_at,
                    launched_at: w.launched_at,
                    jobs_served: w.uses,
                    cost: cost.to_micros(),
                    rate: w.rate,
                    drain: w.drain,
                }
            })
            .collect()
    }
}
