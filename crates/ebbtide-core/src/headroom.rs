//! Warm headroom for SLA targets shorter than a boot.
//!
//! When a job must start sooner than any instance can boot, only a worker
//! that is already idle can take it. A pool then keeps `H` idle workers on
//! top of its busy ones: each arrival takes one and a replacement boots, so
//! a job waits only when more than `H` arrive within one boot. `H` is the
//! smallest number for which the jobs arriving beyond it, over windows of
//! one boot, are at most `1 − coverage` of all jobs. The count is
//! job-weighted on purpose: a matrix build that submits forty jobs at once
//! is forty jobs, not one window.
//!
//! Arrivals are counted in 10-second bins over the last hour. `H` is taken
//! from the last half hour (so a burst raises it within seconds and a lull
//! lowers it within half an hour) and from what the same hour of the week
//! needed before (so headroom is up before the Monday-morning ramp, not
//! half an hour into it). Each finished hour is folded into its
//! hour-of-week slot: the first observation is taken as it is (no
//! month-long warm-up from zero), later ones move the slot halfway.

use std::time::Duration;

use crate::time::Timestamp;

const BIN_MS: u64 = 10_000;
/// One hour of bins.
const BINS: usize = 360;
/// The recent estimate looks back half an hour.
const RECENT_BINS: usize = 180;
const HOURS_PER_WEEK: usize = 168;

/// Share of arriving jobs that should start within their target, in
/// thousandths.
pub const DEFAULT_COVERAGE_MILLI: u32 = 990;

/// What the pool's boots and its tightest target make of an arrival that
/// finds no idle worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposure {
    /// Arrivals this close together compete for the same idle workers:
    /// a replacement launched for one is not up in time for the next.
    pub window: Duration,
    /// Of the jobs that find no idle worker, the share (thousandths) whose
    /// replacement boots too late for the target: 1000 when every boot is
    /// longer than the target, less when some boots fit in it.
    pub late_milli: u32,
}

/// Arrival history and the headroom it calls for.
#[derive(Debug, Clone)]
pub struct Headroom {
    bins: Box<[u16; BINS]>,
    /// Absolute index (ms / `BIN_MS`) of the newest bin.
    newest: u64,
    /// Learned need per hour of the week; `None` until that hour was seen.
    by_hour: Box<[Option<u32>; HOURS_PER_WEEK]>,
    /// The hour (absolute) whose bins are being filled.
    hour: u64,
}

impl Default for Headroom {
    fn default() -> Self {
        Headroom {
            bins: Box::new([0; BINS]),
            newest: 0,
            by_hour: Box::new([None; HOURS_PER_WEEK]),
            hour: 0,
        }
    }
}

impl Headroom {
    /// Counts one arrival at `now`; `coverage_milli` is the pool's, for
    /// the hour that may end here.
    pub fn observe(&mut self, now: Timestamp, exposure: Exposure, coverage_milli: u32) {
        self.advance(now, exposure, coverage_milli);
        let slot = &mut self.bins[(self.newest % BINS as u64) as usize];
        *slot = slot.saturating_add(1);
    }

    /// Moves the bins to `now`: bins that fell out of the hour are cleared,
    /// and an hour that ended is folded into its hour-of-week slot first.
    pub fn advance(&mut self, now: Timestamp, exposure: Exposure, coverage_milli: u32) {
        let idx = now.as_millis() / BIN_MS;
        let hour = now.as_millis() / 3_600_000;
        if self.newest == 0 {
            self.newest = idx;
            self.hour = hour;
            return;
        }
        if hour > self.hour {
            // The bins hold (up to) the hour that just ended.
            let need = self.need(self.newest, BINS, exposure, coverage_milli);
            let slot = &mut self.by_hour[(self.hour % HOURS_PER_WEEK as u64) as usize];
            *slot = Some(match *slot {
                None => need,
                Some(old) => (old + need).div_ceil(2),
            });
            // Hours that passed with no arrival at all were quiet: fold a
            // zero into each (at most a week of them).
            for h in (self.hour + 1..hour).take(HOURS_PER_WEEK) {
                let slot = &mut self.by_hour[(h % HOURS_PER_WEEK as u64) as usize];
                *slot = Some(slot.map_or(0, |old| old.div_ceil(2)));
            }
            self.hour = hour;
        }
        if idx > self.newest {
            let gap = (idx - self.newest).min(BINS as u64);
            for k in 1..=gap {
                self.bins[((self.newest + k) % BINS as u64) as usize] = 0;
            }
            self.newest = idx;
        }
    }

