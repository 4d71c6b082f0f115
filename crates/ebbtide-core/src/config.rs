//! The engine's configuration: classes, tenants and pools.
//!
//! These are plain validated values. Parsing TOML and pointing at line
//! numbers is the server's job; here [`EngineConfig::validate`] checks the
//! semantic rules and names the offending key path, so every front end
//! reports the same precise errors.

use std::time::Duration;

use crate::money::{Micros, PricePerHour};

/// Everything the engine needs to know that does not change per event.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Priority classes, most urgent first; the index is the class rank.
    pub classes: Vec<ClassConfig>,
    /// Tenants that may submit jobs.
    pub tenants: Vec<TenantConfig>,
    /// Worker pools the engine may scale.
    pub pools: Vec<PoolConfig>,
    /// A worker silent for longer than this is lost and its jobs requeued.
    pub heartbeat_timeout: Duration,
    /// A job assigned to a worker that does not confirm it started within
    /// this long is taken back: the worker is told to stop it and it is
    /// requeued (an attempt that counts), so a lost or ignored assignment
    /// never holds a job forever.
    pub assignment_timeout: Duration,
    /// Fleet-wide cost ceiling; scale-ups stop at it (warm minimums excepted).
    pub max_cost_per_hour: Option<PricePerHour>,
    /// Prior for job run time until the engine has observed real ones.
    pub default_job_duration: Duration,
    /// Who decides desired capacity.
    pub scaling_mode: ScalingMode,
}

/// Who decides how many instances each pool should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScalingMode {
    /// Ebbtide's SLA-aware planner (the default).
    #[default]
    Planner,
    /// An outside policy sends `Event::SetDesired`; the engine launches,
    /// retires and dispatches but does not plan. Used for dry runs and for
    /// the simulator's baseline policies.
    External,
}

/// A priority class and the wait it promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassConfig {
    /// Name used in APIs and metrics, e.g. `critical`.
    pub name: String,
    /// A job of this class should start within this time of submission.
    pub sla_target: Duration,
}

impl ClassConfig {
    /// The planning defaults: critical 5 min, high 15 min, medium 1 h,
    /// low 4 h, best-effort 24 h.
    pub fn defaults() -> Vec<ClassConfig> {
        [
            ("critical", 5 * 60),
            ("high", 15 * 60),
            ("medium", 3600),
            ("low", 4 * 3600),
            ("best-effort", 24 * 3600),
        ]
        .into_iter()
        .map(|(name, secs)| ClassConfig {
            name: name.to_string(),
            sla_target: Duration::from_secs(secs),
        })
        .collect()
    }
}

/// A tenant: its fair share and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    /// Name used in APIs and metrics.
    pub name: String,
    /// Relative share of capacity under contention (weighted fair queuing).
    pub weight: u32,
    /// Limits; `None` fields are unlimited.
    pub quota: TenantQuota,
    /// Permission to run above the concurrency quota for a while.
    pub burst: Option<BurstConfig>,
}

/// Tenant limits. Submission-time (hard) limits reject; concurrency limits
/// leave jobs queued until the tenant's running work drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantQuota {
    /// Concurrency: job slots (workers, in single-slot pools) at once.
    pub max_running_jobs: Option<u32>,
    /// Concurrency: CPU in millicores across running jobs.
    pub max_cpu_millis: Option<u64>,
    /// Concurrency: memory in MiB across running jobs.
    pub max_memory_mib: Option<u64>,
    /// Hard: jobs waiting at once; more are rejected at submission.
    pub max_queued_jobs: Option<u32>,
    /// Hard: spend attributed to the tenant per UTC day; once reached, new
    /// submissions are rejected until the next day.
    pub max_daily_spend: Option<Micros>,
}

/// A token bucket that lets a tenant exceed its concurrency quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstConfig {
    /// How far above quota a burst may go, in percent of the quota (200 = 2×).
    pub multiplier_percent: u32,
    /// How long a full bucket sustains a burst.
    pub duration: Duration,
    /// How long an empty bucket takes to refill while under quota.
    pub refill: Duration,
}

