//! Queue order, fairness, aging and quotas, as seen from outside the engine.

use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use ebbtide_core::*;

fn assigned(cmds: &[Command]) -> Vec<u64> {
    cmds.iter()
        .filter_map(|c| {
            if let Command::Assign { job, .. } = c {
                Some(job.0)
            } else {
                None
            }
        })
        .collect()
}

/// One static worker, so every finish frees exactly one slot.
fn one_slot(tenants: Vec<TenantConfig>) -> Harness {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 1)];
    cfg.tenants = tenants;
    let mut h = Harness::new(cfg);
    h.run_for(Duration::from_secs(31), Duration::from_secs(1));
    h
}

/// Occupies the single slot with job 1000 so later submissions queue.
fn occupy(h: &mut Harness) {
    let a = h.submit(testkit::job(1000, 0, 0));
    assert_eq!(
        assigned(&a),
        vec![1000],
        "the warm worker takes the first job at once"
    );
}

/// Finishes whatever runs and returns the order the next `n` jobs run in.
fn drain_order(h: &mut Harness, first_running: u64, n: usize) -> Vec<u64> {
    let mut order = Vec::new();
    let mut running = first_running;
    for _ in 0..n {
        let next = assigned(&h.finish(JobId(running), JobOutcome::Succeeded));
        assert_eq!(next.len(), 1);
        running = next[0];
        order.push(running);
    }
    order
}

#[test]
fn jobs_of_one_class_and_tenant_run_in_submission_order() {
    let mut h = one_slot(vec![testkit::tenant("a")]);
    occupy(&mut h);
    for id in 1..=4 {
        h.submit(testkit::job(id, 0, 2));
    }
    assert_eq!(drain_order(&mut h, 1000, 4), vec![1, 2, 3, 4]);
}

#[test]
fn a_more_urgent_class_runs_before_an_earlier_less_urgent_job() {
    let mut h = one_slot(vec![testkit::tenant("a")]);
    occupy(&mut h);
    h.submit(testkit::job(1, 0, 4));
    h.submit(testkit::job(2, 0, 0));
    assert_eq!(drain_order(&mut h, 1000, 2), vec![2, 1]);
}

#[test]
fn tenants_share_capacity_in_proportion_to_their_weights() {
    let mut heavy = testkit::tenant("heavy");
    heavy.weight = 3;
    let mut h = one_slot(vec![heavy, testkit::tenant("light")]);
    occupy(&mut h);
    // Both tenants flood the same class; "light" submitted first.
    for i in 0..8 {
        h.submit(testkit::job(100 + i, 1, 2));
    }
    for i in 0..24 {
        h.submit(testkit::job(200 + i, 0, 2));
    }
    let order = drain_order(&mut h, 1000, 16);
    let heavy_served = order.iter().filter(|j| **j >= 200).count();
    assert_eq!(
        heavy_served, 12,
        "weight 3:1 serves 12 of 16, not round robin's 8: {order:?}"
    );
}

#[test]
fn a_long_waiting_job_is_promoted_so_it_does_not_starve() {
    let mut h = one_slot(vec![testkit::tenant("a")]);
    occupy(&mut h);
    h.submit(testkit::job(1, 0, 2)); // medium, 1 h target
    // Two hours later a stream of high jobs arrives.
    h.now = h.now + Duration::from_secs(2 * 3600 + 1);
    for id in 10..13 {
        h.submit(testkit::job(id, 0, 1));
    }
    let order = drain_order(&mut h, 1000, 2);
    assert_eq!(
        order[0], 1,
        "waited two targets: promoted to critical, ahead of fresh high jobs"
    );
}

