//! Workers and their lifecycle state machine.
//!
//! ```text
//! Requested → Booting → Idle ⇄ Busy → Draining → Terminating → Terminated
//!                  └────────── Lost (missed heartbeats / boot timeout) ─┘
//! ```
//!
//! Every change goes through [`WorkerState::apply`], which either returns
//! the next state or an [`IllegalTransition`]; the engine never assigns a
//! state directly, so an impossible transition is an error, not a log line.

use crate::ids::{InstanceId, JobId, PoolId, WorkerId};
use crate::money::{CostAccum, PricePerHour};
use crate::time::Timestamp;

/// Lifecycle state of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkerState {
    /// Launch asked of the provider, no instance yet.
    Requested,
    /// Instance exists, agent not registered yet.
    Booting,
    /// Registered, no job.
    Idle,
    /// Running at least one job.
    Busy,
    /// Takes no new job; retires once empty and acknowledged.
    Draining,
    /// Terminate sent to the provider.
    Terminating,
    /// Gone; the final state.
    Terminated,
    /// Stopped answering; its jobs were requeued and its instance is being
    /// terminated so nothing leaks.
    Lost,
}

impl WorkerState {
    /// The name status pages show.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Requested => "requested",
            WorkerState::Booting => "booting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Draining => "draining",
            WorkerState::Terminating => "terminating",
            WorkerState::Terminated => "terminated",
            WorkerState::Lost => "lost",
        }
    }
}

/// Something that happens to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerTransition {
    /// The provider created the instance.
    Launched,
    /// The provider could not create it.
    LaunchFailed,
    /// The agent registered.
    Registered,
    /// A job took one of its slots.
    JobAssigned,
    /// Its last job left.
    JobsDone,
    /// Stop giving it work.
    Drain,
    /// Send it to the provider for termination.
    Terminate,
    /// The provider confirmed it is gone.
    Terminated,
    /// It stopped answering or never booted.
    Lost,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("worker in state {from:?} cannot take transition {via:?}")]
pub struct IllegalTransition {
    /// State the worker was in.
    pub from: WorkerState,
    /// Transition that was refused.
    pub via: WorkerTransition,
}

impl WorkerState {
    /// The state after `via`, or why it cannot happen.
    pub fn apply(self, via: WorkerTransition) -> Result<WorkerState, IllegalTransition> {
        use WorkerState as S;
        use WorkerTransition as T;
        let next = match (self, via) {
            (S::Requested, T::Launched) => S::Booting,
            (S::Requested, T::LaunchFailed) => S::Terminated,
            (S::Booting, T::Registered) => S::Idle,
            (S::Idle | S::Busy, T::JobAssigned) => S::Busy,
            (S::Busy, T::JobsDone) => S::Idle,
            (S::Booting | S::Idle | S::Busy, T::Drain) => S::Draining,
            // A never-registered or idle worker holds no job: it may go
            // straight to termination. Busy workers must drain first.
            (S::Booting | S::Idle | S::Draining, T::Terminate) => S::Terminating,
            (S::Terminating | S::Lost, T::Terminated) => S::Terminated,
            // The provider may report an instance gone at any time.
            (S::Booting | S::Idle | S::Busy | S::Draining, T::Terminated) => S::Terminated,
            (S::Booting | S::Idle | S::Busy | S::Draining | S::Terminating, T::Lost) => S::Lost,
            (from, via) => return Err(IllegalTransition { from, via }),
        };
        Ok(next)
    }

    /// Whether the instance physically exists (or may, while requested):
    /// these count against the pool's `max`.
    pub fn is_physical(self) -> bool {
        !matches!(self, WorkerState::Terminated)
    }

    /// Whether it counts as capacity the pool will have (not on its way out).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            WorkerState::Requested | WorkerState::Booting | WorkerState::Idle | WorkerState::Busy
        )
    }
}

/// Which market an instance was bought on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Market {
    /// Interruptible, discounted capacity.
    Spot,
    /// Full price, not interruptible.
    OnDemand,
}

