//! Arrival-rate forecast by hour of the week, for predictive pre-warming.
//!
//! CI traffic follows office hours and weekly cycles. Rather than asking
//! operators for cron-style schedules, each pool learns an exponentially
//! weighted average of arrivals for each of the 168 hours of the week and
//! pre-warms for the busier of this hour and the next.

use std::time::Duration;

use crate::time::Timestamp;

const HOURS_PER_WEEK: usize = 168;
/// Weight of the newest week, in quarters (EWMA with α = 1/4).
const NEW_WEIGHT_QUARTERS: u64 = 1;

/// Learned arrivals per hour of the week, in thousandths of a job.
#[derive(Debug, Clone)]
pub struct ArrivalForecast {
    per_hour_milli: [u64; HOURS_PER_WEEK],
    current_hour: u64,
    current_count: u64,
}

impl Default for ArrivalForecast {
    fn default() -> Self {
        ArrivalForecast {
            per_hour_milli: [0; HOURS_PER_WEEK],
            current_hour: 0,
            current_count: 0,
        }
    }
}

impl ArrivalForecast {
    /// Counts one arrival at `now`.
    pub fn observe(&mut self, now: Timestamp) {
        self.roll(now);
        self.current_count += 1;
    }

    /// Folds finished hours into the averages. Bounded: a gap longer than a
    /// week folds at most one week of empty hours.
    pub fn roll(&mut self, now: Timestamp) {
        let hour = now.as_millis() / 3_600_000;
        if self.current_hour == 0 {
            self.current_hour = hour;
        }
        let mut steps = 0;
        while self.current_hour < hour && steps < HOURS_PER_WEEK {
            let slot =
                &mut self.per_hour_milli[(self.current_hour % HOURS_PER_WEEK as u64) as usize];
            *slot = (*slot * (4 - NEW_WEIGHT_QUARTERS)
                + self.current_count * 1000 * NEW_WEIGHT_QUARTERS)
                / 4;
            self.current_count = 0;
            self.current_hour += 1;
            steps += 1;
        }
        self.current_hour = self.current_hour.max(hour);
    }

    /// Expected arrivals per hour around `now` (the busier of this hour and
    /// the next, so warming leads the ramp), in thousandths.
    pub fn rate_milli(&self, now: Timestamp) -> u64 {
        let h = now.hour_of_week();
        self.per_hour_milli[h].max(self.per_hour_milli[(h + 1) % HOURS_PER_WEEK])
    }

    /// Expected concurrent jobs by Little's law (rate × mean run time), in
    /// thousandths.
    pub fn expected_concurrent_milli(&self, now: Timestamp, mean_duration: Duration) -> u64 {
        let secs = mean_duration.as_secs();
        self.rate_milli(now).saturating_mul(secs) / 3600
    }
}

/// Arrivals over the last ten minutes, in 30-second buckets: the
/// short-term rate that decides how many idle workers are worth keeping.
/// The rate is the busier of the last minute and the last ten, so a
/// trickle that has just begun counts at once and a lull after a busy
/// spell is forgotten only gradually.
#[derive(Debug, Clone, Default)]
pub struct RecentArrivals {
    buckets: [u32; RECENT_BUCKETS],
    /// Absolute index (ms / bucket width) of the newest bucket.
    newest: u64,
}

const RECENT_BUCKETS: usize = 20;
const RECENT_BUCKET_MS: u64 = 30_000;

impl RecentArrivals {
    fn advance(&mut self, now: Timestamp) {
        let idx = now.as_millis() / RECENT_BUCKET_MS;
        if idx > self.newest {
            let gap = (idx - self.newest).min(RECENT_BUCKETS as u64);
            for k in 1..=gap {
                self.buckets[((self.newest + k) % RECENT_BUCKETS as u64) as usize] = 0;
            }
            self.newest = idx;
        }
    }

    /// Counts one arrival.
    pub fn observe(&mut self, now: Timestamp) {
        self.advance(now);
        let slot = &mut self.buckets[(self.newest % RECENT_BUCKETS as u64) as usize];
        *slot = slot.saturating_add(1);
    }

