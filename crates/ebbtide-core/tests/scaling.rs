//! Scaling plans: growth for SLA demand, shrinking safely, warm pools,
//! damping, spill-over, markets, multi-slot workers, pre-warming, budget.

use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use ebbtide_core::*;

const SEC: Duration = Duration::from_secs(1);

fn decisions(h: &Harness) -> Vec<ScaleDecision> {
    h.logged(|c| {
        if let Command::Scale(d) = c {
            Some(d.clone())
        } else {
            None
        }
    })
    .collect()
}

fn launches(h: &Harness) -> Vec<(Market, usize)> {
    h.logged(|c| {
        if let Command::Launch {
            market, workers, ..
        } = c
        {
            Some((*market, workers.len()))
        } else {
            None
        }
    })
    .collect()
}

fn physical(h: &Harness, pool: u32) -> u32 {
    h.engine.pool_status(PoolId(pool)).expect("pool").physical()
}

fn finish_all(h: &mut Harness, ids: impl IntoIterator<Item = u64>) {
    for id in ids {
        h.finish(JobId(id), JobOutcome::Succeeded);
    }
}

#[test]
fn a_burst_scales_up_for_its_sla_and_back_to_zero_once_idle_workers_are_not_worth_keeping() {
    let mut h = Harness::new(testkit::config());
    for id in 1..=5 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(SEC, SEC);
    let up = decisions(&h);
    assert_eq!(up.len(), 1);
    assert_eq!((up[0].from, up[0].to), (0, 5));
    assert!(
        matches!(
            up[0].reason,
            ScaleReason::QueueDemand {
                waiting: 5,
                slots_short: 5,
                ..
            }
        ),
        "{:?}",
        up[0].reason
    );
    h.run_for(30 * SEC, SEC);
    assert_eq!(h.engine.queued_jobs(), 0, "all five run once booted");
    finish_all(&mut h, 1..=5);
    h.run_for(SEC, SEC);
    // Five arrivals in the last minute's buckets (42 s of them here) make
    // 5 × 30 ÷ 42 ≈ 3.6 arrivals expected within a 30 s boot, with nothing
    // busy to free up: the first three idle workers would wait less than a
    // boot for their next job, the other two would not.
    assert_eq!(physical(&h, 0), 3, "surplus idle workers retire at once");
    h.run_for(20 * SEC, SEC);
    assert_eq!(
        physical(&h, 0),
        0,
        "once the burst is more than a minute old, ten minutes' rate expects no job within a boot: the kept ones go, before their 60 s idle timeout"
    );
    let last = decisions(&h).pop().expect("a scale-down decision");
    assert_eq!((last.to, last.reason.kind()), (0, "demand_fell"));
}

/// An idle worker is kept for the next job only where that job could not
/// as well wait for a busy slot to free: with a target shorter than a
/// boot it could not; with a fifteen-minute target on a pool of nine busy
/// workers it almost surely could.
#[test]
fn an_idle_worker_is_kept_only_where_the_next_job_could_not_wait_for_a_busy_slot() {
    let kept_after_one_finish = |target: Duration| {
        let mut cfg = testkit::config();
        for c in &mut cfg.classes {
            c.sla_target = target;
        }
        let mut h = Harness::new(cfg);
        for id in 1..=10 {
            h.submit(testkit::job(id, 0, 1));
        }
        h.run_for(31 * SEC, SEC);
        assert_eq!(h.engine.queued_jobs(), 0, "all ten run");
        h.finish(JobId(1), JobOutcome::Succeeded);
        h.run_for(2 * SEC, SEC);
        physical(&h, 0)
    };
    assert_eq!(
        kept_after_one_finish(10 * SEC),
        10,
        "no slack: the next job needs the idle worker or a whole boot"
    );
    assert_eq!(
        kept_after_one_finish(900 * SEC),
        9,
        "ample slack and nine busy slots: the next job takes the next to free, and the idle worker goes at once"
    );
}

#[test]
fn a_stopping_scheduler_launches_nothing_for_jobs_it_will_not_start() {
    let mut h = Harness::new(testkit::config());
    h.send(Event::StopDispatch);
    for id in 1..=3 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(10 * SEC, SEC);
    assert_eq!(physical(&h, 0), 0, "no worker asked for while stopping");
    assert!(
        !h.logged(|c| match c {
            Command::Launch { .. } => Some(()),
            _ => None,
        })
        .any(|_| true),
        "no launch command"
    );
}

#[test]
fn scale_in_never_terminates_a_busy_worker() {
    let mut h = Harness::new(testkit::config());
    for id in 1..=3 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(31 * SEC, SEC);
    finish_all(&mut h, [1, 2]);
    h.run_for(120 * SEC, SEC);
    assert_eq!(physical(&h, 0), 1, "the worker running job 3 survives");
    assert!(matches!(
        h.engine.job_state(JobId(3)),
        Some(JobState::Assigned { .. } | JobState::Running { .. })
    ));
    let drained: Vec<WorkerId> = h
        .logged(|c| {
            if let Command::Drain { worker, .. } = c {
                Some(*worker)
            } else {
                None
            }
        })
        .collect();
    let busy = h
        .engine
        .job_state(JobId(3))
        .and_then(|s| s.worker())
        .expect("on a worker");
    assert!(!drained.contains(&busy));
}

