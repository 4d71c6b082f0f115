//! The per-pool scaling arithmetic, as pure functions of a snapshot.
//!
//! The question the planner answers: *how many more job slots must start
//! booting now so that every waiting job routed to this pool starts before
//! its SLA deadline?* It checks a fixed ladder of future instants
//! ([`Checkpoints`]). At each instant `c` it compares
//!
//! * demand `d(c)`: waiting jobs whose deadline is at or before `c`, with
//! * supply `s(c)`: idle slots now, booting slots expected ready by `c`, and
//!   busy slots expected to free by `c` (busy × elapsed / mean run time,
//!   capped at all of them).
//!
//! The shortfall is `max_c (d(c) − s(c))`. Jobs with a lot of slack (a
//! best-effort job due tomorrow) therefore wait for slots to free up instead
//! of buying instances, while a job due within one boot time triggers an
//! immediate launch that overrides the cooldown. When there is no shortfall,
//! the idle slots that every checkpoint can spare are surplus.

use std::time::Duration;

use crate::time::Timestamp;

/// Offsets of the checkpoints from `now`, in seconds. Fine near now (a
/// 60 s SLA with a 30 s boot is decided within seconds), coarse later (a
/// 24 h SLA needs no second-level resolution); the last entry stands for
/// "any time later" and holds every waiting job.
const OFFSETS_SECS: [u64; 33] = [
    0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 90, 120, 150, 180, 240, 300, 450, 600, 900, 1200,
    1800, 2700, 3600, 5400, 7200, 10_800, 14_400, 21_600, 28_800, 43_200, 64_800, 86_400,
];

/// Margin added to a boot estimate for the tick, the launch API call and
/// agent registration, when deciding that a job can no longer wait.
const LEAD_MARGIN: Duration = Duration::from_secs(15);

/// Number of checkpoints including the final "eventually" one.
pub const CHECKPOINTS: usize = OFFSETS_SECS.len() + 1;

/// The instants demand and supply are compared at.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoints {
    /// `now`.
    pub now: Timestamp,
    /// The instants, ascending; the last is "eventually".
    pub at: [Timestamp; CHECKPOINTS],
}

impl Checkpoints {
    /// The ladder starting at `now`.
    pub fn new(now: Timestamp) -> Self {
        let mut at = [Timestamp::from_millis(u64::MAX); CHECKPOINTS];
        for (slot, off) in at.iter_mut().zip(OFFSETS_SECS) {
            *slot = now + Duration::from_secs(off);
        }
        Checkpoints { now, at }
    }
}

/// Cumulative demand: `due[i]` jobs have a deadline at or before checkpoint
/// `i`; `due[CHECKPOINTS-1]` is every routed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Cumulative counts, non-decreasing.
    pub due: [u32; CHECKPOINTS],
}

impl Default for Demand {
    fn default() -> Self {
        Demand {
            due: [0; CHECKPOINTS],
        }
    }
}

impl Demand {
    /// All jobs in this demand.
    pub fn total(&self) -> u32 {
        self.due[CHECKPOINTS - 1]
    }

    /// Adds another demand vector.
    pub fn add(&mut self, other: &Demand) {
        for (a, b) in self.due.iter_mut().zip(other.due) {
            *a += b;
        }
    }

    /// The `take` jobs with the latest deadlines, as their own demand (used
    /// to spill what a full pool cannot serve to the next pool).
    pub fn latest(&self, take: u32) -> Demand {
        let keep = self.total().saturating_sub(take);
        let mut out = Demand::default();
        for (o, d) in out.due.iter_mut().zip(self.due) {
            *o = d.saturating_sub(keep);
        }
        out
    }

    /// Removes the jobs described by `part` (which must be `self.latest(..)`).
    pub fn subtract(&mut self, part: &Demand) {
        for (a, b) in self.due.iter_mut().zip(part.due) {
            *a = a.saturating_sub(b);
        }
    }
}

/// What a pool has, in job slots.
#[derive(Debug, Clone, Default)]
pub struct Supply {
    /// Free slots on registered workers taking work.
    pub idle_slots: u32,
    /// Slots holding jobs.
    pub busy_slots: u32,
    /// Expected ready time of each booting or requested worker's slots.
    pub booting: Vec<(Timestamp, u32)>,
    /// Mean job run time observed in this pool.
    pub mean_job_duration: Duration,
}

