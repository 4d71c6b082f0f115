//! The benchmark fleet from the issue: 50 tenants, 20 pools, 10,000
//! workers (all registered), 100,000 queued jobs over 5 classes and 4
//! requirement sets. Ten tenants sit at their concurrency quota, and one
//! pool keeps 200 idle workers that only those tenants' jobs fit, so a tick
//! exercises the matching path (heads examined and refused), not just an
//! early exit.

#![allow(dead_code)]

use std::time::Duration;

use ebbtide_core::testkit;
use ebbtide_core::*;

pub const TENANTS: u32 = 50;
pub const POOLS: u32 = 20;
pub const WORKERS: u32 = 10_000;
pub const QUEUED: u64 = 100_000;
pub const BLOCKED_TENANTS: u32 = 10;
pub const IDLE_POOL_WORKERS: u32 = 200;

pub fn now() -> Timestamp {
    Timestamp::from_secs(5_000_000)
}

/// Label sets: pool `p` offers set `p % 4`; pool 19 is the "arm" pool.
fn labels(set: u32) -> Vec<String> {
    vec!["linux".into(), format!("set-{set}")]
}

pub fn config() -> EngineConfig {
    let mut c = testkit::config();
    c.heartbeat_timeout = Duration::from_secs(365 * 86_400);
    c.tenants = (0..TENANTS)
        .map(|i| {
            let mut t = testkit::tenant(&format!("tenant-{i}"));
            t.weight = 1 + i % 4;
            if i < BLOCKED_TENANTS {
                t.quota.max_running_jobs = Some(1);
            }
            t
        })
        .collect();
    c.pools = (0..POOLS)
        .map(|i| {
            let mut p = testkit::dynamic_pool(&format!("pool-{i}"));
            p.max = if i == POOLS - 1 {
                IDLE_POOL_WORKERS
            } else {
                (WORKERS - IDLE_POOL_WORKERS) / (POOLS - 1) + 1
            };
            p.labels = if i == POOLS - 1 {
                labels(9)
            } else {
                labels(i % 4)
            };
            p.kind = PoolKind::Dynamic {
                min: 0,
                idle_count: 0,
            };
            p.idle_timeout = Duration::from_secs(365 * 86_400);
            p
        })
        .collect();
    c
}

fn spec(id: u64, tenant: u32, class: u8, set: u32) -> JobSpec {
    let mut s = testkit::job(id, tenant, class);
    s.requirements = Requirements {
        labels: labels(set),
        cpu_millis: 1000,
        memory_mib: 1024,
        ..Default::default()
    };
    s
}

/// Drives events until every requested worker is launched and registered.
fn fulfil(engine: &mut Engine, cmds: Vec<Command>, at: Timestamp, next_instance: &mut u64) {
    let mut pending = cmds;
    while !pending.is_empty() {
        let mut next = Vec::new();
        for c in pending {
            if let Command::Launch { workers, .. } = c {
                for w in workers {
                    *next_instance += 1;
                    let instance = InstanceId(format!("i-{:017x}", *next_instance));
                    next.extend(
                        engine
                            .handle(
                                Event::InstanceLaunched {
                                    worker: w,
                                    instance,
                                    zone: Some("us-east-1a".into()),
                                },
                                at,
                            )
                            .expect("launch"),
                    );
                    next.extend(
                        engine
                            .handle(Event::WorkerRegistered { worker: w }, at)
                            .expect("register"),
                    );
                }
            }
        }
        pending = next;
    }
}

/// The engine with 10,000 busy workers and no queue.
pub fn busy_fleet() -> Engine {
    let mut engine = Engine::new(config(), now()).expect("valid bench config");
    let mut id = 0u64;
    let per_pool = (WORKERS - IDLE_POOL_WORKERS) / (POOLS - 1);
    for p in 0..POOLS - 1 {
        for _ in 0..per_pool {
            id += 1;
            let tenant = BLOCKED_TENANTS + (id as u32 % (TENANTS - BLOCKED_TENANTS));
            engine
                .handle(Event::JobSubmitted(spec(id, tenant, 1, p % 4)), now())
                .expect("submit");
        }
    }
    let mut next_instance = 0;
    let cmds = engine.handle(Event::Tick, now()).expect("tick");
    fulfil(&mut engine, cmds, now(), &mut next_instance);
    // The idle pool: prewarm it with jobs of its own label, then finish them.
    let first = id + 1;
    for _ in 0..IDLE_POOL_WORKERS {
        id += 1;
        engine
            .handle(Event::JobSubmitted(spec(id, BLOCKED_TENANTS, 0, 9)), now())
            .expect("submit");
    }
    let cmds = engine.handle(Event::Tick, now()).expect("tick");
    fulfil(&mut engine, cmds, now(), &mut next_instance);
    for j in first..=id {
        let worker = engine
            .job_state(JobId(j))
            .and_then(|s| s.worker())
            .expect("assigned");
        engine
            .handle(
                Event::JobFinished {
                    job: JobId(j),
                    worker,
                    outcome: JobOutcome::Succeeded,
                },
                now(),
            )
            .expect("finish");
    }
    engine
}

/// Adds 100,000 queued jobs: tenants 0..10 are blocked by quota and submit
/// jobs only the idle pool fits; the rest submit jobs for busy pools.
pub fn queue_jobs(engine: &mut Engine, count: u64) {
    for i in 0..count {
        let id = 1_000_000 + i;
        let tenant = (i % u64::from(TENANTS)) as u32;
        let class = (i % 5) as u8;
        let set = if tenant < BLOCKED_TENANTS {
            9
        } else {
            (i / 7 % 4) as u32
        };
        let at = now() + Duration::from_millis(i);
        engine
            .handle(Event::JobSubmitted(spec(id, tenant, class, set)), at)
            .expect("submit");
    }
}

/// Makes tenants 0..10 hold their one quota slot on the idle pool.
pub fn block_tenants(engine: &mut Engine) {
    for t in 0..BLOCKED_TENANTS {
        engine
            .handle(
                Event::JobSubmitted(spec(900_000 + u64::from(t), t, 0, 9)),
                now(),
            )
            .expect("submit");
    }
}

/// The full benchmark state.
pub fn full() -> Engine {
    let mut e = busy_fleet();
    block_tenants(&mut e);
    queue_jobs(&mut e, QUEUED);
    e
}

/// A job an unlimited tenant submits that fits a free slot of the idle
/// pool: the submit→assign path.
pub fn assignable_job() -> JobSpec {
    spec(5_000_000, BLOCKED_TENANTS + 1, 0, 9)
}

/// Finishes every running job among ids `1..=up_to`; returns how many.
pub fn finish_running(engine: &mut Engine, up_to: u64) -> u64 {
    let mut n = 0;
    for j in 1..=up_to {
        if let Some(worker) = engine.job_state(JobId(j)).and_then(|s| s.worker()) {
            engine
                .handle(
                    Event::JobFinished {
                        job: JobId(j),
                        worker,
                        outcome: JobOutcome::Succeeded,
                    },
                    now(),
                )
                .expect("finish");
            n += 1;
        }
    }
    n
}

/// A running job on a busy pool, and its worker.
pub fn a_running_job(engine: &Engine) -> (JobId, WorkerId) {
    let job = JobId(1);
    let worker = engine
        .job_state(job)
        .and_then(|s| s.worker())
        .expect("job 1 runs");
    (job, worker)
}