#[test]
fn terminate_is_sent_only_after_the_drain_is_acknowledged() {
    let mut h = Harness::new(testkit::config());
    h.obedient = false;
    h.submit(testkit::job(1, 0, 1));
    h.run_for(SEC, SEC);
    let w = h.engine.live_workers().next().expect("launched");
    h.send(Event::InstanceLaunched {
        worker: w,
        instance: InstanceId("i-1".into()),
        zone: None,
    });
    h.send(Event::WorkerRegistered { worker: w });
    h.finish(JobId(1), JobOutcome::Succeeded);
    for _ in 0..70 {
        h.now = h.now + SEC;
        h.send(Event::Heartbeat { worker: w });
        h.send(Event::Tick);
    }
    assert!(h.log.iter().any(|c| matches!(c, Command::Drain { .. })));
    assert!(
        !h.log.iter().any(|c| matches!(c, Command::Terminate { .. })),
        "no terminate before the ack"
    );
    let cmds = h.send(Event::DrainAcknowledged { worker: w });
    assert!(matches!(cmds[..], [Command::Terminate { .. }]));
}

#[test]
fn the_longest_idle_worker_is_retired_first() {
    let mut cfg = testkit::config();
    cfg.pools[0].kind = PoolKind::Dynamic {
        min: 1,
        idle_count: 0,
    };
    let mut h = Harness::new(cfg);
    h.submit(testkit::job(1, 0, 1));
    h.submit(testkit::job(2, 0, 1));
    h.run_for(31 * SEC, SEC);
    let w1 = h
        .engine
        .job_state(JobId(1))
        .and_then(|s| s.worker())
        .expect("running");
    let w2 = h
        .engine
        .job_state(JobId(2))
        .and_then(|s| s.worker())
        .expect("running");
    h.finish(JobId(2), JobOutcome::Succeeded);
    h.run_for(10 * SEC, SEC);
    h.finish(JobId(1), JobOutcome::Succeeded);
    h.run_for(120 * SEC, SEC);
    assert_eq!(
        h.engine.worker_state(w1),
        Some(WorkerState::Idle),
        "most recently idle stays (min 1)"
    );
    assert_eq!(h.engine.worker_state(w2), None, "longest idle went first");
}

#[test]
fn a_static_pool_stays_at_its_warm_size_and_replaces_lost_workers() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 3)];
    let mut h = Harness::new(cfg);
    h.run_for(31 * SEC, SEC);
    let status = h.engine.pool_status(PoolId(0)).expect("pool");
    assert_eq!((status.idle, status.desired), (3, 3));
    assert_eq!(decisions(&h)[0].reason, ScaleReason::WarmSize { warm: 3 });
    let victim = h.engine.live_workers().next().expect("a worker");
    h.send(Event::WorkerLost { worker: victim });
    h.run_for(31 * SEC, SEC);
    assert_eq!(
        h.engine.pool_status(PoolId(0)).expect("pool").idle,
        3,
        "replaced"
    );
    h.run_for(3600 * SEC, 60 * SEC);
    assert_eq!(
        h.engine.pool_status(PoolId(0)).expect("pool").idle,
        3,
        "idle timeout does not shrink a static pool"
    );
}

#[test]
fn a_warm_static_pool_starts_a_job_without_any_launch() {
    let mut cfg = testkit::config_with_static_pool();
    cfg.pools[1].max = 2;
    let mut h = Harness::new(cfg);
    h.run_for(31 * SEC, SEC);
    let before = launches(&h).len();
    let cmds = h.submit(testkit::job(1, 0, 0));
    assert!(
        matches!(cmds[..], [Command::Assign { .. }]),
        "assigned in the same event: {cmds:?}"
    );
    assert_eq!(launches(&h).len(), before);
}

#[test]
fn demand_beyond_the_static_pool_spills_to_the_dynamic_pool() {
    let mut cfg = testkit::config_with_static_pool();
    cfg.default_job_duration = Duration::from_secs(3600); // busy slots will not free in time
    let mut h = Harness::new(cfg);
    h.run_for(31 * SEC, SEC);
    for id in 1..=5 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(SEC, SEC);
    assert_eq!(physical(&h, 1), 2, "static pool full with two jobs");
    assert_eq!(
        physical(&h, 0),
        3,
        "three more slots bought in the dynamic pool"
    );
}

#[test]
fn a_lax_job_waits_for_a_busy_slot_instead_of_buying_one() {
    let mut cfg = testkit::config();
    cfg.pools = vec![
        testkit::static_pool("metal", 1),
        testkit::dynamic_pool("cloud"),
    ];
    let mut h = Harness::new(cfg);
    h.run_for(31 * SEC, SEC);
    h.submit(testkit::job(1, 0, 1));
    h.submit(testkit::job(2, 0, 4)); // best-effort: 24 h of slack, a 10 min job ahead of it
    h.run_for(10 * SEC, SEC);
    assert_eq!(
        physical(&h, 1),
        0,
        "no instance bought for a job that can wait"
    );
    h.submit(testkit::job(3, 0, 0)); // critical: 5 min target, slot busy for ~10 min
    h.run_for(SEC, SEC);
    assert_eq!(physical(&h, 1), 1, "a critical job buys capacity");
}

