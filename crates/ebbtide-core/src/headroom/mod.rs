//! Warm headroom for SLA targets shorter than a boot.
//!
//! When a job must start sooner than any instance can boot, only a worker
//! that is already idle (or one that frees just then) can take it. A pool
//! then keeps `H` idle slots on top of its busy ones: each arrival takes
//! one and a replacement boots. How many jobs a given `H` lets through late
//! is replayed over the pool's own recorded arrivals and completions in
//! 10-second bins (`replay`), so slots freed by finishing jobs are credited
//! and a matrix build that submits forty jobs at once counts as forty.
//!
//! Each finished hour's miss curve (misses for every `H`) is pooled with
//! those of about the last week, as misses per job: bursts come at no hour
//! of the week in particular (on the Travis month, an hour's own curve from
//! earlier weeks predicted its next one no better than a constant), but how
//! busy an hour is, is learned by hour of the week (from the first
//! observation on, no warm-up from zero) and, for hours not seen yet, by
//! hour of the day and then as a typical hour. An hour's expected curve is
//! the pooled one times its jobs, and `allocate` spends the allowance of
//! late jobs (`1 − coverage` of the week's) where an idle slot saves
//! fewest of them: quiet hours keep less, busy ones more.
//!
//! The curves are a model. Once a day the allowance is corrected from how
//! many of the jobs the headroom is for really started late over the last
//! week, so a model that overstates misses (boots that are often in time,
//! slots that free sooner) buys less, and one that understates buys more.
//! Before any hour is learned, and while the last half hour runs at more
//! than twice the jobs its hour was learned with, the pool also keeps what
//! the last half hour needed to meet the coverage on its own.

mod allocate;
mod replay;

use std::time::Duration;

pub use allocate::HourCurve;
use replay::ReplayModel;

use crate::time::Timestamp;

const BIN_MS: u64 = 10_000;
/// One hour of bins.
const BINS: usize = 360;
/// The recent estimate looks back half an hour.
const RECENT_BINS: usize = 180;
const HOURS_PER_WEEK: usize = 168;
const HOURS_PER_DAY: usize = 24;
/// The largest headroom a miss curve is followed to (slots).
const MAX_SLOTS: u32 = 1024;
/// The next hour's headroom is made ready this long before it starts
/// (more than a boot).
const LEAD_MS: u64 = 120_000;
/// The online correction waits for this many started jobs in the week.
const MIN_OUTCOMES: u64 = 200;

/// Share of arriving jobs that should start within their target, in
/// thousandths.
pub const DEFAULT_COVERAGE_MILLI: u32 = 990;

/// What the pool's boots and its tightest target make of an arrival that
/// finds no idle slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposure {
    /// From a launch to the new worker taking a job (the boot estimate).
    pub boot: Duration,
    /// A job that starts this soon after it arrives is in time (the
    /// tightest target less the planner's reaction).
    pub in_time: Duration,
    /// Of the jobs that wait for a replacement, the share (thousandths)
    /// whose boot is longer than `in_time`: 1000 when every boot is, less
    /// when some boots fit in the target.
    pub late_milli: u32,
}

impl Exposure {
    fn model(&self) -> ReplayModel {
        let ms = |d: Duration| crate::time::duration_millis(d);
        ReplayModel {
            boot_bins: usize::try_from((ms(self.boot) + BIN_MS / 2) / BIN_MS)
                .unwrap_or(BINS)
                .clamp(1, BINS),
            in_time_bins: usize::try_from(ms(self.in_time) / BIN_MS).unwrap_or(BINS),
            late_milli: self.late_milli,
        }
    }
}

/// Arrival and completion history and the headroom it calls for.
#[derive(Debug, Clone)]
pub struct Headroom {
    /// Jobs that arrived, per bin, over the last hour (a ring).
    arrivals: Box<[u16; BINS]>,
    /// Slots freed by finishing jobs, per bin, the same way.
    freed: Box<[u16; BINS]>,
    /// Absolute index (ms / `BIN_MS`) of the newest bin.
    newest: u64,
    /// Learned miss curve per hour of the week; `None` until seen.
    hours: Vec<Option<HourCurve>>,
    /// The same per hour of the day, whatever the day: it stands in for an
    /// hour of the week not seen yet, so the plan is ahead of demand from
    /// the second day on rather than the second week.
    days: Vec<Option<HourCurve>>,
    /// Misses per headroom summed over the hours of about the last week
    /// (each hour's weight decays by 1/168 an hour), and their jobs.
    pooled: Vec<u64>,
    pooled_jobs: u64,
    /// Headroom per hour of the week from the learned curves.
    plan: Vec<Option<u32>>,
    /// The hour (absolute) whose bins are being filled.
    hour: u64,
    /// What the last half hour needed on its own, as of the newest bin.
    recent: u32,
    /// Jobs that arrived in the last half hour, as of the newest bin.
    recent_jobs: u32,
    /// Jobs the headroom is for that started, and how many of them late,
    /// per hour of the last week (a ring by absolute hour).
    outcomes: Vec<(u32, u32)>,
    /// The absolute hour of the newest `outcomes` entry.
    outcome_hour: u64,
    /// The allowance of late jobs the plan spends, as thousandths of what
    /// the coverage allows: the online correction. The curves are a model;
    /// when more jobs really start late than the coverage allows, the plan
    /// spends less, and more when fewer do.
    scale_milli: u32,
}

