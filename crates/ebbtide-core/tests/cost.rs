//! Cost accrual, attribution and savings.

use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use ebbtide_core::*;

const SEC: Duration = Duration::from_secs(1);

fn lifetimes(h: &Harness) -> Vec<InstanceLifetime> {
    h.logged(|c| {
        if let Command::InstanceCost(l) = c {
            Some(l.clone())
        } else {
            None
        }
    })
    .collect()
}

#[test]
fn tenant_costs_plus_idle_cost_equal_the_fleet_cost_exactly() {
    let mut cfg = testkit::config();
    cfg.tenants.push(testkit::tenant("beta"));
    cfg.pools[0].capacity_per_instance = 3;
    cfg.pools[0].shape.cpu_millis = 6000;
    let mut h = Harness::new(cfg);
    for id in 1..=7 {
        h.submit(testkit::job(id, (id % 2) as u32, 1));
    }
    h.run_for(31 * SEC, SEC);
    h.run_for(77 * SEC, SEC);
    for id in 1..=7 {
        h.finish(JobId(id), JobOutcome::Succeeded);
        h.run_for(13 * SEC, SEC);
    }
    h.run_for(120 * SEC, SEC);
    let c = h.engine.costs();
    let tenants = c.by_tenant.iter().fold(CostAccum::ZERO, |a, b| a + *b);
    assert!(c.fleet > CostAccum::ZERO);
    assert_eq!(tenants + c.idle, c.fleet, "attribution loses nothing");
    let jobs: i64 = h
        .logged(|c| {
            if let Command::Completed { cost, .. } = c {
                Some(cost.0)
            } else {
                None
            }
        })
        .sum();
    assert!(
        jobs <= tenants.to_micros().0 && jobs + 7 >= tenants.to_micros().0,
        "per-job costs round down by < 1 µ$ each"
    );
}

#[test]
fn an_instance_lifetime_reports_its_cost_at_its_price() {
    let mut h = Harness::new(testkit::config());
    h.submit(testkit::job(1, 0, 1));
    h.run_for(SEC, SEC);
    h.run_for(3600 * SEC, 60 * SEC); // booted, ran the job, stays while job runs
    h.finish(JobId(1), JobOutcome::Succeeded);
    h.run_for(120 * SEC, SEC);
    let life = lifetimes(&h);
    assert_eq!(life.len(), 1);
    let l = &life[0];
    let secs = l
        .ended_at
        .saturating_since(l.launched_at.expect("launched"))
        .as_millis() as i64;
    assert_eq!(
        l.cost.0,
        96_000 * secs / 3_600_000,
        "on-demand price × lifetime"
    );
    assert_eq!(l.on_demand_cost, l.cost);
    assert_eq!(l.jobs_served, 1);
}

#[test]
fn spot_savings_are_measured_against_on_demand() {
    let mut cfg = testkit::config();
    cfg.pools[0].market = MarketPolicy {
        on_demand_base: 0,
        spot_percent: 100,
        spot_fallback_for: Duration::from_secs(60),
    };
    let mut h = Harness::new(cfg);
    h.send(Event::PriceUpdate {
        shape: "m5.large".into(),
        market: Market::Spot,
        zone: None,
        price: PricePerHour(Micros(30_000)),
    });
    h.submit(testkit::job(1, 0, 1));
    h.run_for(3600 * SEC, 10 * SEC);
    let c = h.engine.costs();
    assert!(c.savings() > Micros::ZERO);
    let ratio = c.fleet.0 * 1000 / c.on_demand_equivalent.0;
    assert_eq!(ratio, 312, "0.030 / 0.096 of the on-demand cost");
}

#[test]
fn a_tenant_past_its_daily_spend_is_refused_until_the_next_day() {
    let mut cfg = testkit::config();
    cfg.tenants[0].quota.max_daily_spend = Some(Micros(50_000));
    let mut h = Harness::new(cfg);
    h.now = Timestamp::from_secs(86_400 * 20);
    h.submit(testkit::job(1, 0, 1));
    h.run_for(3600 * SEC, 60 * SEC); // ~$0.095 on a $0.096/h worker
    h.finish(JobId(1), JobOutcome::Succeeded);
    let cmds = h.submit(testkit::job(2, 0, 1));
    assert!(
        matches!(
            cmds[..],
            [Command::Rejected {
                reason: Rejection::DailySpendReached { .. },
                ..
            }]
        ),
        "{cmds:?}"
    );
    h.now = Timestamp::from_secs(86_400 * 21 + 1);
    let cmds = h.submit(testkit::job(3, 0, 1));
    assert!(!cmds.iter().any(|c| matches!(c, Command::Rejected { .. })));
}