#[test]
fn scale_up_respects_the_cooldown_unless_an_sla_is_at_risk() {
    let mut cfg = testkit::config();
    cfg.pools[0].scaling.scale_up_cooldown = Duration::from_secs(600);
    cfg.default_job_duration = Duration::from_secs(3600);
    let mut h = Harness::new(cfg);
    h.submit(testkit::job(1, 0, 3));
    h.run_for(31 * SEC, SEC); // one worker, running job 1
    h.submit(testkit::job(2, 0, 3)); // low: hours of slack
    h.submit(testkit::job(3, 0, 0)); // critical: 5 min target
    h.run_for(200 * SEC, SEC);
    assert_eq!(
        decisions(&h).len(),
        1,
        "no scale-up within the cooldown while every SLA is safe"
    );
    h.run_for(100 * SEC, SEC);
    let d = decisions(&h);
    assert_eq!(d.len(), 2, "job 3 came within one boot of its target");
    assert_eq!(d[1].reason.kind(), "sla_emergency", "{:?}", d[1].reason);
    assert!(d[1].at.saturating_since(d[0].at) < Duration::from_secs(600));
}

#[test]
fn scale_down_waits_for_the_stabilization_window() {
    let mut cfg = testkit::config();
    cfg.pools[0].idle_timeout = Duration::ZERO;
    cfg.pools[0].scaling.down_stabilization = Duration::from_secs(120);
    let mut h = Harness::new(cfg);
    for id in 1..=4 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(31 * SEC, SEC);
    finish_all(&mut h, 1..=4);
    h.run_for(60 * SEC, SEC);
    assert_eq!(physical(&h, 0), 4, "still within the window");
    h.run_for(120 * SEC, SEC);
    assert_eq!(physical(&h, 0), 0);
}

#[test]
fn multi_slot_workers_pack_jobs_and_reach_zero() {
    let mut cfg = testkit::config();
    cfg.pools[0].capacity_per_instance = 4;
    cfg.pools[0].shape.cpu_millis = 8000;
    let mut h = Harness::new(cfg);
    for id in 1..=6 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(SEC, SEC);
    assert_eq!(physical(&h, 0), 2, "6 jobs need 2 four-slot workers, not 6");
    h.run_for(30 * SEC, SEC);
    assert_eq!(h.engine.queued_jobs(), 0);
    finish_all(&mut h, 1..=6);
    h.run_for(61 * SEC, SEC);
    assert_eq!(physical(&h, 0), 0);
}

#[test]
fn a_worker_that_reached_max_uses_is_drained_instead_of_reused() {
    let mut cfg = testkit::config();
    cfg.pools[0].max_uses = Some(2);
    let mut h = Harness::new(cfg);
    h.submit(testkit::job(1, 0, 1));
    h.run_for(31 * SEC, SEC);
    let w = h
        .engine
        .job_state(JobId(1))
        .and_then(|s| s.worker())
        .expect("running");
    h.finish(JobId(1), JobOutcome::Succeeded);
    let cmds = h.submit(testkit::job(2, 0, 1));
    assert!(cmds.contains(&Command::Assign {
        job: JobId(2),
        worker: w,
        attempt: 1,
    }));
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Drain {
            reason: DrainReason::WornOut,
            ..
        }
    )));
    h.finish(JobId(2), JobOutcome::Succeeded);
    assert_eq!(
        h.engine.worker_state(w),
        None,
        "terminated after its second job"
    );
}

#[test]
fn spot_fills_above_the_on_demand_base() {
    let mut cfg = testkit::config();
    cfg.pools[0].market = MarketPolicy {
        on_demand_base: 2,
        spot_percent: 100,
        spot_fallback_for: Duration::from_secs(600),
    };
    let mut h = Harness::new(cfg);
    for id in 1..=5 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(SEC, SEC);
    let mut l = launches(&h);
    l.sort();
    assert_eq!(l, vec![(Market::Spot, 3), (Market::OnDemand, 2)]);
}

#[test]
fn a_spot_capacity_error_goes_on_demand_at_once_when_the_sla_cannot_wait() {
    let mut cfg = tight_sla_config();
    spot_only(&mut cfg);
    let mut h = Harness::new(cfg);
    h.obedient = false;
    h.submit(testkit::job(1, 0, 0));
    h.run_for(SEC, SEC);
    let w = h.engine.live_workers().next().expect("spot requested");
    let cmds = h.send(Event::LaunchFailed {
        workers: vec![w],
        reason: LaunchFailure::Capacity,
    });
    let why = cmds.iter().find_map(|c| match c {
        Command::Launch {
            market: Market::OnDemand,
            why,
            ..
        } => Some(why.clone()),
        _ => None,
    });
    assert!(
        matches!(why, Some(MarketReason::SpotLocked { .. })),
        "on-demand, saying spot is locked: {cmds:?}"
    );
    h.now = h.now + Duration::from_secs(601);
    h.obedient = true;
    h.submit(testkit::job(2, 0, 0));
    h.run_for(SEC, SEC);
    assert_eq!(
        launches(&h).last().map(|l| l.0),
        Some(Market::Spot),
        "spot again after the fallback window"
    );
}

