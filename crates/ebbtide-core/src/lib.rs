//! # ebbtide-core
//!
//! The sans-IO heart of Ebbtide: queueing, fair share, SLAs, matching,
//! scaling plans and the cost model, as one deterministic state machine.
//! Adapters turn the world into [`Event`]s; [`Engine::handle`] turns each
//! event into [`Command`]s; adapters carry the commands out and report the
//! outcomes as new events.
//!
//! This crate must never depend on an async runtime, a clock, the network,
//! the file system or randomness: time arrives as the `now` argument, and
//! every container iterated for a decision is ordered, so the same events
//! always give the same commands. That is what lets the simulator replay a
//! month of CI traffic in seconds through this very code.

pub mod command;
pub mod config;
pub mod cost;
pub mod engine;
pub mod event;
pub mod forecast;
pub mod headroom;
pub mod ids;
pub mod job;
pub mod ledger;
pub mod money;
pub mod planner;
pub(crate) mod queue;
pub mod reason;
pub mod requirements;
pub mod tenant;
pub mod time;
pub mod worker;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use command::{Command, LossReason, Rejection};
pub use config::{
    Billing, BurstConfig, ClassConfig, ConfigError, EngineConfig, HeadroomPolicy, MarketPolicy,
    PoolConfig, PoolKind, PrewarmConfig, ScalingMode, ScalingPolicy, Shape, TenantConfig,
    TenantQuota,
};
pub use cost::{CostTotals, InstanceLifetime, PriceTable};
pub use engine::{
    Engine, EngineError, Explanation, Holdup, PoolChoice, PoolStatus, QueueStat, QuotaLimit,
    ReconfigureError, Stats, WorkerView,
};
pub use event::{Adoption, Event, LaunchFailure};
pub use ids::{ClassId, InstanceId, JobId, PoolId, TenantId, WorkerId};
pub use job::{JobOutcome, JobSpec, JobState};
pub use ledger::{LedgerKey, LedgerLine};
pub use money::{CostAccum, Micros, PricePerHour};
pub use reason::{MarketReason, ScaleDecision, ScaleReason};
pub use requirements::Requirements;
pub use time::Timestamp;
pub use worker::{DrainReason, Market, WorkerState};
