//! `Engine::explain`: why a job waits, for the three holdups operators
//! meet most — a quota, a pool at its max, an instance still booting — and
//! nothing once the job runs.

use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use ebbtide_core::*;

const SEC: Duration = Duration::from_secs(1);

fn explained(h: &Harness, id: u64) -> Explanation {
    h.engine
        .explain(JobId(id), h.now)
        .unwrap_or_else(|| panic!("job {id} is held by the engine"))
}

#[test]
fn a_job_waiting_for_a_booting_instance_says_which_and_when() {
    let mut h = Harness::new(testkit::config());
    h.submit(testkit::job(1, 0, 0));
    h.run_for(5 * SEC, SEC);
    let e = explained(&h, 1);
    assert_eq!(e.state, JobState::Queued);
    assert_eq!(e.waited, 5 * SEC);
    assert_eq!(e.pools.len(), 1);
    assert_eq!(e.pools[0].pool, "cloud");
    assert_eq!(e.pools[0].booting, 1);
    // Launched at the first tick (1 s after submission); 30 s boot time.
    assert_eq!(e.pools[0].first_ready, Some(h.now + 26 * SEC));
    assert_eq!(
        e.holdups,
        vec![Holdup::Booting {
            pool: "cloud".into(),
            count: 1,
            ready_in: 26 * SEC
        }]
    );
    assert!(
        e.holdups[0]
            .to_string()
            .contains("the first ready in about 26 s")
    );
    assert!(e.holdups[0].to_string().contains("booting in pool cloud"));
    // Once it runs, nothing holds it.
    h.run_for(30 * SEC, SEC);
    let e = explained(&h, 1);
    assert!(matches!(e.state, JobState::Running { .. }), "{e:?}");
    assert!(e.holdups.is_empty());
}

#[test]
fn a_job_blocked_by_its_tenants_quota_names_the_limit() {
    let mut cfg = testkit::config_with_static_pool();
    cfg.tenants[0].quota.max_running_jobs = Some(1);
    let mut h = Harness::new(cfg);
    h.run_for(31 * SEC, SEC); // the static pool's two workers are up
    h.submit(testkit::job(1, 0, 0));
    h.submit(testkit::job(2, 0, 0));
    h.run_for(2 * SEC, SEC);
    let e = explained(&h, 2);
    assert_eq!(e.state, JobState::Queued);
    assert_eq!(
        e.holdups[0],
        Holdup::Quota {
            limit: QuotaLimit::RunningJobs { running: 1, max: 1 }
        }
    );
    assert!(
        e.holdups[0]
            .to_string()
            .contains("1 of max_running_jobs = 1 running"),
        "{}",
        e.holdups[0]
    );
    // The free warm slot is no help while the quota holds: it is said too.
    assert!(
        e.holdups.contains(&Holdup::SlotFree {
            pool: "metal".into()
        }),
        "{:?}",
        e.holdups
    );
    assert_eq!(e.ahead_in_class, 0, "job 1 is running, not queued");
}

#[test]
fn a_job_behind_a_pool_at_its_max_says_so_and_counts_the_jobs_ahead() {
    let mut cfg = testkit::config();
    cfg.pools[0].max = 1;
    let mut h = Harness::new(cfg);
    for id in 1..=3 {
        h.submit(testkit::job(id, 0, 0));
        h.run_for(SEC, SEC);
    }
    h.run_for(40 * SEC, SEC);
    let e = explained(&h, 3);
    assert_eq!(e.state, JobState::Queued);
    assert_eq!(e.ahead_in_class, 1, "job 2 waits ahead of it; job 1 runs");
    assert_eq!((e.pools[0].existing, e.pools[0].max), (1, 1));
    assert_eq!(
        e.holdups,
        vec![Holdup::PoolsAtMax {
            pools: vec!["cloud".into()]
        }]
    );
    assert!(
        e.holdups[0]
            .to_string()
            .contains("every pool that can run it is at its max: cloud")
    );
}

#[test]
fn a_job_with_slack_behind_a_busy_worker_is_waited_for_and_says_how_long_is_left() {
    let mut cfg = testkit::config();
    cfg.pools[0].max = 2;
    let mut h = Harness::new(cfg);
    h.submit(testkit::job(1, 0, 0));
    h.run_for(40 * SEC, SEC);
    // Class 2 (the loosest default class) has slack to wait for job 1's
    // worker rather than boot another.
    h.submit(testkit::job(2, 0, 2));
    h.run_for(2 * SEC, SEC);
    let e = explained(&h, 2);
    assert_eq!(e.pools[0].booting, 0, "nothing launched for it: {e:?}");
    let slack = e.target - e.waited;
    assert_eq!(e.holdups, vec![Holdup::PlannerWaits { slack }]);
    assert!(
        e.holdups[0]
            .to_string()
            .contains(&format!("the {} s left", slack.as_secs()))
    );
}

#[test]
fn a_job_the_engine_does_not_hold_has_no_explanation() {
    let h = Harness::new(testkit::config());
    assert!(h.engine.explain(JobId(9), h.now).is_none());
}