#[test]
fn a_job_that_can_wait_for_the_spot_lock_to_end_is_not_bought_on_demand() {
    let mut cfg = testkit::config();
    spot_only(&mut cfg);
    cfg.pools[0].market.spot_fallback_for = Duration::from_secs(120);
    let mut h = Harness::new(cfg);
    h.obedient = false;
    // Class 1: 15 minutes of slack, far more than the 2-minute lock.
    h.submit(testkit::job(1, 0, 1));
    h.run_for(SEC, SEC);
    let w = h.engine.live_workers().next().expect("spot requested");
    let cmds = h.send(Event::LaunchFailed {
        workers: vec![w],
        reason: LaunchFailure::Capacity,
    });
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Launch { .. })),
        "nothing bought while spot is locked: {cmds:?}"
    );
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::SpotAwaited { count: 1, .. })),
        "the held-back launch is recorded: {cmds:?}"
    );
    h.obedient = true;
    h.run_for(125 * SEC, SEC);
    assert_eq!(
        launches(&h),
        vec![(Market::Spot, 1), (Market::Spot, 1)],
        "spot again once the lock ends, no on-demand in between"
    );
    h.run_for(35 * SEC, SEC);
    assert_eq!(h.engine.queued_jobs(), 0, "the job runs on spot");
}

/// Spot prices in three zones: `b` cheapest, then `a`, then `c`.
fn three_spot_zones(h: &mut Harness) {
    for (zone, micros) in [("zone-a", 30_000), ("zone-b", 20_000), ("zone-c", 40_000)] {
        h.send(Event::PriceUpdate {
            shape: "m5.large".into(),
            market: Market::Spot,
            zone: Some(zone.into()),
            price: PricePerHour(Micros(micros)),
        });
    }
}

fn zones_of_launches(h: &Harness) -> Vec<(Market, Vec<String>)> {
    h.logged(|c| match c {
        Command::Launch { market, zones, .. } => Some((*market, zones.clone())),
        _ => None,
    })
    .collect()
}

#[test]
fn a_capacity_error_locks_its_zones_and_spot_moves_to_the_next_zone() {
    let mut cfg = tight_sla_config();
    spot_only(&mut cfg);
    cfg.pools[0].market.spot_fallback_for = Duration::from_secs(120);
    let mut h = Harness::new(cfg);
    three_spot_zones(&mut h);
    h.obedient = false;
    h.submit(testkit::job(1, 0, 0));
    h.run_for(SEC, SEC);
    let zones = |z: &[&str]| z.iter().map(|z| z.to_string()).collect::<Vec<_>>();
    assert_eq!(
        zones_of_launches(&h),
        vec![(Market::Spot, zones(&["zone-b", "zone-a", "zone-c"]))],
        "cheapest zone first"
    );
    let w = h.engine.live_workers().next().expect("requested");
    h.send(Event::LaunchFailed {
        workers: vec![w],
        reason: LaunchFailure::Capacity,
    });
    // All three were asked, so all three are locked: an urgent job goes
    // on-demand, and says why.
    assert_eq!(
        zones_of_launches(&h).last(),
        Some(&(Market::OnDemand, vec![])),
    );
    // After the lock, a new launch offers all three again.
    h.now = h.now + Duration::from_secs(121);
    h.obedient = true;
    h.submit(testkit::job(2, 0, 0));
    h.run_for(SEC, SEC);
    assert_eq!(
        zones_of_launches(&h).last(),
        Some(&(Market::Spot, zones(&["zone-b", "zone-a", "zone-c"]))),
    );
}

#[test]
fn locked_zones_are_left_out_and_a_newly_priced_zone_is_offered() {
    let mut cfg = tight_sla_config();
    spot_only(&mut cfg);
    let mut h = Harness::new(cfg);
    three_spot_zones(&mut h);
    h.obedient = false;
    h.submit(testkit::job(1, 0, 0));
    h.run_for(SEC, SEC);
    let first = h.engine.live_workers().next().expect("requested");
    // The launch asked zones b, a, c and none had room: all three lock.
    h.send(Event::LaunchFailed {
        workers: vec![first],
        reason: LaunchFailure::Capacity,
    });
    h.send(Event::PriceUpdate {
        shape: "m5.large".into(),
        market: Market::Spot,
        zone: Some("zone-d".into()),
        price: PricePerHour(Micros(50_000)),
    });
    h.submit(testkit::job(2, 0, 0));
    h.run_for(SEC, SEC);
    assert_eq!(
        zones_of_launches(&h).last(),
        Some(&(Market::Spot, vec!["zone-d".to_string()])),
        "the locked zones are left out; the open one is offered, dearer or not"
    );
}