    /// Arrivals expected within `window` at the recent rate (the busier of
    /// the last minute and the last ten), rounded up.
    pub fn expected_within(&self, now: Timestamp, window: Duration) -> u32 {
        u32::try_from(self.expected_milli_within(now, window).div_ceil(1000)).unwrap_or(u32::MAX)
    }

    /// Arrivals expected within `window` at the recent rate, in
    /// thousandths.
    pub fn expected_milli_within(&self, now: Timestamp, window: Duration) -> u64 {
        let now_ms = now.as_millis();
        let idx = now_ms / RECENT_BUCKET_MS;
        let age = idx.saturating_sub(self.newest);
        if age >= RECENT_BUCKETS as u64 {
            return 0;
        }
        // The arrivals of the buckets `back` and fewer behind the newest,
        // counted only while they are within ten minutes of `now`.
        let count_back = |back: u64| -> u64 {
            (0..=back.min(RECENT_BUCKETS as u64 - 1 - age))
                .map(|k| {
                    u64::from(
                        self.buckets[((self.newest + RECENT_BUCKETS as u64 - k)
                            % RECENT_BUCKETS as u64) as usize],
                    )
                })
                .sum()
        };
        let window_ms = crate::time::duration_millis(window);
        let long = count_back(RECENT_BUCKETS as u64 - 1) * window_ms * 1000
            / (RECENT_BUCKETS as u64 * RECENT_BUCKET_MS);
        // The last minute: this bucket so far and the one before it (older
        // buckets than that have left the minute).
        let last_minute = if age <= 1 { count_back(1 - age) } else { 0 };
        let short_span = RECENT_BUCKET_MS + now_ms % RECENT_BUCKET_MS;
        let short = last_minute * window_ms * 1000 / short_span;
        long.max(short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_hour_is_remembered_a_week_later() {
        let mut f = ArrivalForecast::default();
        let monday_9 = Timestamp::from_secs(4 * 86_400 + 9 * 3600);
        for week in 0..8u64 {
            let start = Timestamp::from_secs(monday_9.as_millis() / 1000 + week * 7 * 86_400);
            for i in 0..120u64 {
                f.observe(Timestamp::from_secs(start.as_millis() / 1000 + i * 30));
            }
        }
        f.roll(Timestamp::from_secs(
            monday_9.as_millis() / 1000 + 8 * 7 * 86_400 - 3600,
        ));
        let next_week = Timestamp::from_secs(monday_9.as_millis() / 1000 + 8 * 7 * 86_400 - 1800);
        let rate = f.rate_milli(next_week);
        assert!(rate > 100_000, "learned ~120/h, got {rate} milli");
        let quiet = Timestamp::from_secs(next_week.as_millis() / 1000 + 6 * 3600);
        assert_eq!(f.rate_milli(quiet), 0);
    }

    #[test]
    fn recent_arrivals_give_the_expected_count_within_a_window() {
        let mut r = RecentArrivals::default();
        let t0 = Timestamp::from_secs(1_000_000);
        for i in 0..60u64 {
            r.observe(Timestamp::from_secs(1_000_000 + i * 10)); // 6 per minute
        }
        let now = Timestamp::from_secs(1_000_000 + 600);
        assert_eq!(r.expected_within(now, Duration::from_secs(30)), 3);
        let mut trickle = RecentArrivals::default();
        for i in 0..10u64 {
            trickle.observe(Timestamp::from_secs(1_000_020 + i * 2)); // one every 2 s
        }
        assert_eq!(
            trickle.expected_within(Timestamp::from_secs(1_000_040), Duration::from_secs(30)),
            6,
            "a trickle that began 20 s ago counts over the last minute's buckets (10 in 50 s), not diluted over ten minutes (which would give 1)"
        );
        assert_eq!(
            r.expected_within(t0 + Duration::from_secs(3600), Duration::from_secs(30)),
            0,
            "forgotten after ten quiet minutes"
        );
    }

    #[test]
    fn littles_law_gives_concurrency() {
        let mut f = ArrivalForecast::default();
        f.per_hour_milli[0] = 60_000; // 60 jobs/h
        let c = f.expected_concurrent_milli(Timestamp::EPOCH, Duration::from_secs(600));
        assert_eq!(c, 10_000, "60/h × 10 min = 10 concurrent");
    }
}
