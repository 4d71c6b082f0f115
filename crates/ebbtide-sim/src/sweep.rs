//! Tuning each baseline's main knob to its cheapest setting that reaches a
//! given SLA attainment, so the comparison is against baselines at their
//! best, not at a strawman setting.

use std::time::Duration;

use crate::policy::Policy;
use crate::report::RunReport;

/// The settings tried for each baseline, from cheapest-looking to safest.
pub fn baseline_grid(peak_hint: u32) -> Vec<(&'static str, Vec<Policy>)> {
    let fixed = [0.4, 0.6, 0.8, 1.0, 1.25]
        .iter()
        .map(|f| Policy::Fixed {
            instances: ((f64::from(peak_hint) * f).ceil() as u32).max(1),
        })
        .collect();
    let idle = [0u32, 2, 5, 10, 20, 40]
        .iter()
        .map(|n| Policy::IdleCount {
            idle_count: *n,
            idle_time: Duration::from_secs(600),
            max_use_count: None,
        })
        .collect();
    let per_job = [0u32, 2, 5, 10, 20]
        .iter()
        .map(|w| Policy::PerJob { warm: *w })
        .collect();
    let queue = [60u64, 300, 900, 3600]
        .iter()
        .map(|s| Policy::QueueTarget {
            jobs_per_instance: 1,
            scale_in_cooldown: Duration::from_secs(*s),
        })
        .collect();
    vec![
        ("fixed", fixed),
        ("idle-count", idle),
        ("per-job", per_job),
        ("queue-target", queue),
    ]
}

/// The cheapest report reaching `attainment` in every class, if any.
pub fn cheapest_meeting(reports: &[RunReport], attainment: f64) -> Option<&RunReport> {
    reports
        .iter()
        .filter(|r| r.min_attainment() >= attainment)
        .min_by_key(|r| r.cost_micros)
}