#[test]
fn throttled_launches_back_off() {
    let mut h = Harness::new(testkit::config());
    h.obedient = false;
    h.submit(testkit::job(1, 0, 1));
    h.run_for(SEC, SEC);
    let w = h.engine.live_workers().next().expect("requested");
    let cmds = h.send(Event::LaunchFailed {
        workers: vec![w],
        reason: LaunchFailure::Throttled,
    });
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Launch { .. })),
        "no immediate retry into a rate limit"
    );
    h.now = h.now + Duration::from_secs(3);
    let retry = h.send(Event::Tick);
    assert!(retry.iter().any(|c| matches!(c, Command::Launch { .. })));
}

#[test]
fn the_pool_never_exceeds_max_and_says_so() {
    let mut cfg = testkit::config();
    cfg.pools[0].max = 3;
    let mut h = Harness::new(cfg);
    for id in 1..=10 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(SEC, SEC);
    assert_eq!(physical(&h, 0), 3);
    assert_eq!(decisions(&h)[0].reason, ScaleReason::AtMax { wanted: 10 });
}

#[test]
fn the_fleet_budget_caps_scale_up() {
    let mut cfg = testkit::config();
    cfg.max_cost_per_hour = Some(PricePerHour(Micros(96_000 * 4)));
    let mut h = Harness::new(cfg);
    for id in 1..=10 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(SEC, SEC);
    assert_eq!(physical(&h, 0), 4, "$0.096/h each under a $0.384/h budget");
    assert_eq!(decisions(&h)[0].reason.kind(), "budget");
}

#[test]
fn a_tenant_at_quota_does_not_make_the_fleet_grow() {
    let mut cfg = testkit::config();
    cfg.tenants[0].quota.max_running_jobs = Some(2);
    let mut h = Harness::new(cfg);
    for id in 1..=10 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(SEC, SEC);
    assert_eq!(physical(&h, 0), 2);
}

#[test]
fn prewarming_follows_the_learned_arrival_rate() {
    let mut cfg = testkit::config();
    cfg.pools[0].prewarm = Some(PrewarmConfig {
        max_instances: 5,
        factor_percent: 100,
    });
    cfg.pools[0].idle_timeout = Duration::ZERO;
    let mut h = Harness::new(cfg);
    // Four weeks of a 60 jobs/hour burst in the same hour, 1-minute jobs.
    let mut id = 0;
    for week in 0..4u64 {
        let start = Timestamp::from_secs(1_000_000 + week * 7 * 86_400);
        h.now = start;
        for _ in 0..60 {
            id += 1;
            h.submit(testkit::job(id, 0, 1));
            h.run_for(60 * SEC, 30 * SEC);
            if matches!(
                h.engine.job_state(JobId(id)),
                Some(JobState::Assigned { .. } | JobState::Running { .. })
            ) {
                h.finish(JobId(id), JobOutcome::Succeeded);
            }
        }
        h.run_for(3 * 3600 * SEC, 600 * SEC);
    }
    // Two weeks of history later, just before the same hour:
    h.now = Timestamp::from_secs(1_000_000 + 4 * 7 * 86_400 - 1800);
    h.send(Event::Tick);
    let status = h.engine.pool_status(PoolId(0)).expect("pool");
    assert!(
        status.desired >= 1 && status.desired <= 5,
        "pre-warmed within the cap: {status:?}"
    );
    assert!(decisions(&h).iter().any(|d| d.reason.kind() == "prewarm"));
}

#[test]
fn in_external_mode_the_engine_keeps_the_size_it_is_told() {
    let mut cfg = testkit::config();
    cfg.scaling_mode = ScalingMode::External;
    let mut h = Harness::new(cfg);
    for id in 1..=5 {
        h.submit(testkit::job(id, 0, 0));
    }
    h.run_for(SEC, SEC);
    assert_eq!(physical(&h, 0), 0, "no planning in external mode");
    h.send(Event::SetDesired {
        pool: PoolId(0),
        desired: 2,
    });
    assert_eq!(physical(&h, 0), 2);
    assert_eq!(decisions(&h)[0].reason, ScaleReason::External);
    h.run_for(31 * SEC, SEC);
    assert_eq!(
        h.engine.queued_jobs(),
        3,
        "two run, three wait for the policy"
    );
}

#[test]
fn set_desired_is_refused_while_the_planner_is_in_charge() {
    let mut h = Harness::new(testkit::config());
    let err = h
        .engine
        .handle(
            Event::SetDesired {
                pool: PoolId(0),
                desired: 3,
            },
            h.now,
        )
        .expect_err("planner mode");
    assert_eq!(err, EngineError::ExternalScalingDisabled);
}

