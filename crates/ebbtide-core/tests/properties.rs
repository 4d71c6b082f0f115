//! Property tests: random event sequences, invariants after every step.
//!
//! Each case drives the engine with a random mix of submissions, worker
//! reports, provider answers, losses, reclamations and ticks, and asserts:
//! no job is assigned twice, no job is lost (every accepted job is live or
//! completed exactly once), pools never exceed `max`, tenants never exceed
//! their quota outside a granted burst, static pools are kept warm, and
//! desired capacity never oscillates inside a cooldown window — on top of
//! the engine's own bookkeeping checks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ebbtide_core::testkit;
use ebbtide_core::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        tenant: u32,
        class: u8,
        gpu: bool,
        big: bool,
    },
    Start(usize),
    Finish(usize, u8),
    Cancel(usize),
    Launched(usize, bool),
    LaunchFailed(usize, u8),
    Register(usize),
    Ack(usize),
    Terminated(usize),
    Lose(usize),
    Reclaim(usize),
    /// A live worker's agent reconnects, reporting as running: the jobs
    /// on it whose bit is set in the mask, plus (if given) one job placed
    /// anywhere, as a stale agent would.
    Reconnect(usize, u8, Option<usize>),
    Price(bool, u32),
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..2, 0u8..5, proptest::bool::weighted(0.15), any::<bool>())
            .prop_map(|(tenant, class, gpu, big)| Op::Submit { tenant, class, gpu, big }),
        2 => any::<usize>().prop_map(Op::Start),
        4 => (any::<usize>(), 0u8..4).prop_map(|(i, o)| Op::Finish(i, o)),
        1 => any::<usize>().prop_map(Op::Cancel),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(i, z)| Op::Launched(i, z)),
        1 => (any::<usize>(), 0u8..6).prop_map(|(i, r)| Op::LaunchFailed(i, r)),
        4 => any::<usize>().prop_map(Op::Register),
        3 => any::<usize>().prop_map(Op::Ack),
        3 => any::<usize>().prop_map(Op::Terminated),
        1 => any::<usize>().prop_map(Op::Lose),
        1 => any::<usize>().prop_map(Op::Reclaim),
        2 => (any::<usize>(), any::<u8>(), proptest::option::of(any::<usize>()))
            .prop_map(|(w, mask, stale)| Op::Reconnect(w, mask, stale)),
        1 => (any::<bool>(), 10_000u32..200_000).prop_map(|(s, p)| Op::Price(s, p)),
        5 => (1u16..400).prop_map(Op::Tick),
    ]
}

fn config() -> EngineConfig {
    let mut c = testkit::config();
    for (class, secs) in c.classes.iter_mut().zip([20u64, 60, 300, 1200, 3600]) {
        class.sla_target = Duration::from_secs(secs);
    }
    let mut limited = testkit::tenant("limited");
    limited.weight = 3;
    limited.quota = TenantQuota {
        max_running_jobs: Some(2),
        max_cpu_millis: Some(3000),
        max_queued_jobs: Some(40),
        ..Default::default()
    };
    limited.burst = Some(BurstConfig {
        multiplier_percent: 200,
        duration: Duration::from_secs(60),
        refill: Duration::from_secs(600),
    });
    c.tenants = vec![testkit::tenant("open"), limited];
    let mut metal = testkit::static_pool("metal", 2);
    metal.max = 3;
    let mut spot = testkit::dynamic_pool("spot");
    spot.capacity_per_instance = 2;
    spot.shape.cpu_millis = 4000;
    spot.max = 6;
    spot.max_uses = Some(3);
    spot.market = MarketPolicy {
        on_demand_base: 1,
        spot_percent: 70,
        spot_fallback_for: Duration::from_secs(120),
    };
    spot.scaling = ScalingPolicy {
        scale_up_cooldown: Duration::from_secs(60),
        scale_down_cooldown: Duration::from_secs(120),
        down_stabilization: Duration::from_secs(60),
    };
    spot.idle_timeout = Duration::from_secs(30);
    let mut gpu = testkit::dynamic_pool("gpu");
    gpu.labels.push("gpu".into());
    gpu.max = 2;
    gpu.kind = PoolKind::Dynamic {
        min: 0,
        idle_count: 1,
    };
    c.pools = vec![metal, spot, gpu];
    c
}