#[test]
fn the_ledger_cuts_an_instance_at_midnight_into_tenant_and_idle_lines() {
    let mut cfg = testkit::config();
    // One worker kept whatever the arrivals (a lone job an hour is not
    // worth keeping an idle worker for), so the idle line after the job
    // has a known length.
    cfg.pools[0].kind = PoolKind::Dynamic {
        min: 1,
        idle_count: 0,
    };
    let mut h = Harness::new(cfg);
    let midnight = Timestamp::from_secs(12 * 86_400);
    h.now = Timestamp::from_millis(midnight.as_millis() - 60_000);
    let day = h.now.utc_day();
    h.submit(testkit::job(1, 0, 1));
    // Launched at the first tick (1 s in), boots for 30 s (idle), runs the
    // job 29 s before and 30 s after midnight, then idles 20 s.
    h.run_for(90 * SEC, SEC);
    h.finish(JobId(1), JobOutcome::Succeeded);
    h.run_for(20 * SEC, SEC);
    let lines = h.engine.take_ledger(h.now);
    let price = PricePerHour(Micros(96_000));
    let expect = |day: u64, tenant: Option<TenantId>, secs: u64, idle: u64, jobs: u32| {
        (
            day,
            tenant,
            price.cost_for(Duration::from_secs(secs)),
            secs * 1000,
            idle * 1000,
            jobs,
        )
    };
    let got: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l.key.day,
                l.key.tenant,
                l.cost,
                l.slot_millis,
                l.idle_millis,
                l.jobs_started,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            expect(day, None, 30, 30, 0),
            expect(day, Some(TenantId(0)), 29, 0, 1),
            expect(day + 1, None, 20, 20, 0),
            expect(day + 1, Some(TenantId(0)), 30, 0, 0),
        ]
    );
    assert!(
        lines
            .iter()
            .all(|l| l.instance.is_some() && l.market == Market::OnDemand)
    );
    let total = lines.iter().fold(CostAccum::ZERO, |a, l| a + l.cost);
    assert_eq!(total, h.engine.costs().fleet);
    assert_eq!(total.to_micros(), Micros(109 * 96_000 / 3600));
}

#[test]
fn a_worker_view_shows_its_job_and_its_cost_up_to_the_moment_asked() {
    let mut h = Harness::new(testkit::config());
    h.submit(testkit::job(1, 0, 1));
    h.run_for(60 * SEC, SEC);
    let views = h.engine.worker_views(h.now);
    assert_eq!(views.len(), 1, "{views:?}");
    let v = &views[0];
    assert_eq!(v.state, WorkerState::Busy);
    assert_eq!(v.jobs, vec![JobId(1)]);
    assert_eq!(v.jobs_served, 1);
    assert_eq!(v.instance, Some(InstanceId("i-0001".into())));
    assert_eq!(v.zone.as_deref(), Some("zone-a"));
    let launched = v.launched_at.expect("launched");
    let at = |later: Timestamp| {
        h.engine
            .worker_views(later)
            .first()
            .map(|v| v.cost.0)
            .expect("one worker")
    };
    // 96,000 µ$/h on-demand: the cost grows with the moment asked, though
    // nothing was booked since.
    let hour_later = launched + Duration::from_secs(3600);
    assert_eq!(at(hour_later), 96_000);
    assert_eq!(
        at(h.now),
        96_000 * (h.now.saturating_since(launched).as_millis() as i64) / 3_600_000
    );
}

#[test]
fn an_instance_gone_before_its_minimum_charge_is_billed_the_minimum() {
    let mut cfg = testkit::config();
    cfg.pools[0].billing = Billing::PerSecond { minimum: 60 * SEC };
    let mut h = Harness::new(cfg);
    h.submit(testkit::job(1, 0, 1));
    h.run_for(SEC, SEC);
    let worker = h.engine.live_workers().next().expect("a launch");
    h.run_for(20 * SEC, SEC);
    h.send(Event::InstanceTerminated { worker });
    let life = lifetimes(&h);
    assert_eq!(life.len(), 1);
    assert_eq!(
        life[0]
            .ended_at
            .saturating_since(life[0].launched_at.expect("launched")),
        20 * SEC,
        "it lived 20 s"
    );
    assert_eq!(life[0].cost.0, 96_000 * 60 / 3600, "billed 60 s");
    assert_eq!(
        h.engine.costs().fleet.to_micros().0,
        1_600,
        "the fleet total books the same minimum"
    );
}
