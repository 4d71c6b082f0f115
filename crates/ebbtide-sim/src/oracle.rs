//! The clairvoyant lower bound on cost (see `docs/simulator.md` for the
//! definition and the proof that it is a bound).
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