#[test]
fn a_reload_raises_a_pool_max_and_the_queue_uses_it_at_once() {
    let mut cfg = testkit::config();
    cfg.pools[0].max = 2;
    let mut h = Harness::new(cfg.clone());
    for id in 1..=5 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(SEC, SEC);
    assert_eq!(physical(&h, 0), 2);
    cfg.pools[0].max = 5;
    cfg.tenants.push(testkit::tenant("newcomer"));
    let cmds = h.engine.reconfigure(cfg, h.now).expect("compatible reload");
    assert_eq!(
        cmds.iter()
            .filter_map(|c| if let Command::Launch { workers, .. } = c {
                Some(workers.len())
            } else {
                None
            })
            .sum::<usize>(),
        3
    );
    assert!(h.engine.tenant_id("newcomer").is_some());
    assert_eq!(h.engine.queued_jobs(), 5, "no job dropped");
    h.engine
        .check_invariants()
        .expect("consistent after reload");
}

#[test]
fn a_reload_that_removes_a_pool_is_refused_and_changes_nothing() {
    let cfg = testkit::config_with_static_pool();
    let mut h = Harness::new(cfg.clone());
    h.run_for(31 * SEC, SEC);
    let mut smaller = cfg.clone();
    smaller.pools.remove(0);
    let err = h
        .engine
        .reconfigure(smaller, h.now)
        .expect_err("pool removed");
    assert!(
        matches!(
            err,
            ReconfigureError::Moved {
                section: "pools",
                index: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(h.engine.config(), &cfg);
    let mut invalid = cfg;
    invalid.pools[0].max = 0;
    invalid.pools[0].kind = PoolKind::Dynamic {
        min: 3,
        idle_count: 0,
    };
    assert!(matches!(
        h.engine.reconfigure(invalid, h.now),
        Err(ReconfigureError::Invalid(_))
    ));
}

#[test]
fn each_launch_batch_has_consecutive_worker_ids() {
    let mut cfg = testkit::config();
    cfg.pools[0].market.spot_percent = 50;
    let mut h = Harness::new(cfg);
    h.obedient = false;
    for id in 1..=12 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.send(Event::Tick);
    let batches: Vec<Vec<u64>> = h
        .log
        .iter()
        .filter_map(|c| match c {
            Command::Launch { workers, .. } => Some(workers.iter().map(|w| w.0).collect()),
            _ => None,
        })
        .collect();
    assert!(!batches.is_empty());
    for b in &batches {
        assert!(
            b.windows(2).all(|w| w[1] == w[0] + 1),
            "a batch's ids are consecutive (a provider derives them from launch indexes): {batches:?}"
        );
    }
}

fn spot_only(cfg: &mut ebbtide_core::EngineConfig) {
    cfg.pools[0].market = MarketPolicy {
        on_demand_base: 0,
        spot_percent: 100,
        spot_fallback_for: Duration::from_secs(600),
    };
}

#[test]
fn an_incomplete_spot_launch_falls_back_like_a_capacity_error() {
    let mut cfg = tight_sla_config();
    spot_only(&mut cfg);
    let mut h = Harness::new(cfg);
    h.obedient = false;
    h.submit(testkit::job(1, 0, 0));
    h.run_for(SEC, SEC);
    let w = h.engine.live_workers().next().expect("spot requested");
    let cmds = h.send(Event::LaunchFailed {
        workers: vec![w],
        reason: LaunchFailure::Incomplete,
    });
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::Launch {
                market: Market::OnDemand,
                why: MarketReason::SpotLocked { .. },
                ..
            }
        )),
        "{cmds:?}"
    );
}

#[test]
fn credentials_that_could_not_be_issued_back_off_without_blaming_spot() {
    let mut cfg = testkit::config();
    spot_only(&mut cfg);
    let mut h = Harness::new(cfg);
    h.obedient = false;
    h.submit(testkit::job(1, 0, 1));
    h.run_for(SEC, SEC);
    let w = h.engine.live_workers().next().expect("spot requested");
    let cmds = h.send(Event::LaunchFailed {
        workers: vec![w],
        reason: LaunchFailure::NotIssued,
    });
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Launch { .. })),
        "backs off: {cmds:?}"
    );
    h.now = h.now + Duration::from_secs(3);
    let retry = h.send(Event::Tick);
    assert!(
        retry.iter().any(|c| matches!(
            c,
            Command::Launch {
                market: Market::Spot,
                ..
            }
        )),
        "spot again after the back-off: {retry:?}"
    );
}

/// A pool whose class target (10 s) is shorter than a boot (30 s): every
/// job is overdue before any worker can be up.
fn tight_sla_config() -> EngineConfig {
    let mut c = testkit::config();
    c.classes[0].sla_target = 10 * SEC;
    c.pools[0].max = 200;
    c
}

fn launched_workers(h: &Harness) -> usize {
    launches(h).iter().map(|(_, n)| n).sum()
}

#[test]
fn overdue_jobs_with_workers_booting_for_them_launch_nothing_more() {
    let mut h = Harness::new(tight_sla_config());
    for id in 1..=20 {
        h.submit(testkit::job(id, 0, 0));
    }
    h.run_for(SEC, SEC);
    assert_eq!(launched_workers(&h), 20);
    // Ticks every second while the jobs are overdue and the workers boot.
    h.run_for(25 * SEC, SEC);
    assert_eq!(
        launched_workers(&h),
        20,
        "re-plans while the first batch boots launch nothing: {:?}",
        launches(&h)
    );
    h.run_for(10 * SEC, SEC);
    assert_eq!(h.engine.queued_jobs(), 0, "the booted workers took all 20");
}

