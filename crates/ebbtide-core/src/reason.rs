//! Why the scaler did what it did.
//!
//! Every change of a pool's desired capacity is a [`ScaleDecision`] carrying
//! a [`ScaleReason`]. The server logs it as a structured line and counts it
//! in a metric labelled by [`ScaleReason::kind`], so an operator can always
//! answer "why did it scale?".

use std::fmt;
use std::time::Duration;

use crate::ids::PoolId;
use crate::time::Timestamp;

/// A change of a pool's desired instance count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleDecision {
    /// The pool.
    pub pool: PoolId,
    /// When it was decided.
    pub at: Timestamp,
    /// Desired instances before.
    pub from: u32,
    /// Desired instances now.
    pub to: u32,
    /// Instances that existed and were not on their way out.
    pub active: u32,
    /// Why.
    pub reason: ScaleReason,
}

impl ScaleDecision {
    /// `up`, `down` (or `none`, never emitted), for metric labels.
    pub fn direction(&self) -> &'static str {
        match self.to.cmp(&self.from) {
            std::cmp::Ordering::Greater => "up",
            std::cmp::Ordering::Less => "down",
            std::cmp::Ordering::Equal => "none",
        }
    }
}

/// The dominant cause of a desired-capacity change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleReason {
    /// Waiting jobs would miss their SLA with the capacity on hand.
    QueueDemand {
        /// Jobs routed to this pool.
        waiting: u32,
        /// Extra job slots needed to start them all within their SLA.
        slots_short: u32,
        /// Boot time the plan assumed.
        boot_estimate: Duration,
    },
    /// Jobs are already past or within one boot of their SLA target:
    /// scale now, cooldown or not.
    SlaEmergency {
        /// Jobs that will breach unless capacity arrives at once.
        at_risk: u32,
    },
    /// A static pool is kept at its warm size.
    WarmSize {
        /// The warm size.
        warm: u32,
    },
    /// A dynamic pool's floor (`min` plus `idle_count` spares).
    Floor {
        /// The floor.
        floor: u32,
    },
    /// Warm headroom: idle slots for jobs whose SLA target is shorter than
    /// a boot, sized from the upper tail of arrivals within one boot (the
    /// last half hour, and this hour of the week before).
    Headroom {
        /// Idle job slots kept on top of the busy ones.
        idle_slots: u32,
        /// Share of arrivals they should start at once, in thousandths.
        coverage_milli: u32,
    },
    /// Idle slots kept in the pool a chain prefers while later pools of
    /// the chain still run its spill-over, so that new jobs land here and
    /// the later pools' workers retire as they free up.
    TakeBack {
        /// Idle job slots kept on top of the busy ones.
        idle_slots: u32,
    },
    /// Pre-warming for the arrival rate learned for this hour of the week.
    Prewarm {
        /// Expected concurrent jobs (Little's law), in thousandths.
        expected_concurrent_milli: u64,
    },
    /// Demand fell: idle capacity is no longer needed.
    DemandFell {
        /// Idle job slots the queue does not need.
        surplus_slots: u32,
    },
    /// Wanted more, but the pool is at `max` (demand spills to the next pool).
    AtMax {
        /// What the plan wanted.
        wanted: u32,
    },
    /// Wanted more, but the fleet budget forbids it.
    Budget {
        /// What the plan wanted.
        wanted: u32,
    },
    /// Set from outside (external scaling mode).
    External,
}

impl ScaleReason {
    /// Stable, low-cardinality name for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ScaleReason::QueueDemand { .. } => "queue_demand",
            ScaleReason::SlaEmergency { .. } => "sla_emergency",
            ScaleReason::WarmSize { .. } => "warm_size",
            ScaleReason::Floor { .. } => "floor",
            ScaleReason::Headroom { .. } => "headroom",
            ScaleReason::TakeBack { .. } => "take_back",
            ScaleReason::Prewarm { .. } => "prewarm",
            ScaleReason::DemandFell { .. } => "demand_fell",
            ScaleReason::AtMax { .. } => "at_max",
            ScaleReason::Budget { .. } => "budget",
            ScaleReason::External => "external",
        }
    }
}

impl fmt::Display for ScaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleReason::QueueDemand {
                waiting,
                slots_short,
                boot_estimate,
            } => write!(
                f,
                "{waiting} jobs waiting; {slots_short} more slots needed to start them within SLA (boot ≈ {}s)",
                boot_estimate.as_secs()
            ),
            ScaleReason::SlaEmergency { at_risk } => {
                write!(
                    f,
                    "{at_risk} jobs breach their SLA unless capacity starts now (cooldown overridden)"
                )
            }
            ScaleReason::WarmSize { warm } => write!(f, "static pool kept at warm size {warm}"),
            ScaleReason::Floor { floor } => {
                write!(f, "pool floor of {floor} instances (min + idle_count)")
            }
            ScaleReason::Headroom {
                idle_slots,
                coverage_milli,
            } => write!(
                f,
                "{idle_slots} idle slots kept for jobs that cannot wait for a boot ({}.{}% of arrivals within one boot start at once)",
                coverage_milli / 10,
                coverage_milli % 10
            ),
            ScaleReason::TakeBack { idle_slots } => write!(
                f,
                "{idle_slots} idle slots kept to take back the jobs spilled to later, dearer pools of the chain"
            ),
            ScaleReason::Prewarm {
                expected_concurrent_milli,
            } => write!(
                f,
                "pre-warming for {}.{:03} expected concurrent jobs at this hour of the week",
                expected_concurrent_milli / 1000,
                expected_concurrent_milli % 1000
            ),
            ScaleReason::DemandFell { surplus_slots } => {
                write!(f, "{surplus_slots} idle slots not needed by the queue")
            }
            ScaleReason::AtMax { wanted } => {
                write!(f, "wanted {wanted} instances, capped at pool max")
            }
            ScaleReason::Budget { wanted } => {
                write!(f, "wanted {wanted} instances, capped by the fleet budget")
            }
            ScaleReason::External => write!(f, "desired size set by an external policy"),
        }
    }
}

/// Why a launch is on the market it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketReason {
    /// The pool's market policy: on-demand up to `on_demand_base`, then
    /// `spot_percent` of the rest on spot, in the cheapest open offerings.
    Policy,
    /// Spot was wanted, but every spot offering of the pool is locked after
    /// capacity errors until `until`, and jobs would miss their targets
    /// waiting for it: on-demand, at its premium, because the SLA needs it.
    SpotLocked {
        /// When the first spot offering opens again.
        until: Timestamp,
    },
}

impl MarketReason {
    /// A short stable name, for metric labels and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            MarketReason::Policy => "policy",
            MarketReason::SpotLocked { .. } => "spot_locked",
        }
    }
}

impl fmt::Display for MarketReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarketReason::Policy => {
                write!(f, "the pool's market policy (on-demand base, spot share)")
            }
            MarketReason::SpotLocked { until } => write!(
                f,
                "every spot offering is locked after capacity errors until {until}, and waiting would miss an SLA"
            ),
        }
    }
}