impl Market {
    /// The market's one spelling everywhere Ebbtide writes it: instance
    /// tags, metric labels, the cost ledger and reports.
    pub fn name(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::OnDemand => "on-demand",
        }
    }

    /// The market `name` spells, if it spells one.
    pub fn from_name(name: &str) -> Option<Market> {
        [Market::Spot, Market::OnDemand]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// Why a worker is being drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    /// Not needed any more (idle past its timeout, above desired size).
    ScaleIn,
    /// Reached the pool's `max_uses`.
    WornOut,
    /// The provider is about to reclaim it.
    Reclamation,
    /// An operator asked for it (maintenance, a machine that misbehaves).
    Operator,
}

impl DrainReason {
    /// The name status pages and logs show.
    pub fn name(self) -> &'static str {
        match self {
            DrainReason::ScaleIn => "scale_in",
            DrainReason::WornOut => "worn_out",
            DrainReason::Reclamation => "reclamation",
            DrainReason::Operator => "operator",
        }
    }
}

/// The engine's record of one worker.
#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub id: WorkerId,
    pub pool: PoolId,
    pub state: WorkerState,
    pub market: Market,
    pub instance: Option<InstanceId>,
    pub zone: Option<String>,
    /// The zones its launch asked for, until the instance exists: a
    /// capacity error locks exactly these offerings.
    pub zones_asked: Vec<String>,
    pub requested_at: Timestamp,
    pub launched_at: Option<Timestamp>,
    pub last_heartbeat: Timestamp,
    /// When the worker last became fully idle (for longest-idle retirement).
    pub idle_since: Timestamp,
    pub jobs: Vec<JobId>,
    pub used_cpu: u32,
    pub used_mem: u32,
    pub uses: u32,
    pub drain: Option<DrainReason>,
    pub drain_acked: bool,
    pub reclaim_deadline: Option<Timestamp>,
    pub rate: PricePerHour,
    pub last_accrual: Timestamp,
    pub cost: CostAccum,
    pub on_demand_cost: CostAccum,
    pub idle_cost: CostAccum,
    /// The key under which the worker sits in its pool's free-slot index.
    pub indexed: Option<(u32, i64, Timestamp)>,
}

impl Worker {
    /// A worker the engine has just decided to launch.
    pub fn requested(id: WorkerId, pool: PoolId, market: Market, now: Timestamp) -> Self {
        Worker {
            id,
            pool,
            state: WorkerState::Requested,
            market,
            instance: None,
            zone: None,
            zones_asked: Vec::new(),
            requested_at: now,
            launched_at: None,
            last_heartbeat: now,
            idle_since: now,
            jobs: Vec::new(),
            used_cpu: 0,
            used_mem: 0,
            uses: 0,
            drain: None,
            drain_acked: false,
            reclaim_deadline: None,
            rate: PricePerHour::ZERO,
            last_accrual: now,
            cost: CostAccum::ZERO,
            on_demand_cost: CostAccum::ZERO,
            idle_cost: CostAccum::ZERO,
            indexed: None,
        }
    }

    /// Moves through the state machine; the only way state changes.
    pub fn transition(&mut self, via: WorkerTransition) -> Result<(), IllegalTransition> {
        self.state = self.state.apply(via)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerState as S;
    use super::WorkerTransition as T;

    #[test]
    fn a_market_reads_back_from_the_name_it_writes() {
        for m in [super::Market::Spot, super::Market::OnDemand] {
            assert_eq!(super::Market::from_name(m.name()), Some(m));
        }
        assert_eq!(super::Market::from_name("ondemand"), None);
    }

    #[test]
    fn a_busy_worker_cannot_be_terminated_without_draining() {
        let err = S::Busy
            .apply(T::Terminate)
            .expect_err("busy workers must drain first");
        assert_eq!(err.from, S::Busy);
    }

    #[test]
    fn the_happy_path_reaches_terminated() {
        let mut s = S::Requested;
        for t in [
            T::Launched,
            T::Registered,
            T::JobAssigned,
            T::JobsDone,
            T::Drain,
            T::Terminate,
            T::Terminated,
        ] {
            s = s.apply(t).expect("legal");
        }
        assert_eq!(s, S::Terminated);
    }

    #[test]
    fn terminated_is_final() {
        for t in [
            T::Launched,
            T::Registered,
            T::JobAssigned,
            T::Drain,
            T::Lost,
            T::Terminated,
        ] {
            assert!(S::Terminated.apply(t).is_err(), "{t:?}");
        }
    }

    #[test]
    fn a_requested_worker_cannot_register_before_launch() {
        assert!(S::Requested.apply(T::Registered).is_err());
    }
}
