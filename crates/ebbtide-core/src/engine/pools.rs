//! Per-pool runtime state: the free-slot index, learned timings, scaler
//! memory and launch back-off.

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use crate::config::{PoolConfig, PoolKind};
use crate::forecast::{ArrivalForecast, RecentArrivals};
use crate::headroom::Headroom;
use crate::ids::WorkerId;
use crate::money::PricePerHour;
use crate::time::Timestamp;
use crate::worker::WorkerState;

/// Key of a worker with free slots: fullest first (packing leaves whole
/// workers idle so they can retire), then cheapest (spot before on-demand,
/// so the expensive ones go idle and retire first), then most recently
/// active (so the longest-idle ones age out), then id for determinism.
pub(super) type AvailableKey = (u32, i64, Reverse<Timestamp>, WorkerId);

/// Sort key for the order pools are filled in.
pub(super) fn fill_order_key(p: &PoolConfig, index: u32) -> (bool, u32, PricePerHour, u32) {
    (
        matches!(p.kind, PoolKind::Dynamic { .. }),
        p.preference,
        p.on_demand_price,
        index,
    )
}

#[derive(Debug, Clone)]
pub(super) struct PoolState {
    pub config: PoolConfig,
    /// Every worker of the pool that is not yet terminated.
    pub workers: BTreeSet<WorkerId>,
    /// Workers taking work with at least one free slot.
    pub available: BTreeSet<AvailableKey>,
    /// Sum of free slots in `available`.
    pub free_slots: u32,
    pub scaler: ScalerMemory,
    pub boot_estimate: Duration,
    pub mean_job_duration: Duration,
    /// Spot locked pool-wide after a capacity error, for providers that
    /// publish no zonal spot prices (so there is no offering to lock).
    pub spot_blocked_until: Timestamp,
    /// Spot offerings (zones) locked after a capacity error, until when:
    /// the next launch tries the next cheapest zone instead of the pool
    /// going on-demand.
    pub zone_locked_until: std::collections::BTreeMap<String, Timestamp>,
    pub launch_blocked_until: Timestamp,
    pub consecutive_failures: u32,
    pub forecast: ArrivalForecast,
    pub recent_arrivals: RecentArrivals,
    /// Arrivals within one boot, for warm headroom.
    pub headroom: Headroom,
    /// The last boots (request to registration), newest last: the share
    /// short enough for a target decides how much headroom it needs.
    pub recent_boots: VecDeque<Duration>,
}

/// What the scaler remembers between ticks to damp its decisions.
#[derive(Debug, Clone, Default)]
pub(super) struct ScalerMemory {
    pub desired: u32,
    pub decided_once: bool,
    pub last_up: Option<Timestamp>,
    /// Recent raw recommendations, for scale-down stabilization.
    pub recent: VecDeque<(Timestamp, u32)>,
}

/// Boots remembered per pool.
pub(super) const RECENT_BOOTS: usize = 64;

impl PoolState {
    pub fn new(config: PoolConfig, default_job_duration: Duration) -> Self {
        PoolState {
            boot_estimate: config.boot_estimate,
            mean_job_duration: default_job_duration,
            config,
            workers: BTreeSet::new(),
            available: BTreeSet::new(),
            free_slots: 0,
            scaler: ScalerMemory::default(),
            spot_blocked_until: Timestamp::EPOCH,
            zone_locked_until: std::collections::BTreeMap::new(),
            launch_blocked_until: Timestamp::EPOCH,
            consecutive_failures: 0,
            forecast: ArrivalForecast::default(),
            recent_arrivals: RecentArrivals::default(),
            headroom: Headroom::default(),
            recent_boots: VecDeque::new(),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.config.capacity_per_instance
    }

    /// Moves an exponentially weighted average a quarter of the way to a
    /// new observation.
    pub fn ewma(current: Duration, observed: Duration) -> Duration {
        (current * 3 + observed) / 4
    }
}

/// A pool's state for status pages and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Desired instances from the last plan.
    pub desired: u32,
    /// Workers by state.
    pub requested: u32,
    /// Instances booting.
    pub booting: u32,
    /// Registered, no job.
    pub idle: u32,
    /// Running jobs.
    pub busy: u32,
    /// Draining.
    pub draining: u32,
    /// Being terminated.
    pub terminating: u32,
    /// Lost, termination pending.
    pub lost: u32,
    /// Free job slots.
    pub free_slots: u32,
    /// Learned boot time.
    pub boot_estimate: Duration,
    /// Learned mean job run time.
    pub mean_job_duration: Duration,
}

impl PoolStatus {
    pub(super) fn count(&mut self, s: WorkerState) {
        match s {
            WorkerState::Requested => self.requested += 1,
            WorkerState::Booting => self.booting += 1,
            WorkerState::Idle => self.idle += 1,
            WorkerState::Busy => self.busy += 1,
            WorkerState::Draining => self.draining += 1,
            WorkerState::Terminating => self.terminating += 1,
            WorkerState::Lost => self.lost += 1,
            WorkerState::Terminated => {}
        }
    }

    /// Instances that exist in any state (what counts against `max`).
    pub fn physical(&self) -> u32 {
        self.requested
            + self.booting
            + self.idle
            + self.busy
            + self.draining
            + self.terminating
            + self.lost
    }
}
