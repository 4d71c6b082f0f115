//! Engine latency at fleet scale (see `support/fixture.rs` for the state):
//! a full tick, a submit→assign, and a finish→next-assign.
//!
//! `cargo bench -p ebbtide-core --bench engine`. Targets: full tick < 5 ms,
//! submit→assign < 20 µs.

#[path = "support/fixture.rs"]
mod fixture;

use std::sync::OnceLock;
use std::time::Duration;

use ebbtide_core::{Command, Engine, Event, JobOutcome};

fn state() -> &'static Engine {
    static STATE: OnceLock<Engine> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut e = fixture::full();
        // The service hands the cost ledger over every few seconds, so it
        // holds only the lines booked since; start from a handed-over one.
        e.take_ledger(fixture::now());
        assert_eq!(
            e.queued_jobs() as u64,
            fixture::QUEUED,
            "benchmark state has the full queue"
        );
        e
    })
}

fn main() {
    divan::main();
}

#[divan::bench(sample_count = 40, sample_size = 1)]
fn full_tick(b: divan::Bencher) {
    let at = fixture::now() + Duration::from_secs(120);
    b.with_inputs(|| state().clone())
        .bench_local_refs(|e| e.handle(Event::Tick, at).expect("tick"));
}

#[divan::bench(sample_count = 200, sample_size = 1)]
fn submit_to_assign(b: divan::Bencher) {
    let at = fixture::now() + Duration::from_secs(120);
    b.with_inputs(|| state().clone()).bench_local_refs(|e| {
        let cmds = e
            .handle(Event::JobSubmitted(fixture::assignable_job()), at)
            .expect("submit");
        assert!(matches!(cmds[..], [Command::Assign { .. }]), "{cmds:?}");
        cmds
    });
}

#[divan::bench(sample_count = 200, sample_size = 1)]
fn finish_to_next_assign(b: divan::Bencher) {
    let at = fixture::now() + Duration::from_secs(120);
    let (job, worker) = fixture::a_running_job(state());
    b.with_inputs(|| state().clone()).bench_local_refs(|e| {
        let cmds = e
            .handle(
                Event::JobFinished {
                    job,
                    worker,
                    outcome: JobOutcome::Succeeded,
                },
                at,
            )
            .expect("finish");
        assert!(
            cmds.iter().any(|c| matches!(c, Command::Assign { .. })),
            "{cmds:?}"
        );
        cmds
    });
}

/// 150 submissions in a row, each assigned at once to one of the idle
/// slots: the per-submission cost without one cold first touch per sample.
#[divan::bench(sample_count = 40, sample_size = 1)]
fn submit_to_assign_150_in_a_row(b: divan::Bencher) {
    let at = fixture::now() + Duration::from_secs(120);
    b.counter(divan::counter::ItemsCount::new(150usize))
        .with_inputs(|| state().clone())
        .bench_local_refs(|e| {
            for n in 0..150u64 {
                let mut spec = fixture::assignable_job();
                spec.id = ebbtide_core::JobId(6_000_000 + n);
                let cmds = e.handle(Event::JobSubmitted(spec), at).expect("submit");
                assert!(matches!(cmds[..], [Command::Assign { .. }]), "{cmds:?}");
            }
        });
}