/// A worker pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Name used in APIs and metrics.
    pub name: String,
    /// Which provider launches its workers.
    pub provider: String,
    /// Static (pre-warmed) or dynamic sizing.
    pub kind: PoolKind,
    /// Hard ceiling on instances that exist at once, in any state.
    pub max: u32,
    /// What every instance of the pool looks like.
    pub shape: Shape,
    /// Labels the workers offer; a job's labels must be a subset.
    pub labels: Vec<String>,
    /// Jobs one worker runs at once.
    pub capacity_per_instance: u32,
    /// Spot/on-demand mix.
    pub market: MarketPolicy,
    /// An idle worker is retired after this long when not needed.
    pub idle_timeout: Duration,
    /// Jobs a worker runs before it is recycled (`None`: forever).
    pub max_uses: Option<u32>,
    /// A worker not registered this long after launch is lost.
    pub boot_timeout: Duration,
    /// Prior boot time until boots have been observed.
    pub boot_estimate: Duration,
    /// Lower is filled first; demand spills over to the next compatible pool.
    pub preference: u32,
    /// Cooldowns and stabilization.
    pub scaling: ScalingPolicy,
    /// How the provider bills, for bill-aware scale-in.
    pub billing: Billing,
    /// Learned pre-warming from arrival history, if enabled.
    pub prewarm: Option<PrewarmConfig>,
    /// Idle workers kept for arrivals that cannot wait for a boot.
    pub headroom: HeadroomPolicy,
    /// On-demand list price of the shape, used until a price update arrives
    /// and as the baseline for savings.
    pub on_demand_price: PricePerHour,
}

/// How a pool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Always `warm` workers, replaced as they retire, so jobs start at once.
    Static {
        /// Workers kept alive at all times.
        warm: u32,
    },
    /// Grows and shrinks with the queue.
    Dynamic {
        /// Never fewer instances than this.
        min: u32,
        /// Spare idle instances kept ready above what the queue needs.
        idle_count: u32,
    },
}

/// What one instance provides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Provider's name for it (`m5.large`, `e2-standard-2`, `docker-2cpu`).
    pub name: String,
    /// CPU in millicores.
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `x86_64`.
    pub arch: String,
}

/// The spot/on-demand mix of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketPolicy {
    /// This many instances are always on-demand.
    pub on_demand_base: u32,
    /// Percentage of instances above the base that should be spot.
    pub spot_percent: u8,
    /// After a spot capacity error, launch on-demand for this long.
    pub spot_fallback_for: Duration,
}

/// Damping so the pool never thrashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// Minimum time between two scale-ups (an SLA emergency overrides it).
    pub scale_up_cooldown: Duration,
    /// Minimum time after a scale-up before any scale-down.
    pub scale_down_cooldown: Duration,
    /// Scale-down follows the highest recommendation in this window.
    pub down_stabilization: Duration,
}

/// Billing granularity of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// Per-second billing after a minimum charge (EC2 and Compute Engine
    /// bill every instance at least 60 s): retire as soon as a worker is
    /// not needed, but not before its minimum is used up, since keeping it
    /// until then is already paid for.
    PerSecond {
        /// Every instance is billed at least this long.
        minimum: Duration,
    },
    /// Billed in whole periods: retire only near the end of a paid period.
    Period {
        /// Length of one billed period.
        period: Duration,
        /// Retire only within this much of the period's end.
        retire_within: Duration,
    },
}

/// Pre-warming that follows the arrival rate learned per hour of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrewarmConfig {
    /// Never pre-warm more instances than this (the budget cap).
    pub max_instances: u32,
    /// Percentage of the expected concurrent demand to keep warm.
    pub factor_percent: u32,
}

/// Warm headroom (`crate::headroom`): idle workers kept on top of the busy
/// ones, sized from the upper tail of arrivals within one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadroomPolicy {
    /// Kept while some class's SLA target is shorter than the pool's lead
    /// time, so a launch made when a job arrives cannot start it in time;
    /// sized so that `coverage_milli` thousandths of arriving jobs find a
    /// worker idle. With every target longer, reacting to the queue meets
    /// them and headroom would only add idle cost, so none is kept.
    Auto {
        /// Share of arrivals to start at once, in thousandths (1..=1000).
        coverage_milli: u32,
    },
    /// Never kept (beyond `idle_count`).
    Off,
}

impl Default for HeadroomPolicy {
    fn default() -> Self {
        HeadroomPolicy::Auto {
            coverage_milli: crate::headroom::DEFAULT_COVERAGE_MILLI,
        }
    }
}

/// A configuration rule that was broken, with the key path that broke it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {rule}")]
pub struct ConfigError {
    /// Key path such as `pools[1].max`.
    pub path: String,
    /// What was expected, and what was found.
    pub rule: String,
}

