//! Per-tenant usage, concurrency quotas and the burst token bucket.

use std::time::Duration;

use crate::config::{BurstConfig, TenantConfig};
use crate::money::CostAccum;
use crate::time::{Timestamp, duration_millis};

/// What a tenant is using right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Jobs holding a slot (assigned or running).
    pub running_jobs: u32,
    /// Millicores held by those jobs.
    pub cpu_millis: u64,
    /// MiB held by those jobs.
    pub memory_mib: u64,
}

/// Whether a tenant may start one more job of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Within the quota.
    Within,
    /// Above the quota but inside a burst the bucket still pays for.
    Burst,
    /// Not now: the job stays queued.
    Blocked,
}

/// A token bucket measured in milliseconds of burst.
///
/// While a tenant runs above its quota the bucket drains one millisecond per
/// millisecond; below quota it refills at `duration / refill`. The bucket is
/// advanced lazily at every usage change with the state that held since the
/// previous change, so it is exact without a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BurstBucket {
    config: BurstConfig,
    tokens_ms: u64,
    updated: Timestamp,
}

impl BurstBucket {
    fn capacity(&self) -> u64 {
        duration_millis(self.config.duration)
    }

    fn advance(&mut self, now: Timestamp, was_over_quota: bool) {
        let elapsed = duration_millis(now.saturating_since(self.updated));
        self.updated = self.updated.max(now);
        if was_over_quota {
            self.tokens_ms = self.tokens_ms.saturating_sub(elapsed);
        } else {
            let refill = duration_millis(self.config.refill).max(1);
            let gained = u128::from(elapsed) * u128::from(self.capacity()) / u128::from(refill);
            let gained = u64::try_from(gained).unwrap_or(u64::MAX);
            self.tokens_ms = self.tokens_ms.saturating_add(gained).min(self.capacity());
        }
    }
}

/// The engine's view of one tenant.
#[derive(Debug, Clone)]
pub(crate) struct TenantState {
    pub config: TenantConfig,
    pub usage: Usage,
    pub queued: u32,
    burst: Option<BurstBucket>,
    spend_day: u64,
    spend_today: CostAccum,
}

impl TenantState {
    pub fn new(config: TenantConfig, now: Timestamp) -> Self {
        let burst = config.burst.map(|c| BurstBucket {
            config: c,
            tokens_ms: duration_millis(c.duration),
            updated: now,
        });
        TenantState {
            config,
            usage: Usage::default(),
            queued: 0,
            burst,
            spend_day: now.utc_day(),
            spend_today: CostAccum::ZERO,
        }
    }

    /// Applies new settings, keeping usage and what is left of the burst
    /// bucket (capped at the new capacity).
    pub fn reconfigure(&mut self, config: TenantConfig, now: Timestamp) {
        self.advance(now);
        let left = self.burst.map(|b| b.tokens_ms);
        self.burst = config.burst.map(|c| BurstBucket {
            config: c,
            tokens_ms: left
                .unwrap_or(duration_millis(c.duration))
                .min(duration_millis(c.duration)),
            updated: now,
        });
        self.config = config;
    }

    /// Whether `usage` is above the base quota on any dimension.
    fn over_quota(&self, usage: Usage) -> bool {
        !fits(usage, &self.config, 100)
    }

    /// Brings the burst bucket up to `now`; call before any usage change.
    pub fn advance(&mut self, now: Timestamp) {
        let over = self.over_quota(self.usage);
        if let Some(b) = &mut self.burst {
            b.advance(now, over);
        }
    }

    /// Remaining burst, for status and tests.
    pub fn burst_remaining(&self) -> Option<Duration> {
        self.burst.map(|b| Duration::from_millis(b.tokens_ms))
    }

    /// Whether one more job of this size may start now. The bucket must have
    /// been advanced to now.
    pub fn allowance(&self, cpu_millis: u32, memory_mib: u32) -> Allowance {
        let after = Usage {
            running_jobs: self.usage.running_jobs + 1,
            cpu_millis: self.usage.cpu_millis + u64::from(cpu_millis),
            memory_mib: self.usage.memory_mib + u64::from(memory_mib),
        };
        if fits(after, &self.config, 100) {
            return Allowance::Within;
        }
        match self.burst {
            Some(b)
                if b.tokens_ms > 0 && fits(after, &self.config, b.config.multiplier_percent) =>
            {
                Allowance::Burst
            }
            _ => Allowance::Blocked,
        }
    }

    /// How many more jobs of this size could start now, counting a burst if
    /// tokens remain; `u32::MAX` when unlimited. The planner uses it so a
    /// tenant at its quota does not make the fleet grow.
    pub fn headroom_jobs(&self, cpu_millis: u32, memory_mib: u32) -> u32 {
        let pct = match self.burst {
            Some(b) if b.tokens_ms > 0 => b.config.multiplier_percent,
            _ => 100,
        };
        let q = &self.config.quota;
        let mut room = u64::from(u32::MAX);
        if let Some(max) = q.max_running_jobs {
            room = room.min(
                scaled(u64::from(max), pct).saturating_sub(u64::from(self.usage.running_jobs)),
            );
        }
        if let (Some(max), true) = (q.max_cpu_millis, cpu_millis > 0) {
            room = room.min(
                scaled(max, pct).saturating_sub(self.usage.cpu_millis) / u64::from(cpu_millis),
            );
        }
        if let (Some(max), true) = (q.max_memory_mib, memory_mib > 0) {
            room = room.min(
                scaled(max, pct).saturating_sub(self.usage.memory_mib) / u64::from(memory_mib),
            );
        }
        u32::try_from(room).unwrap_or(u32::MAX)
    }

