//! The replay loop: virtual time, the real engine, simulated providers and
//! agents.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use ebbtide_config::ClusterConfig;
use ebbtide_core::{
    Billing, ClassId, Command, Engine, EngineConfig, Event, InstanceId, JobId, JobOutcome, JobSpec,
    LaunchFailure, Market, PoolId, Requirements, TenantId, Timestamp, WorkerId, WorkerState,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::params::SimParams;
use crate::policy::{Policy, PolicyState};
use crate::report::{Collector, RunReport};
use crate::shortage::Shortages;
use crate::trace::Trace;

/// Setting up a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A trace job names a class the configuration does not have.
    #[error("trace job {index} has class {class:?}, which the configuration does not define")]
    UnknownClass {
        /// Index in the trace.
        index: usize,
        /// The class name.
        class: String,
    },
    /// The engine refused the configuration.
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// The trace is empty.
    #[error("the trace has no jobs")]
    EmptyTrace,
    /// The engine broke one of its invariants (`SimParams::check_every`).
    #[error("engine invariant broken after event {event} (t = {at_ms} ms): {violation}")]
    Invariant {
        /// How many events the engine had handled.
        event: u64,
        /// Virtual time.
        at_ms: u64,
        /// What is wrong.
        violation: String,
    },
}

/// Something scheduled to happen in virtual time.
#[derive(Debug, Clone)]
enum SimEvent {
    Arrival(usize),
    Tick,
    Launched {
        worker: WorkerId,
        zone: Option<String>,
    },
    LaunchFailed {
        workers: Vec<WorkerId>,
        reason: LaunchFailure,
    },
    Registered(WorkerId),
    JobDone {
        job: JobId,
        token: u64,
    },
    DrainAck(WorkerId),
    Terminated(WorkerId),
    Burst(f64),
}

struct Scheduled {
    at: Timestamp,
    seq: u64,
    event: SimEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One simulation run.
struct Run<'a> {
    trace: &'a Trace,
    specs: Vec<JobSpec>,
    engine: Engine,
    params: &'a SimParams,
    policy: PolicyState,
    rng: ChaCha8Rng,
    heap: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    now: Timestamp,
    tokens: HashMap<JobId, u64>,
    next_token: u64,
    markets: BTreeMap<WorkerId, Market>,
    /// When each spot zone (in `params.spot_zones` order) is out of room.
    shortages: Shortages,
    next_instance: u64,
    stats: Collector,
    /// Events handled, for `check_every`.
    events: u64,
    /// The first invariant violation found; it ends the run.
    violation: Option<SimError>,
}

/// Builds the engine configuration for a trace: every trace tenant the
/// file does not name gets `[tenant_defaults]`; the simulated agents never
/// go silent, so heartbeats are not modelled. The world's minimum charge
/// is booked whatever the file says, since the simulated provider bills it.
pub fn engine_config(
    cluster: &ClusterConfig,
    trace: &Trace,
    policy: &Policy,
    params: &SimParams,
) -> EngineConfig {
    let mut cfg = cluster.engine.clone();
    for pool in &mut cfg.pools {
        if let Billing::PerSecond { minimum } = &mut pool.billing {
            *minimum = (*minimum).max(params.min_billing);
        }
    }
    for name in trace.tenants() {
        if !cfg.tenants.iter().any(|t| t.name == name) {
            cfg.tenants.push(cluster.tenant_from_defaults(&name));
        }
    }
    cfg.heartbeat_timeout = Duration::from_secs(10 * 365 * 86_400);
    policy.prepare(&mut cfg);
    cfg
}

