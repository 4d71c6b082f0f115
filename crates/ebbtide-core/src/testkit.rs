//! Fixtures for tests: small configs, job builders, and a [`Harness`] that
//! plays a perfect provider and agents so tests read as specifications.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::command::Command;
use crate::config::*;
use crate::engine::Engine;
use crate::event::Event;
use crate::ids::{ClassId, InstanceId, JobId, TenantId, WorkerId};
use crate::job::{JobOutcome, JobSpec};
use crate::money::{Micros, PricePerHour};
use crate::requirements::Requirements;
use crate::time::Timestamp;

/// A dynamic pool: 2 CPU / 4 GiB linux x86_64 workers, one slot each,
/// up to 10, 30 s boots, 60 s idle timeout, no cooldowns.
pub fn dynamic_pool(name: &str) -> PoolConfig {
    PoolConfig {
        name: name.to_string(),
        provider: "local".into(),
        kind: PoolKind::Dynamic {
            min: 0,
            idle_count: 0,
        },
        max: 10,
        shape: Shape {
            name: "m5.large".into(),
            cpu_millis: 2000,
            memory_mib: 4096,
            os: "linux".into(),
            arch: "x86_64".into(),
        },
        labels: vec!["linux".into(), "docker".into()],
        capacity_per_instance: 1,
        market: MarketPolicy {
            on_demand_base: 0,
            spot_percent: 0,
            spot_fallback_for: Duration::from_secs(600),
        },
        idle_timeout: Duration::from_secs(60),
        max_uses: None,
        boot_timeout: Duration::from_secs(300),
        boot_estimate: Duration::from_secs(30),
        preference: 100,
        scaling: ScalingPolicy {
            scale_up_cooldown: Duration::ZERO,
            scale_down_cooldown: Duration::ZERO,
            down_stabilization: Duration::ZERO,
        },
        billing: Billing::PerSecond {
            minimum: Duration::ZERO,
        },
        prewarm: None,
        headroom: HeadroomPolicy::Off,
        on_demand_price: PricePerHour(Micros(96_000)),
    }
}

/// A static pool of `warm` pre-warmed workers.
pub fn static_pool(name: &str, warm: u32) -> PoolConfig {
    PoolConfig {
        kind: PoolKind::Static { warm },
        max: warm,
        preference: 0,
        on_demand_price: PricePerHour::ZERO,
        ..dynamic_pool(name)
    }
}

/// An unlimited tenant of weight 1.
pub fn tenant(name: &str) -> TenantConfig {
    TenantConfig {
        name: name.to_string(),
        weight: 1,
        quota: TenantQuota::default(),
        burst: None,
    }
}

/// Default classes, one tenant `acme`, one dynamic pool `cloud`.
pub fn config() -> EngineConfig {
    EngineConfig {
        classes: ClassConfig::defaults(),
        tenants: vec![tenant("acme")],
        pools: vec![dynamic_pool("cloud")],
        heartbeat_timeout: Duration::from_secs(30),
        assignment_timeout: Duration::from_secs(60),
        max_cost_per_hour: None,
        default_job_duration: Duration::from_secs(600),
        scaling_mode: ScalingMode::Planner,
    }
}

/// [`config`] plus a static pool `metal` of 2 warm workers.
pub fn config_with_static_pool() -> EngineConfig {
    let mut c = config();
    c.pools.push(static_pool("metal", 2));
    c
}

/// A plain job: tenant 0 unless given, class rank `class`, no labels.
pub fn job(id: u64, tenant: u32, class: u8) -> JobSpec {
    JobSpec {
        id: JobId(id),
        tenant: TenantId(tenant),
        class: ClassId(class),
        requirements: Requirements::default(),
        max_attempts: 3,
        attempts: 0,
        expected_duration: None,
        submitted_at: None,
    }
}

/// An engine plus a perfectly obedient fleet: launches succeed and register
/// after `boot`, drains are acknowledged at once, terminations confirmed.
/// Every command is kept in `log` so tests can assert on it.
pub struct Harness {
    /// The engine under test.
    pub engine: Engine,
    /// Virtual now.
    pub now: Timestamp,
    /// Every command the engine emitted, in order.
    pub log: Vec<Command>,
    /// Boot time the fake provider takes.
    pub boot: Duration,
    /// Whether the fake fleet answers commands by itself.
    pub obedient: bool,
    /// Whether an obedient fleet's agents confirm each assignment at once
    /// (`JobStarted`), as real agents do.
    pub confirms_starts: bool,
    booting: BTreeMap<WorkerId, Timestamp>,
    next_instance: u64,
}