impl EngineConfig {
    /// Checks every rule and returns all violations, not just the first, so
    /// an operator fixes a config in one pass.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |path: String, rule: String| errors.push(ConfigError { path, rule });
        if self.classes.is_empty() {
            err(
                "classes".into(),
                "at least one priority class is required".into(),
            );
        }
        if self.classes.len() > usize::from(u8::MAX) {
            err("classes".into(), "at most 255 priority classes".into());
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.sla_target < Duration::from_secs(1) {
                err(
                    format!("classes[{i}].sla_target"),
                    "must be at least 1s".into(),
                );
            }
        }
        check_unique(
            self.classes.iter().map(|c| c.name.as_str()),
            "classes",
            &mut err,
        );
        check_unique(
            self.tenants.iter().map(|t| t.name.as_str()),
            "tenants",
            &mut err,
        );
        check_unique(
            self.pools.iter().map(|p| p.name.as_str()),
            "pools",
            &mut err,
        );
        for (i, t) in self.tenants.iter().enumerate() {
            if t.weight == 0 {
                err(
                    format!("tenants[{i}].weight"),
                    "must be at least 1, got 0".into(),
                );
            }
            if let Some(b) = t.burst {
                if b.multiplier_percent < 100 {
                    err(
                        format!("tenants[{i}].burst.multiplier_percent"),
                        format!("must be at least 100, got {}", b.multiplier_percent),
                    );
                }
                if b.duration.is_zero() || b.refill.is_zero() {
                    err(
                        format!("tenants[{i}].burst"),
                        "duration and refill must be positive".into(),
                    );
                }
            }
        }
        for (i, p) in self.pools.iter().enumerate() {
            validate_pool(i, p, &mut err);
        }
        if self.assignment_timeout.is_zero() {
            err("assignment_timeout".into(), "must be positive".into());
        }
        if self.heartbeat_timeout.is_zero() {
            err("heartbeat_timeout".into(), "must be positive".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Floor of instances a pool keeps regardless of demand.
    pub(crate) fn pool_floor(pool: &PoolConfig) -> u32 {
        match pool.kind {
            PoolKind::Static { warm } => warm,
            PoolKind::Dynamic { min, .. } => min,
        }
    }
}

fn validate_pool(i: usize, p: &PoolConfig, err: &mut impl FnMut(String, String)) {
    let at = |k: &str| format!("pools[{i}].{k}");
    match p.kind {
        PoolKind::Static { warm } if warm > p.max => {
            err(at("warm"), format!("must be ≤ max ({}), got {warm}", p.max));
        }
        PoolKind::Dynamic { min, .. } if min > p.max => {
            err(at("min"), format!("must be ≤ max ({}), got {min}", p.max));
        }
        _ => {}
    }
    if p.capacity_per_instance == 0 {
        err(
            at("capacity_per_instance"),
            "must be at least 1, got 0".into(),
        );
    }
    if p.market.spot_percent > 100 {
        err(
            at("market.spot_percent"),
            format!("must be 0..=100, got {}", p.market.spot_percent),
        );
    }
    if p.shape.cpu_millis == 0 || p.shape.memory_mib == 0 {
        err(
            at("shape"),
            "cpu_millis and memory_mib must be positive".into(),
        );
    }
    if p.boot_timeout.is_zero() || p.boot_estimate.is_zero() {
        err(
            at("boot_timeout"),
            "boot_timeout and boot_estimate must be positive".into(),
        );
    }
    if p.max_uses == Some(0) {
        err(at("max_uses"), "must be at least 1 when set".into());
    }
    if let HeadroomPolicy::Auto { coverage_milli } = p.headroom
        && !(1..=1000).contains(&coverage_milli)
    {
        err(
            at("headroom.coverage"),
            format!(
                "must be above 0 and at most 1 (the share of arriving jobs to start at once), got {}",
                f64::from(coverage_milli) / 1000.0
            ),
        );
    }
    if let Billing::Period {
        period,
        retire_within,
    } = p.billing
        && (period.is_zero() || retire_within > period)
    {
        err(
            at("billing"),
            "period must be positive and retire_within ≤ period".into(),
        );
    }
    if p.provider.is_empty() {
        err(at("provider"), "must name a provider".into());
    }
}

fn check_unique<'a>(
    names: impl Iterator<Item = &'a str>,
    section: &str,
    err: &mut impl FnMut(String, String),
) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, n) in names.enumerate() {
        if n.is_empty() {
            err(format!("{section}[{i}].name"), "must not be empty".into());
        } else if !seen.insert(n) {
            err(
                format!("{section}[{i}].name"),
                format!("duplicate name {n:?}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit;

    #[test]
    fn a_pool_with_min_above_max_names_the_key() {
        let mut cfg = testkit::config();
        cfg.pools[0].kind = super::PoolKind::Dynamic {
            min: 9,
            idle_count: 0,
        };
        cfg.pools[0].max = 3;
        let errors = cfg.validate().expect_err("min > max must be rejected");
        assert!(
            errors
                .iter()
                .any(|e| e.path == "pools[0].min" && e.rule.contains("≤ max (3)"))
        );
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let mut cfg = testkit::config();
        cfg.tenants[0].weight = 0;
        cfg.pools[0].capacity_per_instance = 0;
        let errors = cfg.validate().expect_err("two violations");
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let mut cfg = testkit::config();
        let dup = cfg.tenants[0].clone();
        cfg.tenants.push(dup);
        let errors = cfg.validate().expect_err("duplicate tenant");
        assert!(errors[0].rule.contains("duplicate name"));
    }
}