impl Default for Headroom {
    fn default() -> Self {
        Headroom {
            arrivals: Box::new([0; BINS]),
            freed: Box::new([0; BINS]),
            newest: 0,
            hours: vec![None; HOURS_PER_WEEK],
            days: vec![None; HOURS_PER_DAY],
            pooled: Vec::new(),
            pooled_jobs: 0,
            plan: vec![None; HOURS_PER_WEEK],
            hour: 0,
            recent: 0,
            recent_jobs: 0,
            outcomes: vec![(0, 0); HOURS_PER_WEEK],
            outcome_hour: 0,
            scale_milli: 1000,
        }
    }
}

impl Headroom {
    /// Counts one arrival at `now`; `coverage_milli` is the pool's.
    pub fn observe(&mut self, now: Timestamp, exposure: Exposure, coverage_milli: u32) {
        self.advance(now, exposure, coverage_milli);
        let slot = &mut self.arrivals[(self.newest % BINS as u64) as usize];
        *slot = slot.saturating_add(1);
    }

    /// Counts one slot freed by a finishing job at `now`.
    pub fn freed(&mut self, now: Timestamp, exposure: Exposure, coverage_milli: u32) {
        self.advance(now, exposure, coverage_milli);
        let slot = &mut self.freed[(self.newest % BINS as u64) as usize];
        *slot = slot.saturating_add(1);
    }

    /// Counts a job the headroom is for (its class's target is shorter than
    /// a launch at arrival can meet) that started at `now`, in time or not.
    pub fn started(&mut self, now: Timestamp, late: bool) {
        let hour = now.as_millis() / 3_600_000;
        if hour > self.outcome_hour {
            for h in (self.outcome_hour + 1..=hour).take(HOURS_PER_WEEK) {
                self.outcomes[(h % HOURS_PER_WEEK as u64) as usize] = (0, 0);
            }
            self.outcome_hour = hour;
        }
        let o = &mut self.outcomes[(hour % HOURS_PER_WEEK as u64) as usize];
        o.0 = o.0.saturating_add(1);
        o.1 = o.1.saturating_add(u32::from(late));
    }

    /// Late jobs (millionths) the plan may let through: the coverage's
    /// allowance, corrected by what really happened.
    fn late_ppm(&self, coverage_milli: u32) -> u64 {
        u64::from(1000 - coverage_milli.min(1000)) * u64::from(self.scale_milli)
    }

    /// Once a day, corrects the allowance from the week's outcomes: by the
    /// square root of how far the late share was from the allowed one
    /// (at most halved or doubled before the root), within a quarter and
    /// four times the coverage's own. Daily and damped, so one bursty day
    /// moves it a little and a model that is steadily off is corrected
    /// within days.
    fn correct(&mut self, from_hour: u64, hour: u64, coverage_milli: u32) {
        let day = HOURS_PER_DAY as u64;
        if from_hour / day == hour / day {
            return;
        }
        let (started, late) = (1..=HOURS_PER_WEEK as u64)
            .filter_map(|back| hour.checked_sub(back))
            .filter(|h| *h <= self.outcome_hour && self.outcome_hour - h < HOURS_PER_WEEK as u64)
            .map(|h| self.outcomes[(h % HOURS_PER_WEEK as u64) as usize])
            .fold((0u64, 0u64), |(s, l), (a, b)| {
                (s + u64::from(a), l + u64::from(b))
            });
        if started < MIN_OUTCOMES {
            return;
        }
        let allowed = f64::from(1000 - coverage_milli.min(1000)) / 1000.0;
        let actual = late as f64 / started as f64;
        let factor = if actual <= 0.0 {
            2.0
        } else {
            (allowed / actual).clamp(0.5, 2.0)
        };
        let scaled = f64::from(self.scale_milli) * factor.sqrt();
        self.scale_milli = (scaled.round() as u32).clamp(250, 4000);
    }