/// Replays `trace` under `policy` and returns what happened.
/// `progress` is called with the fraction of arrivals replayed.
pub fn simulate(
    trace: &Trace,
    cluster: &ClusterConfig,
    params: &SimParams,
    policy: &Policy,
    progress: &mut dyn FnMut(f64),
) -> Result<RunReport, SimError> {
    let first = trace.jobs.first().ok_or(SimError::EmptyTrace)?.submit_ms;
    let cfg = engine_config(cluster, trace, policy, params);
    let start = Timestamp::from_millis(first.saturating_sub(600_000));
    let tenants: HashMap<&str, TenantId> = cfg
        .tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), TenantId(i as u32)))
        .collect();
    let mut specs = Vec::with_capacity(trace.jobs.len());
    for (i, j) in trace.jobs.iter().enumerate() {
        let class = cfg
            .classes
            .iter()
            .position(|c| c.name == j.class)
            .ok_or_else(|| SimError::UnknownClass {
                index: i,
                class: j.class.clone(),
            })?;
        specs.push(JobSpec {
            id: JobId(i as u64 + 1),
            tenant: tenants[j.tenant.as_str()],
            class: ClassId(class as u8),
            requirements: Requirements {
                labels: j.labels.clone(),
                cpu_millis: j.cpu_millis,
                memory_mib: j.memory_mib,
                ..Default::default()
            },
            max_attempts: 5,
            attempts: 0,
            expected_duration: None,
            submitted_at: None,
        });
    }
    let targets = cfg
        .classes
        .iter()
        .map(|c| (c.name.clone(), c.sla_target))
        .collect();
    let pools = cfg.pools.len();
    let engine = Engine::new(cfg, start).map_err(|e| SimError::Config(format!("{e:?}")))?;
    let mut run = Run {
        trace,
        specs,
        engine,
        params,
        policy: PolicyState::new(policy.clone(), pools),
        rng: ChaCha8Rng::seed_from_u64(params.seed),
        heap: BinaryHeap::new(),
        seq: 0,
        now: start,
        tokens: HashMap::new(),
        next_token: 0,
        markets: BTreeMap::new(),
        shortages: Shortages::default(),
        next_instance: 0,
        stats: Collector::new(
            policy.label(),
            targets,
            trace.jobs.len(),
            start,
            params.min_spot_price(),
            params.min_billing,
        ),
        events: 0,
        violation: None,
    };
    let shapes: Vec<String> = run
        .engine
        .config()
        .pools
        .iter()
        .map(|p| p.shape.name.clone())
        .collect();
    for shape in shapes {
        for (zone, price) in params.spot_zones.clone() {
            run.send(Event::PriceUpdate {
                shape: shape.clone(),
                market: Market::Spot,
                zone: Some(zone),
                price,
            });
        }
    }
    run.schedule_world(first);
    run.run(progress);
    if let Some(violation) = run.violation.take() {
        return Err(violation);
    }
    Ok(run.stats.finish(run.engine.stats(), run.now))
}

