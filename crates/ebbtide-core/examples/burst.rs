//! A CI burst through the real engine, printed as the scaler's decisions.
//!
//! `cargo run -p ebbtide-core --example burst`
//!
//! Forty jobs arrive at once on a pool that starts empty behind a warm
//! static pool of two; the engine scales the dynamic pool up for their SLA,
//! the jobs run, and the pool shrinks back after the idle timeout. Every
//! decision is printed with its reason.

use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use std::collections::BTreeMap;

use ebbtide_core::{Command, JobId, JobOutcome, PoolId, Timestamp};

fn main() {
    let mut h = Harness::new(testkit::config_with_static_pool());
    h.run_for(Duration::from_secs(31), Duration::from_secs(1));
    for id in 1..=40 {
        h.submit(testkit::job(id, 0, (id % 3) as u8));
    }
    // Each job runs for 20 s after it is assigned.
    let mut started: BTreeMap<JobId, Timestamp> = BTreeMap::new();
    let mut seen = 0;
    for _ in 0..400 {
        h.run_for(Duration::from_secs(1), Duration::from_secs(1));
        for c in &h.log[seen..] {
            if let Command::Assign { job, .. } = c {
                started.insert(*job, h.now);
            }
        }
        seen = h.log.len();
        let done: Vec<JobId> = started
            .iter()
            .filter(|(_, t)| h.now.saturating_since(**t) >= Duration::from_secs(20))
            .map(|(j, _)| *j)
            .collect();
        for j in done {
            started.remove(&j);
            h.finish(j, JobOutcome::Succeeded);
        }
    }
    let start = Timestamp::from_secs(1_000_000);
    for c in &h.log {
        if let Command::Scale(d) = c {
            let pool = &h.engine.config().pools[d.pool.0 as usize].name;
            let t = d.at.saturating_since(start).as_secs();
            println!(
                "t={t:>4}s  {pool:<6} {:>2} → {:<2} ({:<12}) {}",
                d.from,
                d.to,
                d.reason.kind(),
                d.reason
            );
        }
    }
    let s = h.engine.stats();
    let cloud = h.engine.pool_status(PoolId(0)).unwrap_or_default();
    println!(
        "\n{} jobs submitted, {} completed, {} instances launched, {} terminated; cloud pool now has {} instances",
        s.submitted,
        s.completed,
        s.launched,
        s.terminated,
        cloud.physical()
    );
    println!(
        "fleet cost {}, idle share {}",
        h.engine.costs().fleet.to_micros(),
        h.engine.costs().idle.to_micros()
    );
}