    /// Moves the bins to `now`: an hour that ended is learned first, and
    /// as each bin closes the recent estimate is brought up to date.
    pub fn advance(&mut self, now: Timestamp, exposure: Exposure, coverage_milli: u32) {
        let idx = now.as_millis() / BIN_MS;
        let hour = now.as_millis() / 3_600_000;
        if self.newest == 0 {
            self.newest = idx;
            self.hour = hour;
            return;
        }
        if hour > self.hour {
            self.learn_hours(hour, exposure, coverage_milli);
        }
        if idx > self.newest {
            let gap = (idx - self.newest).min(BINS as u64);
            for k in 1..=gap {
                let i = ((self.newest + k) % BINS as u64) as usize;
                self.arrivals[i] = 0;
                self.freed[i] = 0;
            }
            self.newest = idx;
            let (arrivals, _) = self.window(RECENT_BINS);
            self.recent_jobs = arrivals.iter().map(|n| u32::from(*n)).sum();
            self.recent = self.need(RECENT_BINS, exposure, coverage_milli);
        }
    }

    /// Folds the hour that ended (and any hours that passed with nothing at
    /// all, as quiet) into their slots, and plans the week again.
    fn learn_hours(&mut self, hour: u64, exposure: Exposure, coverage_milli: u32) {
        let (arrivals, freed) = self.window(BINS);
        let ended = HourCurve {
            jobs: arrivals.iter().map(|n| u32::from(*n)).sum(),
            misses: replay::curve(&arrivals, &freed, exposure.model(), MAX_SLOTS),
        };
        self.fold(self.hour, &ended);
        self.pool_in(&ended);
        for h in (self.hour + 1..hour).take(HOURS_PER_WEEK) {
            self.fold(h, &HourCurve::default());
        }
        self.correct(self.hour, hour, coverage_milli);
        self.hour = hour;
        // An hour not seen on any day yet is taken to be as busy as the
        // hours seen so far on average.
        let seen: Vec<u32> = self.days.iter().flatten().map(|c| c.jobs).collect();
        let typical = u32::try_from(
            seen.iter().map(|j| u64::from(*j)).sum::<u64>() / (seen.len().max(1) as u64),
        )
        .unwrap_or(u32::MAX);
        let week: Vec<Option<HourCurve>> = (0..HOURS_PER_WEEK)
            .map(|h| {
                let jobs = self.hours[h]
                    .as_ref()
                    .or(self.days[h % HOURS_PER_DAY].as_ref())
                    .map_or(typical, |c| c.jobs);
                Some(self.expected(jobs))
            })
            .collect();
        self.plan = allocate::allocate(&week, self.late_ppm(coverage_milli));
    }

    fn pool_in(&mut self, curve: &HourCurve) {
        let keep = |v: u64| v - v / HOURS_PER_WEEK as u64;
        if self.pooled.len() < curve.misses.len() {
            self.pooled.resize(curve.misses.len(), 0);
        }
        for (h, m) in self.pooled.iter_mut().enumerate() {
            *m = keep(*m) + u64::from(curve.misses.get(h).copied().unwrap_or(0));
        }
        self.pooled_jobs = keep(self.pooled_jobs) + u64::from(curve.jobs);
    }

    /// An hour's expected miss curve: the pooled misses per job, times the
    /// jobs the hour was learned with. Bursts come at no hour of the week
    /// in particular, so an hour's own curve (a few observations) is a
    /// poor guide to its next one; how busy the hour is, is a good one.
    fn expected(&self, jobs: u32) -> HourCurve {
        let per = self.pooled_jobs.max(1);
        HourCurve {
            jobs,
            misses: self
                .pooled
                .iter()
                .map(|m| u32::try_from(m * u64::from(jobs) / per).unwrap_or(u32::MAX))
                .collect(),
        }
    }

    fn fold(&mut self, hour: u64, curve: &HourCurve) {
        let week = &mut self.hours[(hour % HOURS_PER_WEEK as u64) as usize];
        let day = &mut self.days[(hour % HOURS_PER_DAY as u64) as usize];
        for slot in [week, day] {
            match slot {
                None => *slot = Some(curve.clone()),
                Some(old) => old.fold(curve),
            }
        }
    }