    /// Idle workers (in job slots) to keep on top of the busy ones at
    /// `now`: the larger of what the last half hour needed and what this
    /// hour and the next needed in earlier weeks.
    pub fn slots(&self, now: Timestamp, exposure: Exposure, coverage_milli: u32) -> u32 {
        let idx = now.as_millis() / BIN_MS;
        let recent = if idx.saturating_sub(self.newest) >= RECENT_BINS as u64 {
            0
        } else {
            self.need(idx.max(self.newest), RECENT_BINS, exposure, coverage_milli)
        };
        let h = now.hour_of_week();
        let learned = [h, (h + 1) % HOURS_PER_WEEK]
            .iter()
            .filter_map(|h| self.by_hour[*h])
            .max()
            .unwrap_or(0);
        recent.max(learned)
    }

    /// The smallest `H` such that, over the windows of `exposure.window`
    /// ending in each of the `span` bins up to `end`, the jobs beyond `H`
    /// that also boot too late are at most `1 − coverage` of the jobs.
    fn need(&self, end: u64, span: usize, exposure: Exposure, coverage_milli: u32) -> u32 {
        let width = usize::try_from(crate::time::duration_millis(exposure.window).div_ceil(BIN_MS))
            .unwrap_or(BINS)
            .clamp(1, BINS);
        let bin = |abs: u64| -> u64 {
            if abs > end || end - abs >= BINS as u64 {
                0
            } else {
                u64::from(self.bins[(abs % BINS as u64) as usize])
            }
        };
        // The arrivals of the window ending at each bin of the span.
        let first = end.saturating_sub(span as u64 - 1);
        let counts: Vec<u64> = (first..=end)
            .map(|last| {
                (0..width as u64)
                    .filter_map(|k| last.checked_sub(k))
                    .map(bin)
                    .sum()
            })
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let allowed = total * u64::from(1000 - coverage_milli.min(1000)) / 1000;
        let late = u64::from(exposure.late_milli.min(1000));
        if late == 0 {
            return 0;
        }
        let beyond = |h: u64| -> u64 {
            counts.iter().map(|n| n.saturating_sub(h)).sum::<u64>() * late / 1000
        };
        let (mut lo, mut hi) = (0u64, counts.iter().copied().max().unwrap_or(0));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if beyond(mid) <= allowed {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        u32::try_from(lo).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: Exposure = Exposure {
        window: Duration::from_secs(30),
        late_milli: 1000,
    };

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_secs(1_000_000 * 3600 + secs)
    }

    #[test]
    fn a_steady_trickle_needs_little_headroom() {
        let mut h = Headroom::default();
        // One job every 30 s for half an hour: one per boot window.
        for i in 0..60 {
            h.observe(at(i * 30), BOOT, 990);
        }
        assert_eq!(h.slots(at(1800), BOOT, 990), 1);
    }

    #[test]
    fn a_matrix_burst_counts_as_many_jobs() {
        let mut h = Headroom::default();
        // A quiet trickle, then one build that submits 40 jobs at once.
        for i in 0..50 {
            h.observe(at(i * 30), BOOT, 990);
        }
        for _ in 0..40 {
            h.observe(at(1500), BOOT, 990);
        }
        let slots = h.slots(at(1510), BOOT, 990);
        assert!(
            (30..=40).contains(&slots),
            "most of the burst's jobs must find a worker idle: {slots}"
        );
        assert!(
            h.slots(at(1510), BOOT, 500) < slots,
            "lower coverage, less headroom"
        );
    }

    #[test]
    fn the_same_hour_next_week_is_ready_before_its_burst() {
        let mut h = Headroom::default();
        let week = 7 * 86_400;
        // A burst of 20 at 09:10 in week 0.
        for _ in 0..20 {
            h.observe(at(600), BOOT, 990);
        }
        // Roll past the hour, then a week of nothing.
        h.advance(at(3600 + 5), BOOT, 990);
        h.advance(at(week - 60), BOOT, 990);
        // A week later, at 09:00, before any arrival: ready for it.
        assert!(
            h.slots(at(week), BOOT, 990) >= 15,
            "{}",
            h.slots(at(week), BOOT, 990)
        );
        // A quiet hour learned as quiet.
        assert_eq!(h.slots(at(week + 5 * 3600), BOOT, 990), 0);
    }

    #[test]
    fn boots_that_fit_in_the_target_shrink_the_headroom() {
        let mut h = Headroom::default();
        for i in 0..50 {
            h.observe(at(i * 30), BOOT, 990);
        }
        for _ in 0..40 {
            h.observe(at(1500), BOOT, 990);
        }
        let all_late = h.slots(at(1510), BOOT, 990);
        let half_late = Exposure {
            late_milli: 500,
            ..BOOT
        };
        assert!(h.slots(at(1510), half_late, 990) < all_late);
        let none_late = Exposure {
            late_milli: 0,
            ..BOOT
        };
        assert_eq!(
            h.slots(at(1510), none_late, 990),
            0,
            "every boot is in time"
        );
    }

    #[test]
    fn nothing_arriving_needs_nothing() {
        let h = Headroom::default();
        assert_eq!(h.slots(at(0), BOOT, 990), 0);
    }
}