impl Supply {
    /// Slots sure to exist by `c`: idle ones and booting ones ready by then.
    fn certain_at(&self, c: Timestamp) -> u64 {
        let booting: u64 = self
            .booting
            .iter()
            .filter(|(t, _)| *t <= c)
            .map(|(_, s)| u64::from(*s))
            .sum();
        u64::from(self.idle_slots) + booting
    }

    /// Slots expected by `c`: the certain ones plus busy slots freeing at
    /// the observed rate.
    fn at(&self, now: Timestamp, c: Timestamp) -> u64 {
        let elapsed = c.saturating_since(now).as_millis();
        let mean = self.mean_job_duration.as_millis().max(1);
        let freed = if c == Timestamp::from_millis(u64::MAX) || elapsed >= mean {
            u64::from(self.busy_slots)
        } else {
            u64::try_from(u128::from(self.busy_slots) * elapsed / mean).unwrap_or(u64::MAX)
        };
        self.certain_at(c) + freed
    }
}

/// The planner's verdict for one pool, in slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotPlan {
    /// Extra slots that must start booting now.
    pub short: u32,
    /// Of those, jobs due within the lead time that no idle or booting slot
    /// covers: they breach unless capacity starts at once (an emergency).
    pub at_risk: u32,
    /// Idle slots no checkpoint needs.
    pub surplus_idle: u32,
}

/// How long before its deadline a waiting job must get capacity started:
/// the boot estimate plus a quarter, plus a fixed margin for the tick, the
/// launch call and registration. Dispatch serves jobs this close to their
/// deadline first, matching what the planner launched for.
pub fn lead_time(boot_estimate: Duration) -> Duration {
    boot_estimate + boot_estimate / 4 + LEAD_MARGIN
}