impl Harness {
    /// A harness over `config` at t = 1,000,000 s.
    pub fn new(config: EngineConfig) -> Harness {
        let now = Timestamp::from_secs(1_000_000);
        let engine = Engine::new(config, now).expect("valid test config");
        Harness {
            engine,
            now,
            log: Vec::new(),
            boot: Duration::from_secs(30),
            obedient: true,
            confirms_starts: true,
            booting: BTreeMap::new(),
            next_instance: 1,
        }
    }

    /// Applies an event now; panics on an engine error (tests expect none)
    /// and returns the commands it produced.
    pub fn send(&mut self, event: Event) -> Vec<Command> {
        let cmds = self
            .engine
            .handle(event.clone(), self.now)
            .unwrap_or_else(|e| panic!("{event:?}: {e}"));
        self.log.extend(cmds.iter().cloned());
        if let Err(e) = self.engine.check_invariants() {
            panic!("invariant broken after {event:?}: {e}");
        }
        if self.obedient {
            self.obey(&cmds);
        }
        cmds
    }

    /// Submits a job.
    pub fn submit(&mut self, spec: JobSpec) -> Vec<Command> {
        self.send(Event::JobSubmitted(spec))
    }

    /// Finishes a job successfully on the worker holding it.
    pub fn finish(&mut self, job: JobId, outcome: JobOutcome) -> Vec<Command> {
        let worker = self
            .engine
            .job_state(job)
            .and_then(|s| s.worker())
            .expect("job is on a worker");
        self.send(Event::JobFinished {
            job,
            worker,
            outcome,
        })
    }

    /// Moves time forward in ticks of `step`, registering booted workers.
    pub fn run_for(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            self.now = (self.now + step).min(end);
            let ready: Vec<WorkerId> = self
                .booting
                .iter()
                .filter(|(_, t)| **t <= self.now)
                .map(|(w, _)| *w)
                .collect();
            for w in ready {
                self.booting.remove(&w);
                if self.engine.worker_state(w) == Some(crate::worker::WorkerState::Booting) {
                    self.send(Event::WorkerRegistered { worker: w });
                }
            }
            let workers: Vec<WorkerId> = self.engine.live_workers().collect();
            for w in workers {
                if self.obedient
                    && self.engine.worker_state(w).is_some_and(|s| {
                        matches!(
                            s,
                            crate::worker::WorkerState::Idle
                                | crate::worker::WorkerState::Busy
                                | crate::worker::WorkerState::Draining
                        )
                    })
                {
                    let _ = self.engine.handle(Event::Heartbeat { worker: w }, self.now);
                }
            }
            self.send(Event::Tick);
        }
    }

    fn obey(&mut self, cmds: &[Command]) {
        for c in cmds {
            match c {
                Command::Launch { workers, .. } => {
                    for w in workers {
                        let instance = InstanceId(format!("i-{:04}", self.next_instance));
                        self.next_instance += 1;
                        self.send(Event::InstanceLaunched {
                            worker: *w,
                            instance,
                            zone: Some("zone-a".into()),
                        });
                        self.booting.insert(*w, self.now + self.boot);
                    }
                }
                Command::Drain { worker, .. } => {
                    self.send(Event::DrainAcknowledged { worker: *worker });
                }
                Command::Assign { job, worker, .. }
                    if self.confirms_starts
                        && self.engine.job_state(*job).and_then(|st| st.worker())
                            == Some(*worker) =>
                {
                    self.send(Event::JobStarted {
                        job: *job,
                        worker: *worker,
                    });
                }
                Command::Terminate { worker, .. } => {
                    self.send(Event::InstanceTerminated { worker: *worker });
                }
                _ => {}
            }
        }
    }

    /// Commands of one kind from the log.
    pub fn logged<'a, T>(
        &'a self,
        f: impl Fn(&'a Command) -> Option<T> + 'a,
    ) -> impl Iterator<Item = T> + 'a {
        self.log.iter().filter_map(f)
    }
}
