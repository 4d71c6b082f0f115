//! Virtual time for the engine.
//!
//! The core never reads a clock: every event arrives with the `now` the
//! caller observed, so the simulator can replay a month in seconds and a
//! test can reproduce any interleaving exactly.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in milliseconds since the Unix epoch.
///
/// Milliseconds are fine-grained enough for queue waits and boot times and
/// keep arithmetic in integers, so replays are bit-for-bit deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself; useful as "never happened yet".
    pub const EPOCH: Timestamp = Timestamp(0);

    /// Builds a timestamp from milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Builds a timestamp from whole seconds since the epoch.
    pub const fn from_secs(s: u64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later:
    /// events may carry slightly reordered clocks and a wait is never negative.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// The UTC day number, for daily spend quotas.
    pub const fn utc_day(self) -> u64 {
        self.0 / 86_400_000
    }

    /// Hour of the week (0 = Thursday 00:00 UTC, the epoch's weekday), used by
    /// the arrival forecast to learn weekly seasonality.
    pub const fn hour_of_week(self) -> usize {
        ((self.0 / 3_600_000) % 168) as usize
    }
}

/// Saturating conversion used everywhere a `Duration` meets a timestamp.
pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_millis(rhs)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_millis(rhs)))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_never_negative() {
        let a = Timestamp::from_secs(10);
        let b = Timestamp::from_secs(5);
        assert_eq!(b.saturating_since(a), Duration::ZERO);
        assert_eq!(a.saturating_since(b), Duration::from_secs(5));
    }

    #[test]
    fn hour_of_week_wraps_every_168_hours() {
        assert_eq!(Timestamp::from_secs(3600 * 169).hour_of_week(), 1);
    }
}