#[test]
fn a_job_no_pool_can_serve_is_rejected_with_the_reason() {
    let mut h = Harness::new(testkit::config());
    let mut spec = testkit::job(1, 0, 1);
    spec.requirements.labels = vec!["gpu".into()];
    let cmds = h.submit(spec);
    match &cmds[..] {
        [
            Command::Rejected {
                reason: Rejection::NoPoolCanServe { labels, .. },
                ..
            },
        ] => assert_eq!(labels, &vec!["gpu".to_string()]),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(h.engine.live_jobs(), 0);
}

#[test]
fn a_tenant_over_its_queue_limit_is_rejected_at_submission() {
    let mut cfg = testkit::config();
    cfg.tenants[0].quota.max_queued_jobs = Some(2);
    let mut h = Harness::new(cfg);
    h.submit(testkit::job(1, 0, 1));
    h.submit(testkit::job(2, 0, 1));
    let cmds = h.submit(testkit::job(3, 0, 1));
    assert!(
        matches!(
            cmds[..],
            [Command::Rejected {
                reason: Rejection::QueueFull {
                    queued: 2,
                    limit: 2
                },
                ..
            }]
        ),
        "{cmds:?}"
    );
}

#[test]
fn unknown_tenant_class_and_duplicate_ids_are_rejected() {
    let mut h = Harness::new(testkit::config());
    let reason = |cmds: Vec<Command>| match cmds.as_slice() {
        [Command::Rejected { reason, .. }] => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        reason(h.submit(testkit::job(1, 9, 1))),
        Rejection::UnknownTenant(TenantId(9))
    );
    assert_eq!(
        reason(h.submit(testkit::job(1, 0, 9))),
        Rejection::UnknownClass(9)
    );
    h.submit(testkit::job(1, 0, 1));
    assert_eq!(
        reason(h.submit(testkit::job(1, 0, 1))),
        Rejection::DuplicateJob
    );
}

#[test]
fn a_tenant_at_its_concurrency_quota_keeps_jobs_queued_until_a_slot_frees() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 3)];
    cfg.tenants[0].quota.max_running_jobs = Some(1);
    let mut h = Harness::new(cfg);
    h.run_for(Duration::from_secs(31), Duration::from_secs(1));
    assert_eq!(assigned(&h.submit(testkit::job(1, 0, 1))), vec![1]);
    assert!(
        assigned(&h.submit(testkit::job(2, 0, 1))).is_empty(),
        "quota 1: stays queued despite idle workers"
    );
    assert_eq!(h.engine.job_state(JobId(2)), Some(JobState::Queued));
    assert_eq!(
        assigned(&h.finish(JobId(1), JobOutcome::Succeeded)),
        vec![2]
    );
}

#[test]
fn a_burst_runs_above_quota_only_while_tokens_last() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 4)];
    cfg.tenants[0].quota.max_running_jobs = Some(1);
    cfg.tenants[0].burst = Some(BurstConfig {
        multiplier_percent: 200,
        duration: Duration::from_secs(60),
        refill: Duration::from_secs(3600),
    });
    let mut h = Harness::new(cfg);
    h.run_for(Duration::from_secs(31), Duration::from_secs(1));
    assert_eq!(assigned(&h.submit(testkit::job(1, 0, 1))), vec![1]);
    assert_eq!(
        assigned(&h.submit(testkit::job(2, 0, 1))),
        vec![2],
        "burst to 2× quota"
    );
    assert!(
        assigned(&h.submit(testkit::job(3, 0, 1))).is_empty(),
        "never above the multiplier"
    );
    h.run_for(Duration::from_secs(61), Duration::from_secs(1));
    let freed = h.finish(JobId(2), JobOutcome::Succeeded);
    assert!(
        assigned(&freed).is_empty(),
        "bucket spent: back to plain quota, job 3 waits"
    );
    h.finish(JobId(1), JobOutcome::Succeeded);
    assert!(matches!(
        h.engine.job_state(JobId(3)),
        Some(JobState::Assigned { .. } | JobState::Running { .. })
    ));
}

#[test]
fn a_cancelled_queued_job_leaves_the_queue() {
    let mut h = Harness::new(testkit::config());
    h.submit(testkit::job(1, 0, 1));
    let cmds = h.send(Event::JobCancelled { job: JobId(1) });
    assert!(matches!(
        cmds[..],
        [Command::Completed {
            outcome: JobOutcome::Cancelled,
            ..
        }]
    ));
    assert_eq!(h.engine.queued_jobs(), 0);
}