    /// The last `span` bins, oldest first.
    fn window(&self, span: usize) -> (Vec<u16>, Vec<u16>) {
        let first = self.newest.saturating_sub(span as u64 - 1);
        let pick = |ring: &[u16; BINS]| -> Vec<u16> {
            (first..=self.newest)
                .map(|abs| ring[(abs % BINS as u64) as usize])
                .collect()
        };
        (pick(&self.arrivals), pick(&self.freed))
    }

    /// The smallest headroom with which the last `span` bins would have
    /// let at most `1 − coverage` of their jobs through late.
    fn need(&self, span: usize, exposure: Exposure, coverage_milli: u32) -> u32 {
        let (arrivals, freed) = self.window(span);
        let jobs: u64 = arrivals.iter().map(|n| u64::from(*n)).sum();
        let allowed = jobs * self.late_ppm(coverage_milli) / 1000;
        let model = exposure.model();
        let (mut lo, mut hi) = (
            0u32,
            u32::try_from(jobs).unwrap_or(MAX_SLOTS).min(MAX_SLOTS),
        );
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if replay::misses_milli(&arrivals, &freed, mid, model) <= allowed {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// Idle slots to keep on top of the busy ones at `now`: the week's plan
    /// for this hour (and the next one's, shortly before it starts), or
    /// the last half hour's own need where the hour is not learned yet or
    /// runs at more than twice the jobs it was learned with.
    pub fn slots(&self, now: Timestamp) -> u32 {
        let idx = now.as_millis() / BIN_MS;
        let recent = if idx.saturating_sub(self.newest) >= RECENT_BINS as u64 {
            0
        } else {
            self.recent
        };
        let h = now.hour_of_week();
        let Some(planned) = self.plan[h] else {
            return recent;
        };
        let into_hour = now.as_millis() % 3_600_000;
        let next = if 3_600_000 - into_hour <= LEAD_MS {
            self.plan[(h + 1) % HOURS_PER_WEEK].unwrap_or(0)
        } else {
            0
        };
        let learned_jobs = self.hours[h]
            .as_ref()
            .or(self.days[h % HOURS_PER_DAY].as_ref())
            .map_or(0, |c| c.jobs);
        // Half an hour's arrivals against a whole hour's.
        let surging = self.recent_jobs.saturating_mul(2) > learned_jobs.saturating_mul(2).max(1);
        let planned = planned.max(next);
        if surging {
            planned.max(recent)
        } else {
            planned
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: Exposure = Exposure {
        boot: Duration::from_secs(30),
        in_time: Duration::from_secs(5),
        late_milli: 1000,
    };

    const HOUR: u64 = 3600;
    const WEEK: u64 = 7 * 86_400;

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
        h.advance(at(1800), BOOT, 990);
        assert_eq!(h.slots(at(1800)), 1);
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
        h.advance(at(1510), BOOT, 990);
        let slots = h.slots(at(1510));
        assert!(
            (30..=40).contains(&slots),
            "most of the burst's jobs must find a worker idle: {slots}"
        );
        let mut lax = h.clone();
        lax.advance(at(1520), BOOT, 500);
        assert!(lax.slots(at(1520)) < slots, "lower coverage, less headroom");
    }

    #[test]
    fn slots_freed_by_finishing_jobs_lower_the_need() {
        let (mut busy, mut idle) = (Headroom::default(), Headroom::default());
        // Four arrivals every 10 s; in `busy` as many jobs finish.
        for i in 0..120 {
            for _ in 0..4 {
                busy.observe(at(i * 10), BOOT, 990);
                busy.freed(at(i * 10), BOOT, 990);
                idle.observe(at(i * 10), BOOT, 990);
            }
        }
        busy.advance(at(1200), BOOT, 990);
        idle.advance(at(1200), BOOT, 990);
        assert!(
            busy.slots(at(1200)) < idle.slots(at(1200)),
            "{} vs {}",
            busy.slots(at(1200)),
            idle.slots(at(1200))
        );
    }

    #[test]
    fn the_same_hour_next_week_is_ready_before_its_burst() {
        let mut h = Headroom::default();
        // A burst of 20 at 00:10 in week 0, among a trickle.
        for i in 0..120 {
            h.observe(at(i * 30), BOOT, 990);
        }
        for _ in 0..20 {
            h.observe(at(600), BOOT, 990);
        }
        // Roll past the hour, then a week of nothing.
        h.advance(at(HOUR + 5), BOOT, 990);
        h.advance(at(WEEK - 60), BOOT, 990);
        // A week later, at 00:00, before any arrival: ready for it.
        let ready = h.slots(at(WEEK));
        assert!(ready >= 15, "{ready}");
        // A quiet hour learned as quiet.
        assert_eq!(h.slots(at(WEEK + 5 * HOUR)), 0);
    }

    #[test]
    fn the_weeks_allowance_goes_to_the_quiet_hours_burst() {
        let mut h = Headroom::default();
        // Hour 0: busy, a burst of 20 every two minutes. Hour 1: a trickle
        // and one burst of 30.
        for i in 0..30 {
            for _ in 0..20 {
                h.observe(at(i * 120), BOOT, 990);
            }
        }
        for i in 0..60 {
            h.observe(at(HOUR + i * 60), BOOT, 990);
        }
        for _ in 0..30 {
            h.observe(at(HOUR + 1800), BOOT, 990);
        }
        h.advance(at(2 * HOUR + 5), BOOT, 990);
        let busy = h.slots(at(WEEK + 60));
        let quiet = h.slots(at(WEEK + HOUR + 60));
        assert!(busy >= 19, "the busy hour keeps its need: {busy}");
        assert!(
            quiet < 30 && quiet > 0,
            "the quiet hour's burst spends the week's allowance: {quiet}"
        );
    }

    /// Two days of hours with a trickle of 120 jobs each; hour 3 of day 0
    /// also has a burst of 40. Planned to let 0.1 % through late.
    fn two_days() -> Headroom {
        let mut h = Headroom::default();
        for hour in 0..48 {
            let start = hour * HOUR;
            for i in 0..120 {
                h.observe(at(start + i * 30), BOOT, 999);
            }
            if hour == 3 {
                for _ in 0..40 {
                    h.observe(at(start + 900), BOOT, 999);
                }
            }
        }
        h.advance(at(48 * HOUR + 5), BOOT, 999);
        h
    }

    #[test]
    fn a_burst_in_one_hour_raises_the_headroom_of_every_hour_as_busy() {
        let h = two_days();
        let elsewhere = h.slots(at(2 * 86_400 + 10 * HOUR + 60));
        assert!(
            elsewhere > 2,
            "bursts come at any hour: an hour as busy keeps room for one too ({elsewhere})"
        );
        let own = h.slots(at(2 * 86_400 + 3 * HOUR + 60));
        assert!(
            own >= elsewhere && own < 2 * elsewhere,
            "the hour that had it counts as busier, not as the only one: {own} vs {elsewhere}"
        );
    }

    #[test]
    fn jobs_starting_late_tighten_the_plan_and_none_late_loosen_it() {
        let base = two_days();
        let mut late = base.clone();
        let mut on_time = base.clone();
        for i in 0..300 {
            late.started(at(48 * HOUR + 10 + i), i % 100 == 0);
            on_time.started(at(48 * HOUR + 10 + i), false);
        }
        // The correction runs once a day, at midnight.
        late.advance(at(72 * HOUR + 5), BOOT, 999);
        on_time.advance(at(72 * HOUR + 5), BOOT, 999);
        assert!(late.scale_milli < 1000 && on_time.scale_milli > 1000);
        let week = |h: &Headroom| h.plan.iter().flatten().map(|s| u64::from(*s)).sum::<u64>();
        assert!(
            week(&late) > week(&on_time),
            "{} vs {} slot-hours a week",
            week(&late),
            week(&on_time)
        );
    }

    #[test]
    fn an_hour_far_busier_than_it_was_learned_is_sized_from_what_it_sees() {
        let mut h = Headroom::default();
        // Week 0: a quiet trickle in hour 0.
        for i in 0..60 {
            h.observe(at(i * 60), BOOT, 990);
        }
        h.advance(at(HOUR + 5), BOOT, 990);
        let planned = h.slots(at(WEEK + 600));
        // Week 1, the same hour: bursts of 15 every minute.
        for i in 0..20 {
            for _ in 0..15 {
                h.observe(at(WEEK + i * 60), BOOT, 990);
            }
        }
        h.advance(at(WEEK + 1205), BOOT, 990);
        let now = h.slots(at(WEEK + 1205));
        assert!(
            now >= 14 && now > planned,
            "the plan said {planned}, the bursts need about 15: {now}"
        );
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
        let slots_with = |late_milli: u32| {
            let e = Exposure { late_milli, ..BOOT };
            let mut h = h.clone();
            h.advance(at(1510), e, 990);
            h.slots(at(1510))
        };
        assert!(slots_with(500) < slots_with(1000));
        assert_eq!(slots_with(0), 0, "every boot is in time");
    }

    #[test]
    fn nothing_arriving_needs_nothing() {
        let h = Headroom::default();
        assert_eq!(h.slots(at(0)), 0);
    }
}