#[test]
fn a_reclamation_is_replaced_once_not_at_every_tick() {
    let mut h = Harness::new(tight_sla_config());
    for id in 1..=20 {
        h.submit(testkit::job(id, 0, 0));
    }
    h.run_for(40 * SEC, SEC);
    assert_eq!(h.engine.queued_jobs(), 0);
    let before = launched_workers(&h);
    // The provider takes every worker away at once: 20 jobs go back to
    // the queue, already past their deadline.
    let workers: Vec<WorkerId> = h.engine.live_workers().collect();
    for w in workers {
        h.send(Event::WorkerLost { worker: w });
    }
    assert_eq!(h.engine.queued_jobs(), 20);
    h.run_for(25 * SEC, SEC);
    assert_eq!(
        launched_workers(&h) - before,
        20,
        "one replacement per requeued job: {:?}",
        launches(&h)
    );
}

fn idle(h: &Harness) -> u32 {
    h.engine.pool_status(PoolId(0)).expect("pool").idle
}

/// Eight bursts of five jobs, one a minute, each finished before the next.
fn bursts_of_five(h: &mut Harness) {
    let mut id = 0;
    for _ in 0..8 {
        let burst: Vec<u64> = (0..5)
            .map(|_| {
                id += 1;
                id
            })
            .collect();
        for j in &burst {
            h.submit(testkit::job(*j, 0, 0));
        }
        h.run_for(40 * SEC, SEC);
        finish_all(h, burst);
        h.run_for(20 * SEC, SEC);
    }
}

#[test]
fn a_target_shorter_than_a_boot_keeps_headroom_for_the_bursts_seen() {
    let mut cfg = tight_sla_config();
    cfg.pools[0].headroom = HeadroomPolicy::Auto {
        coverage_milli: 990,
    };
    let mut h = Harness::new(cfg);
    bursts_of_five(&mut h);
    assert_eq!(idle(&h), 5, "one burst's worth stays idle between bursts");
    assert!(
        decisions(&h)
            .iter()
            .any(|d| matches!(d.reason, ScaleReason::Headroom { idle_slots: 5, .. })),
        "the decision says why: {:?}",
        decisions(&h)
    );
    // The next burst starts at once, on the idle workers.
    let waiting_before = h.engine.queued_jobs();
    for id in 100..105 {
        h.submit(testkit::job(id, 0, 0));
    }
    assert_eq!((waiting_before, h.engine.queued_jobs()), (0, 0));
}

#[test]
fn no_headroom_is_kept_when_every_target_leaves_time_to_boot() {
    let mut cfg = testkit::config();
    cfg.pools[0].headroom = HeadroomPolicy::Auto {
        coverage_milli: 990,
    };
    let mut h = Harness::new(cfg);
    // Class 0 has a 5-minute target: a launch at arrival is in time.
    bursts_of_five(&mut h);
    h.run_for(120 * SEC, SEC);
    assert_eq!(physical(&h, 0), 0, "idle workers retire");
    assert!(
        !decisions(&h)
            .iter()
            .any(|d| matches!(d.reason, ScaleReason::Headroom { .. })),
        "{:?}",
        decisions(&h)
    );
}

/// The pool of the worker holding `job`.
fn pool_of_job(h: &Harness, job: u64) -> PoolId {
    let worker = h
        .engine
        .job_state(JobId(job))
        .and_then(|s| s.worker())
        .expect("on a worker");
    h.engine
        .worker_views(h.now)
        .into_iter()
        .find(|v| v.id == worker)
        .expect("worker")
        .pool
}

/// Five hour-long jobs on a chain whose first pool holds two: returns the
/// harness with the burst running, and the jobs on each pool.
fn spilled_burst(owned: PoolConfig, rented: PoolConfig) -> (Harness, Vec<u64>, Vec<u64>) {
    let mut cfg = testkit::config();
    cfg.default_job_duration = Duration::from_secs(3600);
    cfg.pools = vec![
        PoolConfig {
            max: 2,
            preference: 0,
            ..owned
        },
        PoolConfig {
            preference: 1,
            ..rented
        },
    ];
    let mut h = Harness::new(cfg);
    for id in 1..=5 {
        h.submit(testkit::job(id, 0, 1));
    }
    h.run_for(31 * SEC, SEC);
    assert_eq!(
        (physical(&h, 0), physical(&h, 1)),
        (2, 3),
        "the burst spilled"
    );
    let (on_owned, on_rented): (Vec<u64>, Vec<u64>) =
        (1..=5).partition(|id| pool_of_job(&h, *id) == PoolId(0));
    assert_eq!(on_owned.len(), 2);
    (h, on_owned, on_rented)
}

