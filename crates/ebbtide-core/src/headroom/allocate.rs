//! Spending a week's miss budget where headroom is cheapest.
//!
//! Meeting the coverage in every hour on its own buys as much headroom for
//! one matrix burst in a quiet hour as for a busy Monday morning. The
//! target is the share of jobs started in time over the long run, so the
//! week's allowance of late jobs (`1 − coverage` of its jobs) is better
//! spent where an idle slot saves fewest of them. Every hour of the week
//! starts at the headroom with no misses on its learned curve; then, one
//! slot at a time, the hour whose next slot saves fewest jobs gives it up,
//! until the next would overspend the allowance. An hour's headroom falls
//! where bursts are rare and stays where they are common, and the slots
//! kept are those that save the most jobs per slot-hour.

/// One hour of the week as learned: its jobs, and the misses (thousandths
/// of a job) each headroom from 0 up would have let through. Beyond the
/// curve's end, none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HourCurve {
    /// Jobs that arrived in the hour.
    pub jobs: u32,
    /// `misses[h]` with `h` slots of headroom; non-increasing.
    pub misses: Vec<u32>,
}

impl HourCurve {
    fn at(&self, h: usize) -> u64 {
        u64::from(self.misses.get(h).copied().unwrap_or(0))
    }

    /// Folds a newer observation in: the average of the two, hour by hour
    /// and headroom by headroom.
    pub fn fold(&mut self, newer: &HourCurve) {
        let len = self.misses.len().max(newer.misses.len());
        self.misses = (0..len)
            .map(|h| {
                let sum = self.at(h) + newer.at(h);
                u32::try_from(sum.div_ceil(2)).unwrap_or(u32::MAX)
            })
            .collect();
        self.jobs = (self.jobs + newer.jobs).div_ceil(2);
    }
}

/// Headroom per hour of the week (`None` where the hour was never seen),
/// letting up to `late_ppm` millionths of the learned hours' jobs through
/// late.
pub fn allocate(hours: &[Option<HourCurve>], late_ppm: u64) -> Vec<Option<u32>> {
    use std::cmp::Reverse;
    let jobs: u64 = hours.iter().flatten().map(|c| u64::from(c.jobs)).sum();
    // In thousandths of a job, like the curves.
    let allowance = jobs * late_ppm / 1000;
    // Each learned hour starts where its curve reaches no misses.
    let mut plan: Vec<Option<usize>> = hours
        .iter()
        .map(|c| c.as_ref().map(|c| c.misses.len().saturating_sub(1)))
        .collect();
    let step = |c: &HourCurve, h: usize| c.at(h - 1) - c.at(h);
    let mut heap = std::collections::BinaryHeap::new();
    for (i, (c, h)) in hours.iter().zip(&plan).enumerate() {
        if let (Some(c), Some(h)) = (c, h)
            && *h > 0
        {
            heap.push(Reverse((step(c, *h), Reverse(*h), i)));
        }
    }
    let mut spent = 0u64;
    // Equal savings: the hour with the most headroom gives first, so
    // alike hours end alike.
    while let Some(Reverse((more, _, i))) = heap.pop() {
        if spent + more > allowance {
            break;
        }
        spent += more;
        let (Some(c), Some(h)) = (&hours[i], &mut plan[i]) else {
            continue;
        };
        *h -= 1;
        if *h > 0 {
            heap.push(Reverse((step(c, *h), Reverse(*h), i)));
        }
    }
    plan.into_iter()
        .map(|h| h.map(|h| u32::try_from(h).unwrap_or(u32::MAX)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An hour whose `bursts` each bring `size` jobs at once among `jobs`.
    fn hour(jobs: u32, bursts: u32, size: u32) -> HourCurve {
        HourCurve {
            jobs,
            misses: (0..=size).map(|h| bursts * (size - h) * 1000).collect(),
        }
    }

    #[test]
    fn the_allowance_is_spent_where_headroom_saves_least() {
        // A busy hour with many bursts of 20 and a quiet one with a single
        // burst of 40: cutting the quiet hour's headroom costs one job per
        // slot, cutting the busy hour's costs ten.
        let hours = vec![Some(hour(2000, 10, 20)), Some(hour(100, 1, 40))];
        let plan = allocate(&hours, 10_000);
        // Allowance: 1 % of 2100 = 21 jobs, all spent in the quiet hour.
        assert_eq!(plan, vec![Some(20), Some(19)]);
    }

    #[test]
    fn every_hour_kept_at_its_own_need_when_the_allowance_is_nil() {
        let hours = vec![Some(hour(2000, 10, 20)), Some(hour(100, 1, 40)), None];
        assert_eq!(allocate(&hours, 0), vec![Some(20), Some(40), None]);
    }

    #[test]
    fn a_generous_allowance_keeps_none() {
        let hours = vec![Some(hour(1000, 1, 5))];
        assert_eq!(allocate(&hours, 100_000), vec![Some(0)]);
    }

    #[test]
    fn folding_averages_the_curves() {
        let mut a = hour(100, 1, 4);
        a.fold(&hour(300, 1, 2));
        assert_eq!(a.jobs, 200);
        assert_eq!(a.misses, vec![3000, 2000, 1000, 500, 0]);
    }
}
