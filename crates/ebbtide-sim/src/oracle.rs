//! References for a replay's cost: a proven lower bound and a clairvoyant
//! schedule as an upper bound (see `docs/simulator.md` for the
//! definitions and the proof that the first is a bound).
//!
//! For a trace replayed on one pool with `c` slots per instance, cheapest
//! price `p` per instance-hour over every market and zone the simulation can
//! charge, and shortest possible boot `b`:
//!
//! * every job `j` runs for `d_j` on some slot, so instances are billed at
//!   least `W / c` with `W = Σ d_j`;
//! * a job with SLA target `s_j < d_j` that starts in time is running during
//!   `[a_j + s_j, a_j + d_j)` whenever it starts; if `K` of these mandatory
//!   intervals overlap at one instant, at least `⌈K / c⌉` instances exist
//!   then, and each was billed at least `b` of boot with no job on it;
//!
//! so any schedule that starts every job within its SLA costs at least
//! `p · (W / c + ⌈K / c⌉ · b)`.

use std::collections::HashMap;
use std::time::Duration;

use ebbtide_core::{CostAccum, PricePerHour};
use serde::Serialize;

use crate::trace::Trace;

/// The bound and its ingredients.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OracleReport {
    /// The lower bound, micro-dollars.
    pub cost_micros: i64,
    /// `W`: job run time, hours.
    pub work_hours: f64,
    /// `K`: most mandatory intervals overlapping at one instant.
    pub peak_mandatory_jobs: u64,
    /// `b`: shortest boot, seconds.
    pub min_boot_s: f64,
    /// `p`: cheapest price, micro-dollars per instance-hour.
    pub price_micros_per_hour: i64,
}

/// Computes the bound. `targets` maps class names to SLA targets; jobs of
/// unknown classes are treated as having no deadline (no mandatory part).
pub fn lower_bound(
    trace: &Trace,
    targets: &HashMap<String, Duration>,
    slots_per_instance: u32,
    cheapest: PricePerHour,
    min_boot: Duration,
) -> OracleReport {
    let cap = u128::from(slots_per_instance.max(1));
    let mut work_ms: u128 = 0;
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for j in &trace.jobs {
        let d = j.duration.as_millis() as u64;
        work_ms += u128::from(d);
        if let Some(s) = targets.get(&j.class) {
            let s = s.as_millis() as u64;
            if s < d {
                edges.push((j.submit_ms + s, 1));
                edges.push((j.submit_ms + d, -1));
            }
        }
    }
    // Half-open intervals: at equal times, ends come before starts.
    edges.sort_unstable();
    let (mut running, mut peak) = (0i64, 0i64);
    for (_, delta) in edges {
        running += i64::from(delta);
        peak = peak.max(running);
    }
    let k = peak.max(0) as u128;
    let boot_ms = min_boot.as_millis();
    let instance_ms_times_cap = work_ms + k.div_ceil(cap) * boot_ms * cap;
    let price = u128::try_from(cheapest.0.0.max(0)).unwrap_or(0);
    let cost = CostAccum(price * instance_ms_times_cap / cap);
    OracleReport {
        cost_micros: cost.to_micros().0,
        work_hours: work_ms as f64 / 3_600_000.0,
        peak_mandatory_jobs: k as u64,
        min_boot_s: min_boot.as_secs_f64(),
        price_micros_per_hour: cheapest.0.0,
    }
}

/// The clairvoyant schedule and what it is made of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClairvoyantReport {
    /// What it costs, micro-dollars.
    pub cost_micros: i64,
    /// Instances it launches.
    pub instances: u64,
    /// Job run time, hours.
    pub work_hours: f64,
    /// Instance time spent booting, hours.
    pub boot_hours: f64,
    /// Instance time kept idle between jobs, hours.
    pub idle_hours: f64,
    /// Billed beyond the instances' lives by the minimum charge, hours.
    pub minimum_charge_hours: f64,
    /// The boot it assumes, seconds.
    pub boot_s: f64,
    /// The price it pays, micro-dollars per instance-hour.
    pub price_micros_per_hour: i64,
}

