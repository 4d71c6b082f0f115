//! Worker lifecycle: loss, timeouts, reclamation, and what each does to jobs.

use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use ebbtide_core::*;

const SEC: Duration = Duration::from_secs(1);

fn running_on(h: &Harness, job: u64) -> WorkerId {
    h.engine
        .job_state(JobId(job))
        .and_then(|s| s.worker())
        .expect("job on a worker")
}

#[test]
fn a_lost_workers_job_is_requeued_and_finished_elsewhere() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 2)];
    let mut h = Harness::new(cfg);
    h.run_for(31 * SEC, SEC);
    h.submit(testkit::job(1, 0, 1));
    let w = running_on(&h, 1);
    let cmds = h.send(Event::WorkerLost { worker: w });
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Requeued {
            job: JobId(1),
            attempts: 1
        }
    )));
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Terminate { worker, .. } if *worker == w)),
        "the lost instance is terminated, not leaked"
    );
    let other = running_on(&h, 1);
    assert_ne!(
        other, w,
        "requeued onto the other warm worker in the same event"
    );
}

#[test]
fn a_job_lost_more_than_max_attempts_is_given_up() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 1)];
    let mut h = Harness::new(cfg);
    h.run_for(31 * SEC, SEC);
    let mut spec = testkit::job(1, 0, 1);
    spec.max_attempts = 2;
    h.submit(spec);
    h.finish(JobId(1), JobOutcome::Lost);
    let cmds = h.finish(JobId(1), JobOutcome::Lost);
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::Completed {
                outcome: JobOutcome::Lost,
                ..
            }
        )),
        "{cmds:?}"
    );
    assert_eq!(h.engine.live_jobs(), 0);
}

#[test]
fn a_failed_build_is_final_not_retried() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 1)];
    let mut h = Harness::new(cfg);
    h.run_for(31 * SEC, SEC);
    h.submit(testkit::job(1, 0, 1));
    let cmds = h.finish(JobId(1), JobOutcome::Failed);
    assert!(
        matches!(
            cmds[..],
            [Command::Completed {
                outcome: JobOutcome::Failed,
                ..
            }]
        ),
        "{cmds:?}"
    );
}

#[test]
fn a_silent_worker_is_lost_after_the_heartbeat_timeout() {
    let mut h = Harness::new(testkit::config());
    h.obedient = false;
    h.submit(testkit::job(1, 0, 1));
    h.send(Event::Tick);
    let w = h.engine.live_workers().next().expect("requested");
    h.send(Event::InstanceLaunched {
        worker: w,
        instance: InstanceId("i-1".into()),
        zone: None,
    });
    h.send(Event::WorkerRegistered { worker: w });
    h.now = h.now + Duration::from_secs(31);
    let cmds = h.send(Event::Tick);
    assert_eq!(h.engine.worker_state(w), Some(WorkerState::Lost));
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Requeued { job: JobId(1), .. }))
    );
}

#[test]
fn a_worker_that_never_registers_is_lost_after_the_boot_timeout() {
    let mut h = Harness::new(testkit::config());
    h.obedient = false;
    h.submit(testkit::job(1, 0, 1));
    h.send(Event::Tick);
    let w = h.engine.live_workers().next().expect("requested");
    h.send(Event::InstanceLaunched {
        worker: w,
        instance: InstanceId("i-1".into()),
        zone: None,
    });
    h.now = h.now + Duration::from_secs(301);
    let cmds = h.send(Event::Tick);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Terminate { worker, .. } if *worker == w))
    );
    assert!(
        cmds.iter().any(|c| matches!(c, Command::Launch { .. })),
        "a replacement is launched for the waiting job"
    );
}

#[test]
fn a_reclaimed_workers_job_that_cannot_finish_is_requeued_and_replaced_ahead() {
    let mut cfg = testkit::config();
    cfg.pools[0].market = MarketPolicy {
        on_demand_base: 0,
        spot_percent: 100,
        spot_fallback_for: Duration::from_secs(60),
    };
    let mut h = Harness::new(cfg);
    let mut spec = testkit::job(1, 0, 1);
    spec.expected_duration = Some(Duration::from_secs(600));
    h.submit(spec);
    h.run_for(31 * SEC, SEC);
    let w = running_on(&h, 1);
    let before = h.engine.stats().launched;
    let cmds = h.send(Event::ReclamationNotice {
        worker: w,
        deadline: h.now + Duration::from_secs(120),
    });
    assert!(cmds.contains(&Command::StopJob {
        job: JobId(1),
        worker: w
    }));
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::Requeued {
                job: JobId(1),
                attempts: 0
            }
        )),
        "the stopped attempt is not counted"
    );
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::Drain {
                reason: DrainReason::Reclamation,
                ..
            }
        )) || h.engine.worker_state(w).is_none()
    );
    assert_eq!(
        h.engine.stats().launched,
        before + 1,
        "replacement launched before the instance disappears"
    );
}

#[test]
fn a_reclaimed_workers_job_that_will_finish_in_time_keeps_running() {
    let mut h = Harness::new(testkit::config());
    let mut spec = testkit::job(1, 0, 1);
    spec.expected_duration = Some(Duration::from_secs(30));
    h.submit(spec);
    h.run_for(31 * SEC, SEC);
    let w = running_on(&h, 1);
    let cmds = h.send(Event::ReclamationNotice {
        worker: w,
        deadline: h.now + Duration::from_secs(120),
    });
    assert!(!cmds.iter().any(|c| matches!(c, Command::StopJob { .. })));
    assert_eq!(running_on(&h, 1), w);
    assert_eq!(h.engine.worker_state(w), Some(WorkerState::Draining));
    h.finish(JobId(1), JobOutcome::Succeeded);
    assert_eq!(
        h.engine.worker_state(w),
        None,
        "retired once its job finished"
    );
}