/// What the test itself remembers to judge the engine from outside.
#[derive(Default)]
struct Observer {
    next_job: u64,
    accepted: BTreeSet<JobId>,
    completed: BTreeSet<JobId>,
    /// Jobs currently holding an assignment (until finished or requeued).
    holding: BTreeSet<JobId>,
    instances: u64,
    last_up: BTreeMap<PoolId, Timestamp>,
    last_static_failure: Option<Timestamp>,
}

impl Observer {
    fn absorb(&mut self, cmds: &[Command], engine: &Engine) -> Result<(), TestCaseError> {
        for c in cmds {
            match c {
                Command::Assign { job, .. } => {
                    prop_assert!(self.holding.insert(*job), "{job} assigned twice");
                }
                Command::Requeued { job, .. } => {
                    self.holding.remove(job);
                }
                Command::Completed { job, .. } => {
                    prop_assert!(self.completed.insert(*job), "{job} completed twice");
                    self.holding.remove(job);
                }
                Command::Scale(d) => self.check_damping(d, engine)?,
                Command::Redeliver { job, worker, .. } => {
                    prop_assert_eq!(
                        engine.job_state(*job).and_then(|s| s.worker()),
                        Some(*worker),
                        "{} redelivered to a worker it is not placed on",
                        job
                    );
                    prop_assert!(self.holding.contains(job), "{job} redelivered unassigned");
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_damping(&mut self, d: &ScaleDecision, engine: &Engine) -> Result<(), TestCaseError> {
        let policy = engine.config().pools[d.pool.0 as usize].scaling;
        if let Some(up) = self.last_up.get(&d.pool) {
            let since = d.at.saturating_since(*up);
            if d.to < d.from {
                prop_assert!(
                    since >= policy.scale_down_cooldown,
                    "scale-down {since:?} after a scale-up: {d:?}"
                );
            } else if since < policy.scale_up_cooldown {
                prop_assert_eq!(
                    d.reason.kind(),
                    "sla_emergency",
                    "early scale-up without emergency: {:?}",
                    d
                );
            }
        }
        if d.to > d.from {
            self.last_up.insert(d.pool, d.at);
        }
        Ok(())
    }
}

fn pick<T: Copy>(items: &[T], i: usize) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        Some(items[i % items.len()])
    }
}

fn workers_in(engine: &Engine, states: &[WorkerState]) -> Vec<WorkerId> {
    engine
        .live_workers()
        .filter(|w| engine.worker_state(*w).is_some_and(|s| states.contains(&s)))
        .collect()
}

fn event_for(op: &Op, engine: &Engine, obs: &mut Observer, now: Timestamp) -> Option<Event> {
    let live: Vec<JobId> = obs
        .accepted
        .iter()
        .copied()
        .filter(|j| engine.job_state(*j).is_some())
        .collect();
    let on_worker = |want_assigned: bool| -> Vec<JobId> {
        live.iter()
            .copied()
            .filter(|j| match engine.job_state(*j) {
                Some(JobState::Assigned { .. }) => true,
                Some(JobState::Running { .. }) => !want_assigned,
                _ => false,
            })
            .collect()
    };
    Some(match *op {
        Op::Submit {
            tenant,
            class,
            gpu,
            big,
        } => {
            obs.next_job += 1;
            let mut spec = testkit::job(obs.next_job, tenant, class);
            spec.max_attempts = 2;
            spec.requirements.cpu_millis = if big { 1500 } else { 500 };
            if gpu {
                spec.requirements.labels.push("gpu".into());
            }
            Event::JobSubmitted(spec)
        }
        Op::Start(i) => {
            let job = pick(&on_worker(true), i)?;
            let worker = engine.job_state(job)?.worker()?;
            Event::JobStarted { job, worker }
        }
        Op::Finish(i, o) => {
            let job = pick(&on_worker(false), i)?;
            let worker = engine.job_state(job)?.worker()?;
            let outcome = [
                JobOutcome::Succeeded,
                JobOutcome::Failed,
                JobOutcome::Lost,
                JobOutcome::Cancelled,
            ][usize::from(o)];
            Event::JobFinished {
                job,
                worker,
                outcome,
            }
        }
        Op::Cancel(i) => Event::JobCancelled {
            job: pick(&live, i)?,
        },
        Op::Launched(i, z) => {
            let worker = pick(&workers_in(engine, &[WorkerState::Requested]), i)?;
            obs.instances += 1;
            Event::InstanceLaunched {
                worker,
                instance: InstanceId(format!("i-{}", obs.instances)),
                zone: z.then(|| "zone-b".to_string()),
            }
        }
        Op::LaunchFailed(i, r) => {
            let worker = pick(&workers_in(engine, &[WorkerState::Requested]), i)?;
            let reason = [
                LaunchFailure::Capacity,
                LaunchFailure::Throttled,
                LaunchFailure::Quota,
                LaunchFailure::Permanent,
                LaunchFailure::Incomplete,
                LaunchFailure::NotIssued,
            ][usize::from(r)];
            let _ = now;
            Event::LaunchFailed {
                workers: vec![worker],
                reason,
            }
        }
        Op::Register(i) => Event::WorkerRegistered {
            worker: pick(&workers_in(engine, &[WorkerState::Booting]), i)?,
        },
        Op::Ack(i) => Event::DrainAcknowledged {
            worker: pick(&workers_in(engine, &[WorkerState::Draining]), i)?,
        },
        Op::Terminated(i) => Event::InstanceTerminated {
            worker: pick(
                &workers_in(engine, &[WorkerState::Terminating, WorkerState::Lost]),
                i,
            )?,
        },
        Op::Lose(i) => Event::WorkerLost {
            worker: pick(
                &workers_in(
                    engine,
                    &[WorkerState::Idle, WorkerState::Busy, WorkerState::Booting],
                ),
                i,
            )?,
        },
        Op::Reclaim(i) => Event::ReclamationNotice {
            worker: pick(
                &workers_in(engine, &[WorkerState::Idle, WorkerState::Busy]),
                i,
            )?,
            deadline: now + Duration::from_secs(120),
        },
        Op::Reconnect(i, mask, stale) => {
            let worker = pick(
                &workers_in(
                    engine,
                    &[WorkerState::Idle, WorkerState::Busy, WorkerState::Draining],
                ),
                i,
            )?;
            let mut running: Vec<JobId> = engine
                .jobs_on(worker)
                .iter()
                .enumerate()
                .filter(|(k, _)| mask & (1 << (k % 8)) != 0)
                .map(|(_, j)| *j)
                .collect();
            if let Some(s) = stale.and_then(|s| pick(&on_worker(false), s))
                && !running.contains(&s)
            {
                running.push(s);
            }
            Event::SessionOpened {
                worker,
                running,
                finished: Vec::new(),
            }
        }
        Op::Price(spot, p) => Event::PriceUpdate {
            shape: "m5.large".into(),
            market: if spot { Market::Spot } else { Market::OnDemand },
            zone: None,
            price: PricePerHour(Micros(i64::from(p))),
        },
        Op::Tick(_) => Event::Tick,
    })
}

/// The ledger's daily lines add up, to the unit, to the engine's running
/// totals: fleet, idle, per tenant, on-demand equivalent; and it counts
/// every assignment as a job started.
fn check_ledger_matches_the_books(
    engine: &mut Engine,
    start: Timestamp,
    now: Timestamp,
) -> Result<(), TestCaseError> {
    let lines = engine.take_ledger(now);
    let books = engine.costs().clone();
    let sum = |f: &dyn Fn(&LedgerLine) -> bool| {
        lines
            .iter()
            .filter(|l| f(l))
            .fold(CostAccum::ZERO, |a, l| a + l.cost)
    };
    prop_assert_eq!(sum(&|_| true), books.fleet);
    prop_assert_eq!(sum(&|l| l.key.tenant.is_none()), books.idle);
    for (t, spent) in books.by_tenant.iter().enumerate() {
        prop_assert_eq!(sum(&|l| l.key.tenant == Some(TenantId(t as u32))), *spent);
    }
    prop_assert_eq!(sum(&|l| l.market == Market::Spot), books.spot);
    let od = lines
        .iter()
        .fold(CostAccum::ZERO, |a, l| a + l.on_demand_cost);
    prop_assert_eq!(od, books.on_demand_equivalent);
    let started: u64 = lines.iter().map(|l| u64::from(l.jobs_started)).sum();
    prop_assert_eq!(started, engine.stats().assignments);
    for l in &lines {
        prop_assert!(
            (start.utc_day()..=now.utc_day()).contains(&l.key.day),
            "{l:?} outside the run"
        );
        prop_assert!(
            l.idle_millis == 0 || l.key.tenant.is_none(),
            "idle time on a tenant line: {l:?}"
        );
    }
    prop_assert!(
        engine.take_ledger(now).is_empty(),
        "a second take finds nothing new"
    );
    Ok(())
}

fn heartbeat_all(engine: &mut Engine, now: Timestamp) {
    let alive = workers_in(
        engine,
        &[WorkerState::Idle, WorkerState::Busy, WorkerState::Draining],
    );
    for w in alive {
        engine
            .handle(Event::Heartbeat { worker: w }, now)
            .expect("heartbeat to a live worker");
    }
}

proptest! {
    // 200 cases by default; PROPTEST_CASES=5000 for a deeper soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_after_every_event(ops in proptest::collection::vec(op(), 1..250)) {
        // An hour before a UTC midnight, so the ledger's day cut is exercised.
        let start = Timestamp::from_secs(2_073_600 - 3_600);
        let mut now = start;
        let mut engine = Engine::new(config(), now).expect("valid");
        let mut obs = Observer::default();
        for op in &ops {
            if let Op::Tick(secs) = op {
                now = now + Duration::from_secs(u64::from(*secs) / 10);
                // Most workers stay alive; a long tick tests heartbeat loss.
                if *secs < 350 {
                    heartbeat_all(&mut engine, now);
                }
            }
            let Some(event) = event_for(op, &engine, &mut obs, now) else { continue };
            let submitted = if let Event::JobSubmitted(s) = &event { Some(s.id) } else { None };
            let cmds = engine.handle(event.clone(), now).map_err(|e| TestCaseError::fail(format!("{event:?}: {e}")))?;
            if let Some(id) = submitted
                && !cmds.iter().any(|c| matches!(c, Command::Rejected { .. }))
            {
                obs.accepted.insert(id);
            }
            for c in &cmds {
                if let Command::LaunchFailed { pool: PoolId(0), .. } = c {
                    obs.last_static_failure = Some(now);
                }
            }
            if let Event::SessionOpened { worker, running, .. } = &event {
                for c in &cmds {
                    if let Command::StopJob { job, worker: w } = c {
                        prop_assert_eq!(w, worker);
                        prop_assert!(running.contains(job), "{} stopped but not reported", job);
                        prop_assert!(
                            engine.job_state(*job).and_then(|s| s.worker()) != Some(*worker),
                            "{} stopped on the worker it is placed on", job
                        );
                    }
                }
            }
            obs.absorb(&cmds, &engine)?;
            engine.check_invariants().map_err(|e| TestCaseError::fail(format!("after {event:?}: {e}")))?;
            for j in &obs.accepted {
                let live = engine.job_state(*j).is_some();
                prop_assert!(live != obs.completed.contains(j), "{j} is neither live nor completed (or both)");
            }
            if matches!(event, Event::Tick) {
                let metal = engine.pool_status(PoolId(0)).expect("metal");
                let active = metal.requested + metal.booting + metal.idle + metal.busy;
                let recently_failed = obs.last_static_failure.is_some_and(|t| now.saturating_since(t) < Duration::from_secs(600));
                prop_assert!(active >= 2 || metal.physical() >= 3 || recently_failed, "static pool below warm size: {metal:?}");
            }
        }
        check_ledger_matches_the_books(&mut engine, start, now)?;
    }

    #[test]
    fn the_same_events_give_the_same_commands(ops in proptest::collection::vec(op(), 1..120)) {
        let run = || {
            let mut now = Timestamp::from_secs(2_000_000);
            let mut engine = Engine::new(config(), now).expect("valid");
            let mut obs = Observer::default();
            let mut all = Vec::new();
            for op in &ops {
                if let Op::Tick(secs) = op {
                    now = now + Duration::from_secs(u64::from(*secs) / 10);
                }
                if let Some(e) = event_for(op, &engine, &mut obs, now) {
                    if let Event::JobSubmitted(s) = &e { obs.accepted.insert(s.id); }
                    all.push(engine.handle(e, now));
                }
            }
            all
        };
        prop_assert_eq!(run(), run());
    }
}