/// A schedule that knows the whole trace: every job starts the moment it
/// arrives, on the most recently freed instance if that instance has been
/// idle for less than a boot (keeping it was cheaper than booting anew,
/// and it knows the job is coming), otherwise on an instance launched one
/// `boot` earlier; an instance no job will take within a boot of its last
/// one ends with that job. Priced at `price`, each instance billed at least
/// `min_billing`, with no failures or reclamations.
///
/// It meets every SLA, so the cheapest schedule in that world costs at most
/// this: an upper bound, to read a policy's cost against. One job runs per
/// instance; with several slots per instance it is still a schedule, only
/// a looser bound.
pub fn clairvoyant(
    trace: &Trace,
    price: PricePerHour,
    boot: Duration,
    min_billing: Duration,
) -> ClairvoyantReport {
    let mut starts: Vec<(u64, u64)> = trace
        .jobs
        .iter()
        .map(|j| (j.submit_ms, j.duration.as_millis() as u64))
        .collect();
    starts.sort_unstable();
    let boot_ms = boot.as_millis() as u64;
    let min_ms = min_billing.as_millis() as u64;
    // Free instances, most recently freed on top: (first job's start,
    // freed); each was launched one boot before its first job.
    let mut free: Vec<(u64, u64)> = Vec::new();
    // Instances running a job, by their end: (end, born).
    let mut busy: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u64)>> =
        std::collections::BinaryHeap::new();
    let (mut work, mut idle, mut extra, mut instances) = (0u128, 0u128, 0u128, 0u64);
    let retire = |born: u64, freed: u64, extra: &mut u128| {
        let life = freed.saturating_sub(born) + boot_ms;
        *extra += u128::from(min_ms.saturating_sub(life));
    };
    for (at, duration) in starts {
        // Instances freed by now join the free stack in the order they
        // freed (one freed as a job arrives takes it).
        while let Some(std::cmp::Reverse((end, born))) = busy.peek().copied()
            && end <= at
        {
            busy.pop();
            free.push((born, end));
        }
        work += u128::from(duration);
        let born = match free.last().copied() {
            Some((born, freed)) if at - freed < boot_ms => {
                free.pop();
                idle += u128::from(at - freed);
                born
            }
            _ => {
                // Every free instance has waited a boot or more: none is
                // worth keeping, the oldest least of all.
                for (born, freed) in free.drain(..) {
                    retire(born, freed, &mut extra);
                }
                instances += 1;
                at
            }
        };
        busy.push(std::cmp::Reverse((at + duration, born)));
    }
    while let Some(std::cmp::Reverse((end, born))) = busy.pop() {
        free.push((born, end));
    }
    for (born, freed) in free.drain(..) {
        retire(born, freed, &mut extra);
    }
    let boots = u128::from(instances) * u128::from(boot_ms);
    let billed_ms = work + idle + boots + extra;
    let rate = u128::try_from(price.0.0.max(0)).unwrap_or(0);
    let hours = |ms: u128| ms as f64 / 3_600_000.0;
    ClairvoyantReport {
        cost_micros: CostAccum(rate * billed_ms).to_micros().0,
        instances,
        work_hours: hours(work),
        boot_hours: hours(boots),
        idle_hours: hours(idle),
        minimum_charge_hours: hours(extra),
        boot_s: boot.as_secs_f64(),
        price_micros_per_hour: price.0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceJob;
    use ebbtide_core::Micros;

    fn job(at_s: u64, secs: u64) -> TraceJob {
        TraceJob {
            submit_ms: at_s * 1000,
            duration: Duration::from_secs(secs),
            tenant: "t".into(),
            class: "high".into(),
            labels: Vec::new(),
            cpu_millis: 0,
            memory_mib: 0,
        }
    }

    fn trace(jobs: Vec<TraceJob>) -> Trace {
        Trace {
            jobs,
            skipped: Vec::new(),
        }
    }

    /// $3.60 an hour is one micro-dollar per millisecond.
    const PRICE: PricePerHour = PricePerHour(Micros(3_600_000));

    #[test]
    fn a_job_arriving_within_a_boot_reuses_the_freed_instance_and_a_later_one_boots() {
        // Boot 30 s. Job 1 runs 0–100 s. Job 2 arrives at 120 s (idle 20 s
        // < 30 s: reuse). Job 3 arrives at 400 s (idle 170 s: a new
        // instance, the old one ended at 160 s).
        let t = trace(vec![job(0, 100), job(120, 40), job(400, 10)]);
        let c = clairvoyant(&t, PRICE, Duration::from_secs(30), Duration::ZERO);
        assert_eq!(c.instances, 2);
        assert_eq!(c.work_hours * 3600.0, 150.0);
        assert_eq!(c.idle_hours * 3600.0, 20.0);
        assert_eq!(c.boot_hours * 3600.0, 60.0);
        assert_eq!(c.cost_micros, (150 + 20 + 60) * 1000);
    }

    #[test]
    fn overlapping_jobs_need_instances_of_their_own() {
        let t = trace(vec![job(0, 60), job(10, 60), job(20, 60)]);
        let c = clairvoyant(&t, PRICE, Duration::from_secs(30), Duration::ZERO);
        assert_eq!(c.instances, 3);
        assert_eq!(c.cost_micros, (180 + 90) * 1000);
    }

    #[test]
    fn the_most_recently_freed_instance_is_taken() {
        // Two instances free at 60 s and 90 s; a job at 100 s takes the
        // one freed at 90 s (idle 10 s), not the one idle 40 s.
        let t = trace(vec![job(0, 60), job(0, 90), job(100, 10)]);
        let c = clairvoyant(&t, PRICE, Duration::from_secs(50), Duration::ZERO);
        assert_eq!(c.instances, 2);
        assert_eq!(c.idle_hours * 3600.0, 10.0);
    }

    #[test]
    fn a_short_lived_instance_is_billed_its_minimum() {
        let t = trace(vec![job(0, 10)]);
        let c = clairvoyant(&t, PRICE, Duration::from_secs(20), Duration::from_secs(60));
        assert_eq!(c.minimum_charge_hours * 3600.0, 30.0);
        assert_eq!(c.cost_micros, 60 * 1000);
    }
}
