//! What an agent says when its session opens, reconciled with where the
//! engine placed jobs: nothing runs twice, nothing assigned is forgotten.

use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use ebbtide_core::{Command, Event, JobId, WorkerId};

/// Two jobs assigned to workers of a booted pool.
fn two_assigned() -> (Harness, WorkerId, WorkerId) {
    let mut h = Harness::new(testkit::config());
    h.submit(testkit::job(1, 0, 1));
    h.submit(testkit::job(2, 0, 1));
    h.run_for(Duration::from_secs(60), Duration::from_secs(1));
    let on = |h: &Harness, j| {
        h.engine
            .job_state(JobId(j))
            .and_then(|s| s.worker())
            .expect("assigned")
    };
    let (a, b) = (on(&h, 1), on(&h, 2));
    assert_ne!(a, b, "one job per worker (capacity 1)");
    (h, a, b)
}

fn session(h: &mut Harness, worker: WorkerId, running: &[u64], finished: &[u64]) -> Vec<Command> {
    h.send(Event::SessionOpened {
        worker,
        running: running.iter().copied().map(JobId).collect(),
        finished: finished.iter().copied().map(JobId).collect(),
    })
}

#[test]
fn an_assignment_the_agent_never_got_is_delivered_again_as_the_same_attempt() {
    let (mut h, a, _) = two_assigned();
    let cmds = session(&mut h, a, &[], &[]);
    assert_eq!(
        cmds,
        vec![Command::Redeliver {
            job: JobId(1),
            worker: a,
            attempt: 1
        }]
    );
    assert_eq!(h.engine.job_attempts(JobId(1)), Some(1), "no new attempt");
}

#[test]
fn an_agent_that_runs_or_finished_its_job_gets_nothing() {
    let (mut h, a, b) = two_assigned();
    assert_eq!(session(&mut h, a, &[1], &[]), vec![]);
    assert_eq!(session(&mut h, b, &[], &[2]), vec![]);
}

#[test]
fn a_job_the_agent_runs_that_is_placed_elsewhere_is_stopped_there() {
    let (mut h, a, b) = two_assigned();
    // A stale agent on `a` says it runs job 2, which the engine gave to `b`.
    let cmds = session(&mut h, a, &[1, 2], &[]);
    assert_eq!(
        cmds,
        vec![Command::StopJob {
            job: JobId(2),
            worker: a
        }]
    );
    assert_eq!(
        h.engine.job_state(JobId(2)).and_then(|s| s.worker()),
        Some(b),
        "it stays where it is placed"
    );
    // A job that no longer exists at all is stopped as well.
    let cmds = session(&mut h, a, &[1, 99], &[]);
    assert_eq!(
        cmds,
        vec![Command::StopJob {
            job: JobId(99),
            worker: a
        }]
    );
}

#[test]
fn a_session_of_an_unknown_worker_is_refused() {
    let (mut h, _, _) = two_assigned();
    let refused = h.engine.handle(
        Event::SessionOpened {
            worker: WorkerId(999),
            running: vec![],
            finished: vec![],
        },
        h.now,
    );
    assert!(refused.is_err());
}
