//! Scaling policies to compare: Ebbtide's planner and honest models of the
//! autoscalers operators run today (see `docs/simulator.md` for the
//! documentation each model follows).

use std::time::Duration;

use ebbtide_core::{Engine, EngineConfig, PoolId, ScalingMode, Timestamp};
use serde::Serialize;

/// A scaling policy and its main knobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Policy {
    /// The engine's own SLA-aware planner, default settings.
    Ebbtide,
    /// A static fleet of `instances` per pool.
    Fixed {
        /// Instances kept at all times.
        instances: u32,
    },
    /// GitLab Runner taskscaler: keep `idle_count` idle slots, retire an
    /// instance idle for `idle_time`, recycle after `max_use_count` jobs.
    IdleCount {
        /// Idle slots kept ready.
        idle_count: u32,
        /// Idle time before an instance is removed.
        #[serde(with = "secs")]
        idle_time: Duration,
        /// Jobs per instance before it is replaced.
        max_use_count: Option<u32>,
    },
    /// Ephemeral runners (terraform-aws-github-runner style): one fresh
    /// instance per queued job, terminated after it, plus `warm` pre-booted.
    PerJob {
        /// Idle runners kept booted (the module's "pool").
        warm: u32,
    },
    /// Buildkite agent-scaler: desired = ceil((waiting + running) /
    /// `jobs_per_instance`); scale out at once, scale in after a cooldown.
    QueueTarget {
        /// Jobs per instance.
        jobs_per_instance: u32,
        /// Minimum time between a change and a scale-in.
        #[serde(with = "secs")]
        scale_in_cooldown: Duration,
    },
}

mod secs {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

impl Policy {
    /// Short label for tables and charts.
    pub fn label(&self) -> String {
        match self {
            Policy::Ebbtide => "ebbtide".into(),
            Policy::Fixed { instances } => format!("fixed({instances})"),
            Policy::IdleCount {
                idle_count,
                idle_time,
                max_use_count,
            } => format!(
                "idle-count({idle_count}, {}s{})",
                idle_time.as_secs(),
                max_use_count
                    .map(|m| format!(", max_use {m}"))
                    .unwrap_or_default()
            ),
            Policy::PerJob { warm } => format!("per-job(warm {warm})"),
            Policy::QueueTarget {
                jobs_per_instance,
                scale_in_cooldown,
            } => {
                format!(
                    "queue-target({jobs_per_instance}/inst, {}s)",
                    scale_in_cooldown.as_secs()
                )
            }
        }
    }

    /// Adapts the engine configuration: baselines run in external mode with
    /// the pool knobs their systems have.
    pub fn prepare(&self, cfg: &mut EngineConfig) {
        if *self == Policy::Ebbtide {
            return;
        }
        cfg.scaling_mode = ScalingMode::External;
        for pool in &mut cfg.pools {
            match self {
                Policy::Ebbtide => {}
                Policy::Fixed { .. } => pool.idle_timeout = Duration::from_secs(365 * 86_400),
                Policy::IdleCount {
                    idle_time,
                    max_use_count,
                    ..
                } => {
                    pool.idle_timeout = *idle_time;
                    pool.max_uses = *max_use_count;
                }
                Policy::PerJob { .. } => {
                    pool.max_uses = Some(1);
                    pool.idle_timeout = Duration::ZERO;
                }
                Policy::QueueTarget { .. } => pool.idle_timeout = Duration::ZERO,
            }
        }
    }
}

/// Per-run state of a baseline policy.
#[derive(Debug, Clone)]
pub struct PolicyState {
    policy: Policy,
    last_change: Vec<Option<Timestamp>>,
    last_desired: Vec<u32>,
}

impl PolicyState {
    /// Fresh state for `pools` pools.
    pub fn new(policy: Policy, pools: usize) -> Self {
        PolicyState {
            policy,
            last_change: vec![None; pools],
            last_desired: vec![0; pools],
        }
    }

    /// Desired instances of `pool` now, or `None` for Ebbtide (the engine
    /// plans itself). Baselines see only what their real counterparts see:
    /// queue length and busy/idle counts.
    pub fn desired(&mut self, engine: &Engine, pool: PoolId, now: Timestamp) -> Option<u32> {
        let status = engine.pool_status(pool)?;
        let cfg = &engine.config().pools[pool.0 as usize];
        let cap = cfg.capacity_per_instance.max(1);
        let busy_slots = (status.idle + status.busy) * cap - status.free_slots;
        let queued = u32::try_from(engine.queued_jobs()).unwrap_or(u32::MAX);
        let i = pool.0 as usize;
        let want = match self.policy {
            Policy::Ebbtide => return None,
            Policy::Fixed { instances } => instances,
            Policy::IdleCount { idle_count, .. } => {
                (busy_slots + queued + idle_count).div_ceil(cap)
            }
            Policy::PerJob { warm } => busy_slots + queued + warm,
            Policy::QueueTarget {
                jobs_per_instance,
                scale_in_cooldown,
            } => {
                let target = (queued + busy_slots).div_ceil(jobs_per_instance.max(1));
                let previous = self.last_desired[i];
                let cooled = self.last_change[i]
                    .is_none_or(|t| now.saturating_since(t) >= scale_in_cooldown);
                if target < previous && !cooled {
                    previous
                } else {
                    target
                }
            }
        };
        if want != self.last_desired[i] {
            self.last_change[i] = Some(now);
            self.last_desired[i] = want;
        }
        Some(want.min(cfg.max))
    }
}