#[test]
fn stale_reports_are_errors_that_change_nothing() {
    let mut h = Harness::new(testkit::config());
    let err = h
        .engine
        .handle(
            Event::JobStarted {
                job: JobId(42),
                worker: WorkerId(1),
            },
            h.now,
        )
        .expect_err("unknown job");
    assert_eq!(err, EngineError::UnknownJob(JobId(42)));
    let err = h
        .engine
        .handle(
            Event::WorkerRegistered {
                worker: WorkerId(9),
            },
            h.now,
        )
        .expect_err("unknown worker");
    assert_eq!(err, EngineError::UnknownWorker(WorkerId(9)));
    assert!(h.engine.check_invariants().is_ok());
}

#[test]
fn registering_twice_is_an_illegal_transition() {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::static_pool("metal", 1)];
    let mut h = Harness::new(cfg);
    h.run_for(31 * SEC, SEC);
    let w = h.engine.live_workers().next().expect("warm worker");
    let err = h
        .engine
        .handle(Event::WorkerRegistered { worker: w }, h.now)
        .expect_err("already registered");
    assert!(
        matches!(err, EngineError::IllegalTransition { .. }),
        "{err}"
    );
}

#[test]
fn the_next_deadline_is_when_a_timeout_fires_and_not_before() {
    let mut h = Harness::new(testkit::config());
    h.obedient = false;
    assert_eq!(h.engine.next_deadline(), None, "nothing waits yet");
    h.submit(testkit::job(1, 0, 1));
    let cmds = h.send(Event::Tick);
    let worker = cmds
        .iter()
        .find_map(|c| match c {
            Command::Launch { workers, .. } => workers.first().copied(),
            _ => None,
        })
        .expect("a launch for the queued job");
    h.send(Event::InstanceLaunched {
        worker,
        instance: InstanceId("i-1".into()),
        zone: None,
    });
    let boot_timeout = h.engine.config().pools[0].boot_timeout;
    let due = h.engine.next_deadline().expect("the boot timeout waits");
    assert_eq!(due, h.now + boot_timeout + Duration::from_millis(1));

    h.now = Timestamp::from_millis(due.as_millis() - 1);
    let early = h.send(Event::Tick);
    assert!(
        !early
            .iter()
            .any(|c| matches!(c, Command::WorkerLost { .. })),
        "not lost a millisecond early: {early:?}"
    );
    h.now = due;
    let on_time = h.send(Event::Tick);
    assert!(
        on_time
            .iter()
            .any(|c| matches!(c, Command::WorkerLost { worker: w, .. } if *w == worker)),
        "lost at its deadline: {on_time:?}"
    );
}

#[test]
fn a_deadline_already_past_is_not_due_again() {
    let mut cfg = testkit::config();
    cfg.pools[0].kind = PoolKind::Dynamic {
        min: 0,
        idle_count: 1,
    };
    let mut h = Harness::new(cfg);
    h.run_for(Duration::from_secs(60), Duration::from_secs(1));
    let idle_timeout = h.engine.config().pools[0].idle_timeout;
    // The spare idle worker outlives its idle timeout (idle_count keeps it).
    h.run_for(idle_timeout * 2, Duration::from_secs(5));
    if let Some(due) = h.engine.next_deadline() {
        assert!(due > h.now, "{due:?} is not after now {:?}", h.now);
    }
}

#[test]
fn an_operator_drain_finishes_the_job_then_retires_the_worker_and_a_replacement_serves_the_queue() {
    let mut h = Harness::new(testkit::config());
    h.submit(testkit::job(1, 0, 0));
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    let worker = h
        .engine
        .job_state(JobId(1))
        .and_then(|s| s.worker())
        .expect("job 1 runs");
    let cmds = h.send(Event::DrainRequested { worker });
    assert!(
        cmds.contains(&Command::Drain {
            worker,
            reason: DrainReason::Operator
        }),
        "{cmds:?}"
    );
    assert_eq!(h.engine.worker_state(worker), Some(WorkerState::Draining));
    // Draining twice is a no-op.
    assert!(h.send(Event::DrainRequested { worker }).is_empty());
    // A job that arrives now goes to a new worker, not the draining one.
    h.submit(testkit::job(2, 0, 0));
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    let other = h
        .engine
        .job_state(JobId(2))
        .and_then(|s| s.worker())
        .expect("job 2 runs");
    assert_ne!(other, worker);
    // Its job finished, the drained worker is terminated.
    let cmds = h.finish(JobId(1), JobOutcome::Succeeded);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Terminate { worker: w, .. } if *w == worker)),
        "{cmds:?}"
    );
}

#[test]
fn a_worker_not_yet_launched_cannot_be_drained() {
    let mut h = Harness::new(testkit::config());
    h.obedient = false;
    h.submit(testkit::job(1, 0, 0));
    h.run_for(Duration::from_secs(1), Duration::from_secs(1));
    let worker = h.engine.live_workers().next().expect("a requested worker");
    assert_eq!(h.engine.worker_state(worker), Some(WorkerState::Requested));
    let refused = h.engine.handle(Event::DrainRequested { worker }, h.now);
    assert!(
        matches!(
            refused,
            Err(EngineError::CannotDrain {
                state: WorkerState::Requested,
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(matches!(
        h.engine.handle(
            Event::DrainRequested {
                worker: WorkerId(999)
            },
            h.now
        ),
        Err(EngineError::UnknownWorker(_))
    ));
}