#[test]
fn cancelling_a_running_job_stops_it_on_its_worker() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 1)];
    let mut h = Harness::new(cfg);
    h.run_for(Duration::from_secs(31), Duration::from_secs(1));
    h.submit(testkit::job(1, 0, 1));
    let cmds = h.send(Event::JobCancelled { job: JobId(1) });
    assert!(matches!(cmds[..], [Command::StopJob { job: JobId(1), .. }]));
    let done = h.finish(JobId(1), JobOutcome::Lost);
    assert!(
        done.iter().any(|c| matches!(
            c,
            Command::Completed {
                outcome: JobOutcome::Cancelled,
                ..
            }
        )),
        "a cancelled job is not retried"
    );
}

#[test]
fn a_job_about_to_breach_its_sla_goes_before_a_fairer_but_less_urgent_one() {
    let mut cfg = testkit::config();
    cfg.classes[1].sla_target = Duration::from_secs(60);
    cfg.pools = vec![testkit::static_pool("metal", 1)];
    cfg.tenants = vec![testkit::tenant("a"), testkit::tenant("b")];
    let mut h = Harness::new(cfg);
    h.run_for(Duration::from_secs(31), Duration::from_secs(1));
    occupy(&mut h);
    h.submit(testkit::job(1, 0, 1)); // a: fair tag 1
    h.submit(testkit::job(2, 0, 1)); // a: fair tag 2, due at +60 s
    h.now = h.now + Duration::from_secs(20);
    h.submit(testkit::job(3, 1, 1)); // b: fair tag 1, due at +80 s
    h.now = h.now + Duration::from_secs(10);
    assert_eq!(
        drain_order(&mut h, 1000, 1),
        vec![1],
        "fair order while nothing is urgent"
    );
    h.now = h.now + Duration::from_secs(10);
    // Job 2 is due in 20 s, job 3 in 40 s: both within one lead time, so
    // the earlier deadline wins over the smaller fair-share tag.
    assert_eq!(drain_order(&mut h, 1, 2), vec![2, 3]);
}

#[test]
fn queue_stats_count_waiting_jobs_per_class_and_tenant_with_the_oldest() {
    let mut cfg = testkit::config();
    cfg.tenants.push(testkit::tenant("beta"));
    let mut h = Harness::new(cfg);
    h.obedient = false; // nothing boots: everything stays queued
    let first = h.now;
    h.submit(testkit::job(1, 0, 1));
    h.now = h.now + Duration::from_secs(5);
    h.submit(testkit::job(2, 0, 1));
    h.submit(testkit::job(3, 1, 0));
    let mut stats = h.engine.queue_stats();
    stats.sort_by_key(|s| (s.class, s.tenant));
    assert_eq!(
        stats,
        vec![
            QueueStat {
                class: ClassId(0),
                tenant: TenantId(1),
                depth: 1,
                oldest: Some(h.now)
            },
            QueueStat {
                class: ClassId(1),
                tenant: TenantId(0),
                depth: 2,
                oldest: Some(first)
            },
        ]
    );
}

#[test]
fn cost_rates_sum_the_launched_instances_per_pool_and_market() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 2)];
    cfg.pools[0].on_demand_price = PricePerHour(Micros(50_000));
    let price = cfg.pools[0].on_demand_price;
    let mut h = Harness::new(cfg);
    assert!(h.engine.cost_rates().is_empty(), "nothing launched yet");
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    assert_eq!(
        h.engine.cost_rates(),
        vec![(
            PoolId(0),
            Market::OnDemand,
            PricePerHour(Micros(price.0.0 * 2))
        )],
        "two warm instances at $0.05/h each"
    );
}

#[test]
fn a_slower_class_job_at_its_deadline_runs_before_a_faster_class_job_with_slack() {
    let mut h = one_slot(vec![testkit::tenant("acme")]);
    occupy(&mut h);
    // Class 1 ("high", 15 min target) waits behind the long-running job.
    h.submit(testkit::job(1, 0, 1));
    // 40 s before its deadline: within one lead time (30 s boot), the
    // window the planner launches capacity for it in.
    h.now = h.now + Duration::from_secs(900 - 40);
    // Class 0 ("critical", 5 min target) arrives with 300 s of slack.
    h.submit(testkit::job(2, 0, 0));
    assert_eq!(
        drain_order(&mut h, 1000, 2),
        vec![1, 2],
        "the job about to breach goes first, whatever its class"
    );
}
