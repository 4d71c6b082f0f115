//! Tuning each baseline's knobs to their cheapest setting that reaches a
//! given SLA attainment, so the comparison is against baselines at their
//! best, not at a strawman setting; and reading a family's settings as a
//! cost-versus-wait frontier.

use std::time::Duration;

use crate::policy::Policy;
use crate::report::RunReport;

/// Idle counts tried for the idle-count family: wide enough that it reaches
/// 99 % at a 10 s target with ~30 s boots on the Travis month.
pub const IDLE_COUNTS: [u32; 8] = [0, 5, 10, 20, 40, 80, 120, 160];
/// Idle times tried with each idle count (GitLab's `idle_time`).
pub const IDLE_TIMES_S: [u64; 3] = [60, 300, 1200];
/// Warm pool sizes tried for the per-job family.
pub const WARM_POOLS: [u32; 6] = [0, 5, 10, 20, 40, 80];

/// The idle-count family's grid: every idle count with every idle time.
pub fn idle_count_grid() -> Vec<Policy> {
    IDLE_COUNTS
        .iter()
        .flat_map(|n| {
            IDLE_TIMES_S.iter().map(|t| Policy::IdleCount {
                idle_count: *n,
                idle_time: Duration::from_secs(*t),
                max_use_count: None,
            })
        })
        .collect()
}

/// The per-job family's grid.
pub fn per_job_grid() -> Vec<Policy> {
    WARM_POOLS
        .iter()
        .map(|w| Policy::PerJob { warm: *w })
        .collect()
}

/// The settings tried for each baseline, from cheapest-looking to safest.
pub fn baseline_grid(peak_hint: u32) -> Vec<(&'static str, Vec<Policy>)> {
    let fixed = [0.4, 0.6, 0.8, 1.0, 1.25]
        .iter()
        .map(|f| Policy::Fixed {
            instances: ((f64::from(peak_hint) * f).ceil() as u32).max(1),
        })
        .collect();
    let queue = [60u64, 300, 900, 3600, 10_800]
        .iter()
        .map(|s| Policy::QueueTarget {
            jobs_per_instance: 1,
            scale_in_cooldown: Duration::from_secs(*s),
        })
        .collect();
    vec![
        ("fixed", fixed),
        ("idle-count", idle_count_grid()),
        ("per-job", per_job_grid()),
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

/// p95 wait of `class` in `r`, seconds (infinite if the class is absent).
pub fn p95(r: &RunReport, class: &str) -> f64 {
    r.classes
        .iter()
        .find(|c| c.class == class)
        .map_or(f64::INFINITY, |c| c.wait_p95_s)
}

/// The settings no other one beats on both cost and `class`'s p95 wait,
/// cheapest first (each next one dearer and faster).
pub fn frontier<'a>(reports: &'a [RunReport], class: &str) -> Vec<&'a RunReport> {
    let mut sorted: Vec<&RunReport> = reports.iter().collect();
    sorted.sort_by(|a, b| {
        a.cost_micros
            .cmp(&b.cost_micros)
            .then(p95(a, class).total_cmp(&p95(b, class)))
    });
    let mut out: Vec<&RunReport> = Vec::new();
    for r in sorted {
        if out.last().is_none_or(|l| p95(r, class) < p95(l, class)) {
            out.push(r);
        }
    }
    out
}

/// The settings that make `me` a dominated point: cheaper, at least as
/// fast at the p95 in every class, and reaching `attainment` (or `me`'s
/// own attainment, if lower) in every class.
pub fn dominating<'a>(
    me: &RunReport,
    others: &'a [RunReport],
    attainment: f64,
) -> Vec<&'a RunReport> {
    let bar = attainment.min(me.min_attainment());
    others
        .iter()
        .filter(|r| {
            r.cost_micros < me.cost_micros
                && r.min_attainment() >= bar
                && me.classes.iter().all(|c| p95(r, &c.class) <= c.wait_p95_s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ClassReport;

    fn point(name: &str, cost: i64, p95_high: f64, p95_low: f64, attainment: f64) -> RunReport {
        let class = |class: &str, p95: f64| ClassReport {
            class: class.into(),
            target_s: 60,
            jobs: 100,
            wait_p50_s: 0.0,
            wait_p95_s: p95,
            wait_p99_s: p95,
            sla_attainment: attainment,
        };
        RunReport {
            policy: name.into(),
            cost_micros: cost,
            classes: vec![class("high", p95_high), class("low", p95_low)],
            ..RunReport::default()
        }
    }

    #[test]
    fn the_frontier_keeps_only_settings_that_buy_speed_with_money() {
        let runs = vec![
            point("a", 100, 40.0, 50.0, 1.0),
            point("b", 120, 45.0, 50.0, 1.0),
            point("c", 150, 20.0, 50.0, 1.0),
            point("d", 200, 20.0, 50.0, 1.0),
            point("e", 300, 5.0, 50.0, 1.0),
        ];
        let names: Vec<&str> = frontier(&runs, "high")
            .iter()
            .map(|r| r.policy.as_str())
            .collect();
        assert_eq!(
            names,
            ["a", "c", "e"],
            "b is dearer and slower than a, d than c"
        );
    }

    #[test]
    fn a_point_is_dominated_only_by_a_cheaper_setting_as_fast_in_every_class() {
        let me = point("ebbtide", 200, 30.0, 300.0, 1.0);
        let others = vec![
            point("cheaper-and-faster", 150, 25.0, 60.0, 1.0),
            point("cheaper-but-slow-low", 150, 25.0, 400.0, 1.0),
            point("dearer", 250, 1.0, 1.0, 1.0),
            point("cheaper-but-misses", 100, 10.0, 10.0, 0.95),
        ];
        let names: Vec<&str> = dominating(&me, &others, 0.99)
            .iter()
            .map(|r| r.policy.as_str())
            .collect();
        assert_eq!(names, ["cheaper-and-faster"]);
    }
}