impl Run<'_> {
    fn at(&mut self, at: Timestamp, event: SimEvent) {
        self.seq += 1;
        self.heap.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn schedule_world(&mut self, first_ms: u64) {
        let until = self.trace.jobs.last().map_or(first_ms, |j| j.submit_ms) + 48 * 3_600_000;
        self.shortages = Shortages::draw(
            &self.params.shortages,
            self.params.spot_zones.len(),
            self.now.as_millis(),
            until,
            &mut self.rng,
        );
        for i in 0..self.trace.jobs.len() {
            self.at(
                Timestamp::from_millis(self.trace.jobs[i].submit_ms),
                SimEvent::Arrival(i),
            );
        }
        self.at(self.now, SimEvent::Tick);
        // Reclamation bursts: a Poisson process whose rate makes the
        // expected reclaimed share match the Spot Advisor bucket.
        let mean_fraction = self.params.burst_fractions.iter().sum::<f64>()
            / self.params.burst_fractions.len().max(1) as f64;
        if self.params.reclaim_fraction_per_month > 0.0 && mean_fraction > 0.0 {
            let per_ms =
                self.params.reclaim_fraction_per_month / (30.0 * 86_400_000.0) / mean_fraction;
            let last = self.trace.jobs.last().map_or(first_ms, |j| j.submit_ms) + 6 * 3_600_000;
            let mut t = self.now.as_millis() as f64;
            loop {
                let u: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
                t += -u.ln() / per_ms;
                if t > last as f64 {
                    break;
                }
                let f = self.params.burst_fractions
                    [self.rng.random_range(0..self.params.burst_fractions.len())];
                self.at(Timestamp::from_millis(t as u64), SimEvent::Burst(f));
            }
        }
    }

    fn run(&mut self, progress: &mut dyn FnMut(f64)) {
        let total = self.trace.jobs.len();
        let last_arrival =
            Timestamp::from_millis(self.trace.jobs.last().map_or(0, |j| j.submit_ms));
        let hard_stop = last_arrival + Duration::from_secs(48 * 3600);
        let mut next_sample = self.now;
        let mut reported = 0usize;
        while let Some(Reverse(s)) = self.heap.pop() {
            if s.at > hard_stop || self.stats.finished_jobs() >= total || self.violation.is_some() {
                break;
            }
            self.now = s.at;
            while next_sample <= self.now {
                self.stats.sample(&mut self.engine, next_sample);
                next_sample = next_sample + self.params.sample_every;
            }
            if let SimEvent::Arrival(i) = s.event
                && i * 100 / total.max(1) > reported
            {
                reported = i * 100 / total.max(1);
                progress(i as f64 / total as f64);
            }
            self.on(s.event);
        }
        progress(1.0);
        self.shutdown();
    }

    fn on(&mut self, event: SimEvent) {
        match event {
            SimEvent::Arrival(i) => {
                let spec = self.specs[i].clone();
                self.stats.arrived(spec.id, spec.class, self.now);
                self.send(Event::JobSubmitted(spec));
            }
            SimEvent::Tick => {
                for p in 0..self.engine.config().pools.len() {
                    let pool = PoolId(p as u32);
                    if let Some(desired) = self.policy.desired(&self.engine, pool, self.now) {
                        self.send(Event::SetDesired { pool, desired });
                    }
                }
                self.send(Event::Tick);
                self.stats.tick(&self.engine, self.params.tick);
                let next = self.now + self.params.tick;
                self.at(next, SimEvent::Tick);
            }
            SimEvent::Launched { worker, zone } => {
                if self.engine.worker_state(worker) == Some(WorkerState::Requested) {
                    self.next_instance += 1;
                    let instance = InstanceId(format!("sim-{}", self.next_instance));
                    self.send(Event::InstanceLaunched {
                        worker,
                        instance,
                        zone,
                    });
                }
            }
            SimEvent::LaunchFailed { workers, reason } => {
                let live: Vec<WorkerId> = workers
                    .into_iter()
                    .filter(|w| self.engine.worker_state(*w) == Some(WorkerState::Requested))
                    .collect();
                if !live.is_empty() {
                    self.send(Event::LaunchFailed {
                        workers: live,
                        reason,
                    });
                }
            }
            SimEvent::Registered(worker) => {
                if self.engine.worker_state(worker) == Some(WorkerState::Booting) {
                    self.stats.registered(worker, self.now);
                    self.send(Event::WorkerRegistered { worker });
                }
            }
            SimEvent::JobDone { job, token } => {
                if self.tokens.get(&job) == Some(&token) {
                    self.tokens.remove(&job);
                    if let Some(worker) = self.engine.job_state(job).and_then(|s| s.worker()) {
                        self.send(Event::JobFinished {
                            job,
                            worker,
                            outcome: JobOutcome::Succeeded,
                        });
                    }
                }
            }
            SimEvent::DrainAck(worker) => {
                if self.engine.worker_state(worker) == Some(WorkerState::Draining) {
                    self.send(Event::DrainAcknowledged { worker });
                }
            }
            SimEvent::Terminated(worker) => {
                if self
                    .engine
                    .worker_state(worker)
                    .is_some_and(|s| s != WorkerState::Requested)
                {
                    self.send(Event::InstanceTerminated { worker });
                }
            }
            SimEvent::Burst(fraction) => self.reclaim(fraction),
        }
    }

    fn reclaim(&mut self, fraction: f64) {
        let spot: Vec<WorkerId> = self
            .markets
            .iter()
            .filter(|(_, m)| **m == Market::Spot)
            .map(|(w, _)| *w)
            .filter(|w| {
                matches!(
                    self.engine.worker_state(*w),
                    Some(
                        WorkerState::Booting
                            | WorkerState::Idle
                            | WorkerState::Busy
                            | WorkerState::Draining
                    )
                )
            })
            .collect();
        for worker in spot {
            if self.rng.random_bool(fraction) {
                let deadline = self.now + self.params.reclaim_notice;
                self.stats.reclaimed += 1;
                self.send(Event::ReclamationNotice { worker, deadline });
                self.at(deadline, SimEvent::Terminated(worker));
            }
        }
    }

    /// Applies an event and carries out the commands it produces.
    fn send(&mut self, event: Event) {
        let handled = self.engine.handle(event, self.now);
        self.events += 1;
        if let Some(every) = self.params.check_every
            && self.events.is_multiple_of(every.max(1))
            && self.violation.is_none()
            && let Err(violation) = self.engine.check_invariants()
        {
            self.violation = Some(SimError::Invariant {
                event: self.events,
                at_ms: self.now.as_millis(),
                violation,
            });
        }
        let cmds = match handled {
            Ok(c) => c,
            Err(_) => {
                self.stats.stale_events += 1;
                return;
            }
        };
        for c in cmds {
            self.carry_out(c);
        }
    }

    fn carry_out(&mut self, c: Command) {
        let now = self.now;
        let api = self.params.api_latency;
        match c {
            Command::Assign { job, .. } => {
                self.stats.started(job, now);
                self.next_token += 1;
                self.tokens.insert(job, self.next_token);
                let duration = self.trace.jobs[(job.0 - 1) as usize].duration;
                let token = self.next_token;
                self.at(now + duration, SimEvent::JobDone { job, token });
                if let Some(worker) = self.engine.job_state(job).and_then(|s| s.worker()) {
                    self.send(Event::JobStarted { job, worker });
                }
            }
            Command::Launch {
                market,
                workers,
                zones,
                ..
            } => self.launch(market, workers, &zones),
            Command::Drain { worker, .. } => self.at(now + api / 2, SimEvent::DrainAck(worker)),
            // Simulated agents never reconnect, so nothing is redelivered;
            // were one emitted, the job already runs from its assignment.
            Command::Redeliver { .. } => {}
            Command::Terminate { worker, .. } => self.at(now + api, SimEvent::Terminated(worker)),
            Command::StopJob { job, .. } | Command::Requeued { job, .. } => {
                self.tokens.remove(&job);
                if matches!(c, Command::Requeued { .. }) {
                    self.stats.reruns += 1;
                }
            }
            Command::Completed { job, outcome, .. } => self.stats.completed(job, outcome),
            Command::Rejected { job, .. } => self.stats.completed(job, JobOutcome::Cancelled),
            Command::LaunchFailed { count, .. } => self.stats.launch_failures += u64::from(count),
            Command::InstanceCost(l) => {
                self.markets.remove(&l.worker);
                self.stats.instance_cost(&l);
            }
            Command::Scale(_) => self.stats.decisions += 1,
            Command::WorkerLost { .. }
            | Command::AssignmentExpired { .. }
            | Command::SpotAwaited { .. } => {}
        }
    }

    /// A launch call. Spot with a list of zones walks it as a fleet request
    /// with several zones does: a zone tried fails for capacity while it
    /// (or the whole region) is in a shortage, or on its own with the
    /// per-call probability, and each costs one API round trip; the batch
    /// lands in the first zone that has room, or fails for capacity once
    /// every zone was tried. Without a list, the cheapest zone is taken (or
    /// refused) in one call.
    fn launch(&mut self, market: Market, workers: Vec<WorkerId>, zones: &[String]) {
        let api = self.params.api_latency;
        let now = self.now;
        if self
            .rng
            .random_bool(self.params.throttle_rate.clamp(0.0, 1.0))
        {
            self.at(
                now + api,
                SimEvent::LaunchFailed {
                    workers,
                    reason: LaunchFailure::Throttled,
                },
            );
            return;
        }
        let cheapest = || {
            self.params
                .spot_zones
                .iter()
                .min_by_key(|(_, p)| *p)
                .map(|(z, _)| z.clone())
        };
        let (zone, calls) = if market == Market::Spot {
            let tries: Vec<Option<String>> = if zones.is_empty() {
                vec![cheapest()]
            } else {
                zones.iter().cloned().map(Some).collect()
            };
            let calls = tries.len() as u32;
            let mut landed = None;
            for (i, zone) in tries.into_iter().enumerate() {
                let at = now.as_millis() + api.as_millis() as u64 * i as u64;
                let short = zone
                    .as_deref()
                    .and_then(|z| self.params.spot_zones.iter().position(|(n, _)| n == z))
                    .is_some_and(|z| self.shortages.short(z, at));
                let refused = self
                    .rng
                    .random_bool(self.params.spot_capacity_failure_rate.clamp(0.0, 1.0));
                if !short && !refused {
                    landed = Some((zone, i as u32 + 1));
                    break;
                }
            }
            match landed {
                Some(found) => found,
                None => {
                    self.at(
                        now + api * calls,
                        SimEvent::LaunchFailed {
                            workers,
                            reason: LaunchFailure::Capacity,
                        },
                    );
                    return;
                }
            }
        } else {
            // Like EC2 Fleet's price-capacity-optimized allocation with
            // ample capacity: the cheapest zone.
            (cheapest(), 1)
        };
        for worker in workers {
            self.markets.insert(worker, market);
            let boot = self.boot_time();
            self.at(
                now + api * calls,
                SimEvent::Launched {
                    worker,
                    zone: zone.clone(),
                },
            );
            self.at(now + api * calls + boot, SimEvent::Registered(worker));
        }
    }

    fn boot_time(&mut self) -> Duration {
        let samples = &self.params.boot_samples;
        let base = samples[self.rng.random_range(0..samples.len())];
        let jitter = self.params.boot_jitter.as_millis() as i64;
        let j = if jitter > 0 {
            self.rng.random_range(-jitter..=jitter)
        } else {
            0
        };
        let ms = (base.as_millis() as i64 + j).max(0) as u64;
        Duration::from_millis(ms) + self.params.agent_start
    }

    /// Ends the run: every instance still alive is terminated now, so its
    /// cost up to this moment is booked.
    fn shutdown(&mut self) {
        let live: Vec<WorkerId> = self.engine.live_workers().collect();
        for w in live {
            if self.engine.worker_state(w) == Some(WorkerState::Requested) {
                self.next_instance += 1;
                let instance = InstanceId(format!("sim-{}", self.next_instance));
                self.send(Event::InstanceLaunched {
                    worker: w,
                    instance,
                    zone: None,
                });
            }
            if self.engine.worker_state(w).is_some() {
                self.send(Event::InstanceTerminated { worker: w });
            }
        }
    }
}
