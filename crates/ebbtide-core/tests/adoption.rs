//! Adoption: a restarted scheduler takes back workers that outlived it, and
//! their running jobs continue rather than run twice.

use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use ebbtide_core::*;

fn adoption(worker: u64, running: Vec<JobSpec>) -> Event {
    Event::WorkerAdopted(Adoption {
        worker: WorkerId(worker),
        pool: PoolId(0),
        instance: InstanceId(format!("i-{worker}")),
        zone: None,
        market: Market::OnDemand,
        running,
        accrue_from: None,
    })
}

fn harness() -> Harness {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::dynamic_pool("burst")];
    Harness::new(cfg)
}

#[test]
fn an_adopted_workers_running_job_continues_without_a_second_assignment() {
    let mut h = harness();
    let cmds = h.send(adoption(40, vec![testkit::job(7, 0, 1)]));
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Assign { .. })),
        "the job already runs there: {cmds:?}"
    );
    assert!(matches!(
        h.engine.job_state(JobId(7)),
        Some(JobState::Running {
            worker: WorkerId(40),
            ..
        })
    ));
    assert_eq!(h.engine.worker_state(WorkerId(40)), Some(WorkerState::Busy));
    h.engine.check_invariants().expect("invariants hold");
    let cmds = h.finish(JobId(7), JobOutcome::Succeeded);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Completed {
            job: JobId(7),
            outcome: JobOutcome::Succeeded,
            ..
        }
    )));
}

#[test]
fn an_adopted_idle_worker_takes_queued_work_at_once() {
    let mut h = harness();
    h.submit(testkit::job(1, 0, 1));
    let cmds = h.send(adoption(9, vec![]));
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Assign {
            job: JobId(1),
            worker: WorkerId(9),
            ..
        }
    )));
}

#[test]
fn the_first_decision_after_a_restart_starts_from_the_adopted_workers() {
    let mut h = harness();
    for (w, job) in [(3, 1), (4, 2)] {
        h.send(adoption(w, vec![testkit::job(job, 0, 1)]));
    }
    for id in 10..14 {
        h.submit(testkit::job(id, 0, 0));
    }
    h.run_for(Duration::from_secs(1), Duration::from_secs(1));
    let first = h
        .logged(|c| match c {
            Command::Scale(d) => Some(d.clone()),
            _ => None,
        })
        .next()
        .expect("a scale decision for the queued jobs");
    assert_eq!(first.from, 2, "counts the two adopted workers: {first:?}");
    assert_eq!(first.active, 2);
    assert!(first.to > 2, "{first:?}");
}

#[test]
fn a_restarted_fleet_of_the_right_size_needs_no_decision() {
    let mut h = harness();
    h.send(adoption(3, vec![testkit::job(1, 0, 1)]));
    h.run_for(Duration::from_secs(5), Duration::from_secs(1));
    let decisions = h
        .logged(|c| match c {
            Command::Scale(d) => Some(d.clone()),
            _ => None,
        })
        .count();
    assert_eq!(decisions, 0, "{:?}", h.log);
}

#[test]
fn new_workers_get_ids_above_an_adopted_one() {
    let mut h = harness();
    h.send(adoption(500, vec![]));
    h.send(Event::WorkerLost {
        worker: WorkerId(500),
    });
    let mut launched = Vec::new();
    for id in 1..=3 {
        for c in h.submit(testkit::job(id, 0, 1)) {
            if let Command::Launch { workers, .. } = c {
                launched.extend(workers);
            }
        }
    }
    h.run_for(Duration::from_secs(5), Duration::from_secs(1));
    for c in h.log.clone() {
        if let Command::Launch { workers, .. } = c {
            launched.extend(workers);
        }
    }
    assert!(!launched.is_empty(), "queued jobs cause launches");
    assert!(launched.iter().all(|w| w.0 > 500), "{launched:?}");
}

#[test]
fn adopting_a_known_worker_is_refused() {
    let mut h = harness();
    h.send(adoption(3, vec![]));
    let again = h.engine.handle(adoption(3, vec![]), h.now);
    assert!(matches!(again, Err(EngineError::AlreadyKnown(WorkerId(3)))));
}