    /// Whether usage is within the limits it may ever reach (quota, or the
    /// burst ceiling when a burst is configured). Checked by property tests.
    pub fn within_ceiling(&self) -> bool {
        let pct = self.burst.map_or(100, |b| b.config.multiplier_percent);
        fits(self.usage, &self.config, pct)
    }

    pub fn take(&mut self, cpu_millis: u32, memory_mib: u32) {
        self.usage.running_jobs += 1;
        self.usage.cpu_millis += u64::from(cpu_millis);
        self.usage.memory_mib += u64::from(memory_mib);
    }

    pub fn release(&mut self, cpu_millis: u32, memory_mib: u32) {
        self.usage.running_jobs = self.usage.running_jobs.saturating_sub(1);
        self.usage.cpu_millis = self.usage.cpu_millis.saturating_sub(u64::from(cpu_millis));
        self.usage.memory_mib = self.usage.memory_mib.saturating_sub(u64::from(memory_mib));
    }

    /// Adds attributed cost to today's spend, starting a new day when the
    /// UTC date changed.
    pub fn add_spend(&mut self, now: Timestamp, cost: CostAccum) {
        self.roll_day(now);
        self.spend_today += cost;
    }

    /// Whether the daily spend limit has been reached.
    pub fn over_daily_spend(&mut self, now: Timestamp) -> bool {
        self.roll_day(now);
        self.config
            .quota
            .max_daily_spend
            .is_some_and(|max| self.spend_today.to_micros() >= max)
    }

    fn roll_day(&mut self, now: Timestamp) {
        if now.utc_day() != self.spend_day {
            self.spend_day = now.utc_day();
            self.spend_today = CostAccum::ZERO;
        }
    }
}

fn scaled(limit: u64, percent: u32) -> u64 {
    limit.saturating_mul(u64::from(percent)) / 100
}

fn fits(u: Usage, c: &TenantConfig, percent: u32) -> bool {
    let q = &c.quota;
    q.max_running_jobs
        .is_none_or(|m| u64::from(u.running_jobs) <= scaled(u64::from(m), percent))
        && q.max_cpu_millis
            .is_none_or(|m| u.cpu_millis <= scaled(m, percent))
        && q.max_memory_mib
            .is_none_or(|m| u.memory_mib <= scaled(m, percent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantQuota;

    fn tenant(max: u32, burst: Option<BurstConfig>) -> TenantState {
        let cfg = TenantConfig {
            name: "t".into(),
            weight: 1,
            quota: TenantQuota {
                max_running_jobs: Some(max),
                ..Default::default()
            },
            burst,
        };
        TenantState::new(cfg, Timestamp::EPOCH)
    }

    fn burst() -> BurstConfig {
        BurstConfig {
            multiplier_percent: 200,
            duration: Duration::from_secs(60),
            refill: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_tenant_at_quota_without_burst_is_blocked() {
        let mut t = tenant(1, None);
        assert_eq!(t.allowance(0, 0), Allowance::Within);
        t.take(0, 0);
        assert_eq!(t.allowance(0, 0), Allowance::Blocked);
    }

    #[test]
    fn a_burst_lasts_only_while_the_bucket_has_tokens() {
        let mut t = tenant(1, Some(burst()));
        t.take(0, 0);
        assert_eq!(t.allowance(0, 0), Allowance::Burst);
        t.take(0, 0); // now at 2 = 200% of quota
        t.advance(Timestamp::from_secs(61));
        t.release(0, 0);
        assert_eq!(t.burst_remaining(), Some(Duration::ZERO));
        assert_eq!(
            t.allowance(0, 0),
            Allowance::Blocked,
            "bucket empty after 60 s over quota"
        );
    }

    #[test]
    fn the_bucket_refills_below_quota() {
        let mut t = tenant(1, Some(burst()));
        t.take(0, 0);
        t.take(0, 0);
        t.advance(Timestamp::from_secs(60));
        t.release(0, 0);
        t.release(0, 0);
        t.advance(Timestamp::from_secs(60 + 300));
        assert_eq!(
            t.burst_remaining(),
            Some(Duration::from_secs(30)),
            "half the refill period refills half"
        );
    }

    #[test]
    fn burst_never_exceeds_the_multiplier() {
        let mut t = tenant(2, Some(burst()));
        for _ in 0..4 {
            t.take(0, 0);
        }
        assert_eq!(t.allowance(0, 0), Allowance::Blocked);
        assert!(t.within_ceiling());
    }

    #[test]
    fn headroom_counts_burst_only_with_tokens() {
        let t = tenant(3, Some(burst()));
        assert_eq!(t.headroom_jobs(0, 0), 6);
        let plain = tenant(3, None);
        assert_eq!(plain.headroom_jobs(0, 0), 3);
    }
}