/// Compares demand and supply at every checkpoint.
///
/// Jobs due within the *lead time* (boot estimate + 25 % + a fixed margin)
/// can no longer wait for a busy slot to free by chance: for them only idle
/// slots and booting workers count (those ready within one boot from now
/// cover even overdue jobs: nothing launched now is sooner), and any gap is
/// launched now and flagged as at risk (an SLA emergency that overrides the
/// scale-up cooldown).
/// Jobs due later may count on busy slots freeing at the observed rate, so
/// lax work waits for capacity instead of buying it; if they are still
/// waiting when their own lead time arrives, the strict rule catches them.
pub fn plan_slots(
    cp: &Checkpoints,
    demand: &Demand,
    supply: &Supply,
    boot_estimate: Duration,
) -> SlotPlan {
    let lead = cp.now + lead_time(boot_estimate);
    // A worker launched now is ready one boot from now, no sooner: for a
    // job due before then (overdue ones included), a worker already booting
    // and ready by then serves it at least as early as a new one would.
    // Counting only what is ready by the deadline itself would launch a
    // fresh batch at every re-plan until the first batch is up.
    let fresh_ready = cp.now + boot_estimate;
    let mut short: i64 = 0;
    let mut at_risk: i64 = 0;
    let mut spare = i64::from(supply.idle_slots);
    for (c, d) in cp.at.iter().zip(demand.due) {
        let urgent = *c <= lead;
        let have = if urgent {
            supply.certain_at((*c).max(fresh_ready))
        } else {
            supply.at(cp.now, *c)
        };
        let gap = i64::from(d) - i64::try_from(have).unwrap_or(i64::MAX);
        short = short.max(gap);
        if urgent {
            at_risk = at_risk.max(gap);
        }
        spare = spare.min(-gap);
    }
    SlotPlan {
        short: u32::try_from(short.max(0)).unwrap_or(u32::MAX),
        at_risk: u32::try_from(at_risk.max(0)).unwrap_or(u32::MAX),
        surplus_idle: u32::try_from(spare.max(0)).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand_at(cp: &Checkpoints, deadlines: &[Timestamp]) -> Demand {
        let mut d = Demand::default();
        for (i, c) in cp.at.iter().enumerate() {
            d.due[i] =
                u32::try_from(deadlines.iter().filter(|t| **t <= *c).count()).expect("small");
        }
        d
    }

    fn now() -> Timestamp {
        Timestamp::from_secs(1_000_000)
    }

    #[test]
    fn jobs_due_soon_with_no_capacity_need_slots_now() {
        let cp = Checkpoints::new(now());
        let d = demand_at(&cp, &[now() + Duration::from_secs(60); 3]);
        let plan = plan_slots(
            &cp,
            &d,
            &Supply {
                mean_job_duration: Duration::from_secs(600),
                ..Default::default()
            },
            Duration::from_secs(30),
        );
        assert_eq!(plan.short, 3);
        assert_eq!(plan.at_risk, 0, "60 s of slack covers a 30 s boot");
    }

    #[test]
    fn jobs_due_within_a_boot_time_are_an_emergency() {
        let cp = Checkpoints::new(now());
        let d = demand_at(&cp, &[now(); 2]);
        let plan = plan_slots(
            &cp,
            &d,
            &Supply {
                mean_job_duration: Duration::from_secs(600),
                ..Default::default()
            },
            Duration::from_secs(30),
        );
        assert_eq!(plan.at_risk, 2);
    }

    #[test]
    fn lax_jobs_wait_for_busy_slots_to_free() {
        let cp = Checkpoints::new(now());
        // 10 busy slots with 10-minute jobs free all by the deadline in 4 h.
        let d = demand_at(&cp, &[now() + Duration::from_secs(4 * 3600); 10]);
        let s = Supply {
            busy_slots: 10,
            mean_job_duration: Duration::from_secs(600),
            ..Default::default()
        };
        assert_eq!(plan_slots(&cp, &d, &s, Duration::from_secs(30)).short, 0);
    }

    #[test]
    fn idle_slots_beyond_demand_are_surplus() {
        let cp = Checkpoints::new(now());
        let d = demand_at(&cp, &[now() + Duration::from_secs(60)]);
        let s = Supply {
            idle_slots: 5,
            mean_job_duration: Duration::from_secs(600),
            ..Default::default()
        };
        let plan = plan_slots(&cp, &d, &s, Duration::from_secs(30));
        assert_eq!((plan.short, plan.surplus_idle), (0, 4));
    }

    #[test]
    fn booting_slots_count_once_ready() {
        let cp = Checkpoints::new(now());
        let d = demand_at(&cp, &[now() + Duration::from_secs(120); 4]);
        let s = Supply {
            booting: vec![(now() + Duration::from_secs(20), 4)],
            mean_job_duration: Duration::from_secs(600),
            ..Default::default()
        };
        assert_eq!(plan_slots(&cp, &d, &s, Duration::from_secs(30)).short, 0);
    }

    #[test]
    fn overdue_jobs_are_covered_by_workers_ready_within_one_boot() {
        let cp = Checkpoints::new(now());
        // 20 jobs past their deadline; 20 workers launched 10 s ago, ready
        // in 20 s; a fresh launch would take 30 s.
        let overdue = now() - Duration::from_secs(5);
        let d = demand_at(&cp, &[overdue; 20]);
        let s = Supply {
            booting: vec![(now() + Duration::from_secs(20), 1); 20],
            mean_job_duration: Duration::from_secs(600),
            ..Default::default()
        };
        let plan = plan_slots(&cp, &d, &s, Duration::from_secs(30));
        assert_eq!((plan.short, plan.at_risk), (0, 0));
        // Ten fewer booting: exactly those ten are launched, as an emergency.
        let s = Supply {
            booting: vec![(now() + Duration::from_secs(20), 1); 10],
            ..s
        };
        let plan = plan_slots(&cp, &d, &s, Duration::from_secs(30));
        assert_eq!((plan.short, plan.at_risk), (10, 10));
    }

    #[test]
    fn a_worker_booting_slower_than_a_fresh_one_does_not_cover_an_overdue_job() {
        let cp = Checkpoints::new(now());
        let d = demand_at(&cp, &[now(); 1]);
        let s = Supply {
            // A big machine with a 90 s boot, in a pool whose estimate is 30 s.
            booting: vec![(now() + Duration::from_secs(90), 1)],
            mean_job_duration: Duration::from_secs(600),
            ..Default::default()
        };
        assert_eq!(plan_slots(&cp, &d, &s, Duration::from_secs(30)).short, 1);
    }

    #[test]
    fn spilling_the_latest_jobs_keeps_the_earliest() {
        let cp = Checkpoints::new(now());
        let d = demand_at(&cp, &[now(), now() + Duration::from_secs(100_000)]);
        let spilled = d.latest(1);
        assert_eq!(spilled.due[0], 0);
        assert_eq!(spilled.total(), 1);
        let mut kept = d;
        kept.subtract(&spilled);
        assert_eq!((kept.due[0], kept.total()), (1, 1));
    }
}