#[test]
fn as_a_burst_ebbs_the_later_pool_of_the_chain_retires_before_the_preferred_one() {
    let (mut h, owned, rented) = spilled_burst(
        testkit::dynamic_pool("owned"),
        testkit::dynamic_pool("rented"),
    );

    // The owned workers' jobs end first; the rented ones still run.
    finish_all(&mut h, owned);
    h.run_for(10 * SEC, SEC);
    assert_eq!(
        physical(&h, 0),
        2,
        "idle owned workers wait while demand still spills past them"
    );
    // A new job lands on an owned worker, not a fresh or rented one.
    h.submit(testkit::job(6, 0, 1));
    h.run_for(SEC, SEC);
    assert_eq!(pool_of_job(&h, 6), PoolId(0));

    finish_all(&mut h, rented);
    h.run_for(3 * SEC, SEC);
    assert_eq!(physical(&h, 1), 0, "the rented workers retire at once");
    assert!(physical(&h, 0) >= 1, "the owned worker running job 6 stays");
    let drained: Vec<WorkerId> = h
        .logged(|c| match c {
            Command::Drain { worker, .. } => Some(*worker),
            _ => None,
        })
        .collect();
    let views = h.engine.worker_views(h.now);
    assert!(
        drained
            .iter()
            .all(|w| views.iter().all(|v| v.id != *w || v.pool != PoolId(0))),
        "no owned worker was drained while rented ones ran: {drained:?}"
    );
}

/// The regression the bare-metal end-to-end test found: jobs requeued from
/// a lost host kept the rented workers busy after the owned ones had gone
/// idle; the owned ones timed out, and the trickle that followed landed on
/// the rented workers as they freed up and kept them (and only them) alive.
#[test]
fn a_trickle_after_a_burst_returns_to_the_preferred_pool_and_the_dearer_one_retires() {
    let (mut h, on_owned, on_rented) = spilled_burst(
        PoolConfig {
            idle_timeout: 3 * SEC,
            on_demand_price: PricePerHour(Micros(50_000)),
            ..testkit::dynamic_pool("owned")
        },
        PoolConfig {
            idle_timeout: 3 * SEC,
            on_demand_price: PricePerHour(Micros(200_000)),
            ..testkit::dynamic_pool("rented")
        },
    );

    // The owned workers free up first and stay idle well past their idle
    // timeout while the rented ones still run the burst's tail.
    finish_all(&mut h, on_owned);
    h.run_for(10 * SEC, SEC);
    assert!(
        physical(&h, 0) >= 1,
        "an owned worker is kept for the jobs the rented ones would otherwise take"
    );
    assert!(
        decisions(&h)
            .iter()
            .any(|d| matches!(d.reason, ScaleReason::TakeBack { .. })),
        "and the decision says why: {:?}",
        decisions(&h)
    );

    // The tail ends as a trickle starts: a one-second job every other second.
    finish_all(&mut h, on_rented);
    let mut running: Vec<u64> = Vec::new();
    for (step, id) in (100..130).enumerate() {
        for done in running.drain(..) {
            h.finish(JobId(done), JobOutcome::Succeeded);
        }
        if step % 2 == 0 {
            h.submit(testkit::job(id, 0, 1));
            h.run_for(SEC, SEC);
            assert_eq!(
                pool_of_job(&h, id),
                PoolId(0),
                "trickle job {id} starts on the owned pool"
            );
            running.push(id);
        } else {
            h.run_for(SEC, SEC);
        }
    }
    assert_eq!(
        physical(&h, 1),
        0,
        "the rented workers retired while the trickle ran"
    );
    assert!(physical(&h, 0) >= 1, "the owned pool carries the trickle");
}

#[test]
fn an_idle_worker_stays_until_its_minimum_charge_is_used_up() {
    let mut cfg = testkit::config();
    cfg.pools[0].idle_timeout = 5 * SEC;
    cfg.pools[0].billing = Billing::PerSecond { minimum: 60 * SEC };
    let mut h = Harness::new(cfg);
    h.submit(testkit::job(1, 0, 1));
    h.run_for(31 * SEC, SEC);
    h.finish(JobId(1), JobOutcome::Succeeded);
    h.run_for(25 * SEC, SEC);
    assert_eq!(
        physical(&h, 0),
        1,
        "idle past its timeout, but the first minute is paid for anyway"
    );
    h.run_for(6 * SEC, SEC);
    assert_eq!(physical(&h, 0), 0, "retired once the minute is used up");
}

#[test]
fn in_external_mode_idle_workers_retire_after_the_policys_idle_time_only() {
    let mut cfg = testkit::config();
    cfg.scaling_mode = ScalingMode::External;
    cfg.pools[0].idle_timeout = 120 * SEC;
    let mut h = Harness::new(cfg);
    h.send(Event::SetDesired {
        pool: PoolId(0),
        desired: 3,
    });
    h.run_for(31 * SEC, SEC);
    h.send(Event::SetDesired {
        pool: PoolId(0),
        desired: 0,
    });
    h.run_for(60 * SEC, SEC);
    assert_eq!(
        physical(&h, 0),
        3,
        "no arrivals, yet the outside policy's idle time holds, not the planner's rule"
    );
    h.run_for(61 * SEC, SEC);
    assert_eq!(physical(&h, 0), 0, "gone after the idle time");
}
