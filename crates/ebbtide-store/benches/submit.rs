//! Sustained durable submissions per second through the SQLite store
//! (WAL, synchronous = FULL, group commit), with 64 concurrent submitters.
//!
//! `cargo bench -p ebbtide-store --bench submit`

use std::time::{Duration, Instant};

use ebbtide_store::{NewJob, RequirementsRecord, SqliteStore, Store};

const SUBMITTERS: u64 = 64;
const PER_SUBMITTER: u64 = 500;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("bench.db"))
            .await
            .expect("open");
        let start = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..SUBMITTERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                for n in 0..PER_SUBMITTER {
                    let t = Instant::now();
                    store
                        .submit(NewJob {
                            tenant: format!("tenant-{}", s % 8),
                            class: "high".into(),
                            requirements: RequirementsRecord::default(),
                            command: format!("make test-{n}"),
                            timeout: Duration::from_secs(600),
                            max_attempts: 3,
                            submitted_at_ms: n,
                        })
                        .await
                        .expect("submit");
                    worst = worst.max(t.elapsed());
                }
                worst
            }));
        }
        let mut worst = Duration::ZERO;
        for t in tasks {
            worst = worst.max(t.await.expect("task"));
        }
        let total = SUBMITTERS * PER_SUBMITTER;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{total} durable submissions in {secs:.2} s: {:.0}/s (slowest single submit {worst:?})",
            total as f64 / secs
        );
    });
}
