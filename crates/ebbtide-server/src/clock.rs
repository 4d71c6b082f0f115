//! The service's clock: wall-clock time read once, at start-up, and
//! advanced by the monotonic clock from then on.
//!
//! Why: every timeout the engine enforces (heartbeats, boots,
//! assignments) is measured between two of these timestamps. On the raw
//! wall clock, an NTP step or an operator setting the time forward by a
//! minute would declare every worker lost at once, and setting it back
//! would stall every timeout. Anchored to `Instant`, a wall-clock jump
//! fires none; timestamps stay wall-clock time (job submissions, cost
//! days) to within the drift since start-up, and a restart re-anchors.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ebbtide_core::Timestamp;

/// Wall-clock milliseconds at one monotonic instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    wall_ms: u64,
    at: Instant,
}

impl Clock {
    /// A clock that reads `wall_ms` at `at`.
    pub(crate) fn anchored(wall_ms: u64, at: Instant) -> Clock {
        Clock { wall_ms, at }
    }

    /// The time at monotonic instant `instant`.
    pub(crate) fn at(&self, instant: Instant) -> Timestamp {
        let elapsed = instant.saturating_duration_since(self.at).as_millis();
        Timestamp::from_millis(
            self.wall_ms
                .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX)),
        )
    }

    /// The time now.
    pub(crate) fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// The monotonic instant at which this clock reads `t` (now, if `t`
    /// is past), for sleeping until an engine deadline.
    pub(crate) fn instant_of(&self, t: Timestamp) -> Instant {
        let now = Instant::now();
        let ahead = t.saturating_since(self.at(now));
        now + ahead
    }
}

/// The process's clock, anchored at its first use.
pub(crate) fn process() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Clock::anchored(wall_ms, Instant::now())
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn time_advances_with_the_monotonic_clock_only() {
        let start = Instant::now();
        let clock = Clock::anchored(1_000_000, start);
        assert_eq!(clock.at(start), Timestamp::from_millis(1_000_000));
        assert_eq!(
            clock.at(start + Duration::from_millis(2_500)),
            Timestamp::from_millis(1_002_500)
        );
        // An instant before the anchor never reads earlier than it.
        let later = Clock::anchored(1_000_000, start + Duration::from_secs(1));
        assert_eq!(later.at(start), Timestamp::from_millis(1_000_000));
    }

    #[test]
    fn a_deadline_maps_to_the_instant_it_falls_due() {
        let start = Instant::now();
        let clock = Clock::anchored(5_000, start);
        let due = clock.instant_of(clock.at(start) + Duration::from_secs(30));
        let ahead = due.saturating_duration_since(Instant::now());
        assert!(
            ahead <= Duration::from_secs(30) && ahead > Duration::from_secs(29),
            "{ahead:?}"
        );
        let past = clock.instant_of(Timestamp::from_millis(0));
        assert!(past <= Instant::now(), "a past deadline is due now");
    }
}
