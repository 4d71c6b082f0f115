//! The attempt counter: one, owned by the engine, carried across restarts.

use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use ebbtide_core::{
    Adoption, Command, Event, InstanceId, JobId, JobOutcome, Market, PoolId, WorkerId,
};

fn harness() -> Harness {
    let mut cfg = testkit::config();
    cfg.pools = vec![testkit::dynamic_pool("burst")];
    Harness::new(cfg)
}

fn assigned_attempts(h: &Harness, job: JobId) -> Vec<u32> {
    h.logged(|c| match c {
        Command::Assign {
            job: j, attempt, ..
        } if *j == job => Some(*attempt),
        _ => None,
    })
    .collect()
}

#[test]
fn every_assignment_names_its_attempt_and_a_lost_attempt_counts() {
    let mut h = harness();
    h.submit(testkit::job(1, 0, 1));
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    h.finish(JobId(1), JobOutcome::Lost);
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    assert_eq!(assigned_attempts(&h, JobId(1)), vec![1, 2]);
}

#[test]
fn a_job_handed_back_after_a_restart_continues_its_count() {
    let mut h = harness();
    let mut spec = testkit::job(1, 0, 1);
    spec.attempts = 1;
    h.submit(spec);
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    assert_eq!(assigned_attempts(&h, JobId(1)), vec![2]);
}

#[test]
fn a_job_whose_last_allowed_attempt_was_lost_before_a_restart_is_lost_not_rerun() {
    let mut h = harness();
    let mut spec = testkit::job(1, 0, 1);
    spec.max_attempts = 2;
    spec.attempts = 2;
    let cmds = h.submit(spec);
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::Completed {
                job: JobId(1),
                outcome: JobOutcome::Lost,
                ..
            }
        )),
        "{cmds:?}"
    );
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    assert!(assigned_attempts(&h, JobId(1)).is_empty());
    assert_eq!(h.engine.live_jobs(), 0);
}

#[test]
fn an_adopted_job_keeps_its_attempt_and_its_next_one_follows_it() {
    let mut h = harness();
    let mut spec = testkit::job(7, 0, 1);
    spec.attempts = 2;
    h.send(Event::WorkerAdopted(Adoption {
        worker: WorkerId(40),
        pool: PoolId(0),
        instance: InstanceId("i-40".into()),
        zone: None,
        market: Market::OnDemand,
        running: vec![spec],
        accrue_from: None,
    }));
    let cmds = h.send(Event::JobFinished {
        job: JobId(7),
        worker: WorkerId(40),
        outcome: JobOutcome::Lost,
    });
    assert!(
        cmds.contains(&Command::Requeued {
            job: JobId(7),
            attempts: 2
        }),
        "{cmds:?}"
    );
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    assert_eq!(assigned_attempts(&h, JobId(7)), vec![3]);
}

#[test]
fn a_stopping_engine_starts_no_job_and_launches_nothing_while_running_ones_finish() {
    let mut h = harness();
    h.submit(testkit::job(1, 0, 1));
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    assert!(
        h.engine
            .job_state(JobId(1))
            .and_then(|s| s.worker())
            .is_some()
    );
    h.send(Event::StopDispatch);
    let before = h.log.len();
    h.submit(testkit::job(2, 0, 1));
    h.run_for(Duration::from_secs(60), Duration::from_secs(1));
    let after: Vec<&Command> = h.log[before..].iter().collect();
    assert!(
        !after
            .iter()
            .any(|c| matches!(c, Command::Assign { .. } | Command::Launch { .. })),
        "{after:?}"
    );
    let cmds = h.finish(JobId(1), JobOutcome::Succeeded);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Completed {
            job: JobId(1),
            outcome: JobOutcome::Succeeded,
            ..
        }
    )));
    assert_eq!(
        h.engine.queued_jobs(),
        1,
        "job 2 waits for the next scheduler"
    );
}

#[test]
fn an_assignment_the_worker_never_confirms_is_taken_back_stopped_there_and_requeued() {
    let mut h = harness();
    h.confirms_starts = false;
    h.submit(testkit::job(1, 0, 1));
    h.run_for(Duration::from_secs(40), Duration::from_secs(1));
    let first = h
        .engine
        .job_state(JobId(1))
        .and_then(|s| s.worker())
        .expect("assigned");
    // No JobStarted ever comes from that worker.
    h.run_for(Duration::from_secs(61), Duration::from_secs(1));
    assert!(h.log.iter().any(|c| matches!(
        c,
        Command::AssignmentExpired { job: JobId(1), worker, .. } if *worker == first
    )));
    assert!(
        h.log.contains(&Command::StopJob {
            job: JobId(1),
            worker: first
        }),
        "the worker is told to stop it, in case it did start"
    );
    assert!(h.log.contains(&Command::Requeued {
        job: JobId(1),
        attempts: 1
    }));
    assert_eq!(
        assigned_attempts(&h, JobId(1)),
        vec![1, 2],
        "the second assignment is a new attempt"
    );
}

#[test]
fn a_started_job_is_never_taken_back_however_long_it_runs() {
    let mut h = harness();
    h.submit(testkit::job(1, 0, 1));
    h.run_for(Duration::from_secs(600), Duration::from_secs(5));
    assert!(
        !h.log
            .iter()
            .any(|c| matches!(c, Command::AssignmentExpired { .. })),
        "a running job is not an unconfirmed assignment"
    );
    assert_eq!(assigned_attempts(&h, JobId(1)), vec![1]);
}
