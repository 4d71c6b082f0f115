//! How many jobs would have missed their target with `H` idle slots kept,
//! replayed over recorded arrivals and completions.
//!
//! Counting only arrivals beyond `H` within one boot overstates the misses:
//! a slot freed by a finishing job takes the next arrival as well as an
//! idle one does, so a pool whose jobs finish often needs less headroom
//! than its bursts suggest. The replay follows the pool's own rules: an
//! arrival takes an idle slot if there is one and a replacement is launched
//! for it (up one boot later); an arrival that finds none waits for the
//! next slot to free or boot; freed and booted slots go to waiting jobs
//! first, then to the bin's arrivals, and otherwise refill the headroom,
//! never beyond `H` (the rest retire).

use std::collections::VecDeque;

/// What the replay needs to know about the pool, in bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayModel {
    /// Bins from a launch to the worker taking a job.
    pub boot_bins: usize,
    /// A job served this many bins after it arrived, or fewer, is in time.
    pub in_time_bins: usize,
    /// Of the jobs served late by a boot, the share (thousandths) really
    /// late: some boots are faster than the estimate.
    pub late_milli: u32,
}

/// Misses (thousandths of a job) over the bins, with `h` slots of headroom
/// at the start and kept after.
pub fn misses_milli(arrivals: &[u16], freed: &[u16], h: u32, model: ReplayModel) -> u64 {
    let boot = model.boot_bins.max(1);
    let mut landing = vec![0u32; boot + 1];
    let mut waiting: VecDeque<(usize, u32)> = VecDeque::new();
    let mut idle = h;
    let mut misses = 0u64;
    let late = u64::from(model.late_milli.min(1000));
    let mut serve = |waiting: &mut VecDeque<(usize, u32)>, supply: &mut u32, t: usize, weight| {
        while *supply > 0 {
            let Some(front) = waiting.front_mut() else {
                break;
            };
            let take = front.1.min(*supply);
            if t - front.0 > model.in_time_bins {
                misses += u64::from(take) * weight;
            }
            front.1 -= take;
            *supply -= take;
            if front.1 == 0 {
                waiting.pop_front();
            }
        }
    };
    for t in 0..arrivals.len() {
        let slot = t % landing.len();
        let mut booted = std::mem::take(&mut landing[slot]);
        let mut released = u32::from(freed.get(t).copied().unwrap_or(0));
        serve(&mut waiting, &mut released, t, 1000);
        serve(&mut waiting, &mut booted, t, late);
        // Slots beyond the headroom linger for the rest of the bin (a
        // worker is retired only once it has stayed idle), so jobs arriving
        // in the same bin still take them.
        let available = idle + released + booted;
        let arrived = u32::from(arrivals[t]);
        let taken = arrived.min(available);
        idle = h.min(available - taken);
        // A replacement for every arrival: for the idle slot it took, or
        // for itself while it waits.
        let ring = landing.len();
        landing[(t + boot) % ring] += arrived;
        if arrived > taken {
            waiting.push_back((t, arrived - taken));
        }
    }
    // Still waiting at the end: at the latest their own boots serve them.
    if boot > model.in_time_bins {
        misses += waiting.iter().map(|(_, n)| u64::from(*n)).sum::<u64>() * late;
    }
    misses
}

/// Misses for every headroom from 0 up to the first with none (at most
/// `max_h`): a non-increasing curve, thousandths of a job.
pub fn curve(arrivals: &[u16], freed: &[u16], model: ReplayModel, max_h: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut best = u64::MAX;
    for h in 0..=max_h {
        // More headroom never adds misses; keep the curve monotone where
        // the replay's coarse bins would wobble.
        best = best.min(misses_milli(arrivals, freed, h, model));
        out.push(u32::try_from(best).unwrap_or(u32::MAX));
        if best == 0 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: ReplayModel = ReplayModel {
        boot_bins: 3,
        in_time_bins: 0,
        late_milli: 1000,
    };

    #[test]
    fn a_burst_beyond_the_headroom_misses_by_its_excess() {
        let mut arrivals = vec![0u16; 30];
        arrivals[5] = 40;
        let freed = vec![0u16; 30];
        assert_eq!(misses_milli(&arrivals, &freed, 0, MODEL), 40_000);
        assert_eq!(misses_milli(&arrivals, &freed, 25, MODEL), 15_000);
        assert_eq!(misses_milli(&arrivals, &freed, 40, MODEL), 0);
    }

    #[test]
    fn slots_freed_by_finishing_jobs_serve_arrivals_as_idle_ones_do() {
        // Two arrivals every bin, two jobs finishing every bin: one idle
        // slot is plenty once finishing jobs hand theirs on.
        let arrivals = vec![2u16; 60];
        let freed = vec![2u16; 60];
        assert_eq!(misses_milli(&arrivals, &freed, 0, MODEL), 0);
        let none_freed = vec![0u16; 60];
        assert!(
            misses_milli(&arrivals, &none_freed, 2, MODEL) > 0,
            "without them, replacements lag a boot behind"
        );
    }

    #[test]
    fn replacements_refill_the_headroom_one_boot_later() {
        // Five arrive, then five more four bins later: with headroom 5 the
        // replacements (three bins) are up for the second wave.
        let mut arrivals = vec![0u16; 20];
        arrivals[1] = 5;
        arrivals[5] = 5;
        let freed = vec![0u16; 20];
        assert_eq!(misses_milli(&arrivals, &freed, 5, MODEL), 0);
        arrivals[5] = 0;
        arrivals[3] = 5;
        assert_eq!(
            misses_milli(&arrivals, &freed, 5, MODEL),
            5_000,
            "a wave two bins after the first finds nothing back yet"
        );
    }

    #[test]
    fn boots_that_are_often_in_time_count_their_share_of_the_late() {
        let mut arrivals = vec![0u16; 20];
        arrivals[2] = 10;
        let freed = vec![0u16; 20];
        let half = ReplayModel {
            late_milli: 500,
            ..MODEL
        };
        assert_eq!(misses_milli(&arrivals, &freed, 0, half), 5_000);
    }

    #[test]
    fn the_curve_falls_to_zero_and_stops() {
        let mut arrivals = vec![0u16; 20];
        arrivals[2] = 10;
        let c = curve(&arrivals, &[0u16; 20], MODEL, 100);
        assert_eq!(c.len(), 11);
        assert_eq!(c[0], 10_000);
        assert_eq!(c[10], 0);
        assert!(c.windows(2).all(|w| w[0] >= w[1]));
    }
}