#[test]
fn a_running_job_of_a_removed_tenant_is_rejected_and_stopped() {
    let mut h = harness();
    let cmds = h.send(adoption(4, vec![testkit::job(8, 99, 1)]));
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Rejected { job: JobId(8), .. }))
    );
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::StopJob {
            job: JobId(8),
            worker: WorkerId(4)
        }
    )));
}

#[test]
fn a_recovered_job_keeps_its_submission_time_for_its_sla() {
    let mut h = harness();
    h.run_for(Duration::from_secs(100), Duration::from_secs(10));
    let mut old = testkit::job(1, 0, 1);
    old.submitted_at = Some(Timestamp::from_millis(0));
    h.submit(testkit::job(2, 0, 1));
    h.submit(old);
    // Both wait for a worker; the one submitted first (before the restart)
    // is served first even though it was handed over second.
    let cmds = h.send(adoption(70, vec![]));
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Assign {
            job: JobId(1),
            worker: WorkerId(70),
            ..
        }
    )));
}

#[test]
fn an_adopted_worker_retires_after_its_job_when_idle() {
    let mut h = harness();
    h.send(adoption(40, vec![testkit::job(7, 0, 1)]));
    h.run_for(Duration::from_secs(5), Duration::from_secs(1));
    h.finish(JobId(7), JobOutcome::Succeeded);
    h.run_for(Duration::from_secs(600), Duration::from_secs(1));
    assert_eq!(
        h.engine.worker_state(WorkerId(40)),
        None,
        "retired and forgotten: {:?}",
        h.log
            .iter()
            .filter(|c| matches!(c, Command::Scale(_) | Command::Drain { .. }))
            .collect::<Vec<_>>()
    );
}

#[test]
fn an_adopted_worker_is_charged_from_where_the_earlier_run_stopped_booking() {
    let mut h = harness();
    let from = h.now;
    h.now = h.now + Duration::from_secs(90);
    let Event::WorkerAdopted(mut a) = adoption(12, vec![testkit::job(3, 0, 1)]) else {
        unreachable!("an adoption")
    };
    a.accrue_from = Some(from);
    h.send(Event::WorkerAdopted(a));
    h.now = h.now + Duration::from_secs(30);
    let lines = h.engine.take_ledger(h.now);
    let price = PricePerHour(Micros(96_000));
    let idle: CostAccum = lines
        .iter()
        .filter(|l| l.key.tenant.is_none())
        .fold(CostAccum::ZERO, |a, l| a + l.cost);
    let busy: CostAccum = lines
        .iter()
        .filter(|l| l.key.tenant.is_some())
        .fold(CostAccum::ZERO, |a, l| a + l.cost);
    assert_eq!(
        idle,
        price.cost_for(Duration::from_secs(90)),
        "the unwatched 90 s, as idle"
    );
    assert_eq!(
        busy,
        price.cost_for(Duration::from_secs(30)),
        "the job's 30 s since adoption"
    );
    assert_eq!(h.engine.costs().fleet, idle + busy);
}

/// Found by the Docker crash test on a loaded machine: the agents that ran
/// the jobs had backed off while the scheduler was down and reconnected
/// after the heartbeat timeout, so their finished jobs ran a second time.
#[test]
fn an_adopted_worker_gets_the_agents_reconnect_back_off_before_it_is_lost() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::dynamic_pool("burst")];
    cfg.heartbeat_timeout = Duration::from_secs(5);
    let mut h = Harness::new(cfg);
    // The agent has not reconnected: no heartbeats.
    h.obedient = false;
    h.send(adoption(40, vec![testkit::job(7, 0, 1)]));
    h.run_for(Duration::from_secs(14), Duration::from_secs(1));
    assert_eq!(
        h.engine.worker_state(WorkerId(40)),
        Some(WorkerState::Busy),
        "silent for 14 s, within the 5 s timeout plus the 10 s reconnect grace"
    );
    h.run_for(Duration::from_secs(2), Duration::from_secs(1));
    assert_ne!(
        h.engine.worker_state(WorkerId(40)),
        Some(WorkerState::Busy),
        "silent past the grace and the timeout: lost"
    );
    assert!(
        matches!(h.engine.job_state(JobId(7)), Some(JobState::Queued)),
        "and its job requeued: {:?}",
        h.engine.job_state(JobId(7))
    );
}
