//! What a run measured, and how it is shown.

use std::collections::HashMap;
use std::time::Duration;

use ebbtide_core::{
    ClassId, Engine, InstanceLifetime, JobId, JobOutcome, Market, PricePerHour, Stats, Timestamp,
};
use serde::Serialize;

/// Per-class queue waits and SLA attainment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    /// Class name.
    pub class: String,
    /// SLA wait target, seconds.
    pub target_s: u64,
    /// Jobs of the class.
    pub jobs: u64,
    /// Queue wait percentiles, seconds (to first start).
    pub wait_p50_s: f64,
    /// 95th percentile wait.
    pub wait_p95_s: f64,
    /// 99th percentile wait.
    pub wait_p99_s: f64,
    /// Share of jobs that started within the target (never-started count
    /// as misses).
    pub sla_attainment: f64,
}

/// A run's cost by what it bought (micro-dollars).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CostBreakdown {
    /// Instance time with jobs on it.
    pub running_micros: i64,
    /// Instance time before the agent registered.
    pub boot_micros: i64,
    /// Registered instance time with free slots, and minimum charges.
    pub idle_micros: i64,
    /// On-demand instances' cost above the cheapest spot price.
    pub on_demand_premium_micros: i64,
}

/// One point of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: u64,
    /// Jobs waiting.
    pub queued: u64,
    /// Instances requested or booting.
    pub booting: u64,
    /// Registered instances with no job.
    pub idle: u64,
    /// Instances running jobs.
    pub busy: u64,
    /// Instances draining or terminating.
    pub retiring: u64,
    /// Cost accrued so far, micro-dollars.
    pub cost_micros: i64,
}

/// Everything one policy's run produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// Policy label.
    pub policy: String,
    /// Jobs in the trace.
    pub jobs: u64,
    /// Per class.
    pub classes: Vec<ClassReport>,
    /// Total cost, micro-dollars.
    pub cost_micros: i64,
    /// Spent on spot instances.
    pub cost_spot_micros: i64,
    /// Spent on on-demand instances.
    pub cost_on_demand_micros: i64,
    /// Where the money went, adding up to `cost_micros`: instance time
    /// running jobs, booting, and idle (with the rest of a minimum charge),
    /// each valued at spot, plus what on-demand cost above the cheapest spot
    /// for the same time.
    pub breakdown: CostBreakdown,
    /// Cost per job, micro-dollars.
    pub cost_per_job_micros: i64,
    /// Registered instance-hours with no job (waste).
    pub idle_worker_hours: f64,
    /// Instance-hours spent booting.
    pub boot_worker_hours: f64,
    /// Most instances at once.
    pub peak_fleet: u64,
    /// Mean instances over the run.
    pub mean_fleet: f64,
    /// Instances asked for.
    pub launches: u64,
    /// Instances terminated.
    pub terminations: u64,
    /// Launch requests that failed (capacity, throttling).
    pub launch_failures: u64,
    /// Spot instances reclaimed.
    pub reclaimed_instances: u64,
    /// Job attempts re-run after a reclamation or loss.
    pub reruns: u64,
    /// Scale decisions recorded.
    pub scale_decisions: u64,
    /// Events the engine refused as stale (should be 0).
    pub stale_events: u64,
    /// Jobs that never completed.
    pub unfinished: u64,
    /// Virtual duration of the run, hours.
    pub hours: f64,
    /// Sampled timeline (for charts; left out of JSON reports, whose size
    /// it would dominate).
    #[serde(skip)]
    pub timeline: Vec<Sample>,
}

impl RunReport {
    /// Lowest SLA attainment over the classes.
    pub fn min_attainment(&self) -> f64 {
        self.classes
            .iter()
            .map(|c| c.sla_attainment)
            .fold(1.0, f64::min)
    }
}

struct JobRecord {
    class: ClassId,
    arrived: Timestamp,
    started: Option<Timestamp>,
    done: bool,
}

/// Accumulates measurements during a run.
pub(crate) struct Collector {
    policy: String,
    targets: Vec<(String, Duration)>,
    jobs: HashMap<JobId, JobRecord>,
    total: usize,
    finished: usize,
    start: Timestamp,
    cost_spot: i64,
    cost_od: i64,
    breakdown: CostBreakdown,
    /// When each live instance's agent registered (ends its boot).
    registered: HashMap<ebbtide_core::WorkerId, Timestamp>,
    cheapest_spot: Option<PricePerHour>,
    min_billing: Duration,
    idle_ms: u128,
    boot_ms: u128,
    fleet_ms: u128,
    ticks_ms: u128,
    peak: u64,
    pub reclaimed: u64,
    pub reruns: u64,
    pub launch_failures: u64,
    pub decisions: u64,
    pub stale_events: u64,
    timeline: Vec<Sample>,
}

impl Collector {
    pub fn new(
        policy: String,
        targets: Vec<(String, Duration)>,
        total: usize,
        start: Timestamp,
        cheapest_spot: Option<PricePerHour>,
        min_billing: Duration,
    ) -> Self {
        Collector {
            policy,
            targets,
            jobs: HashMap::with_capacity(total),
            total,
            finished: 0,
            start,
            cost_spot: 0,
            cost_od: 0,
            breakdown: CostBreakdown::default(),
            registered: HashMap::new(),
            cheapest_spot,
            min_billing,
            idle_ms: 0,
            boot_ms: 0,
            fleet_ms: 0,
            ticks_ms: 0,
            peak: 0,
            reclaimed: 0,
            reruns: 0,
            launch_failures: 0,
            decisions: 0,
            stale_events: 0,
            timeline: Vec::new(),
        }
    }

    pub fn finished_jobs(&self) -> usize {
        self.finished
    }

    pub fn arrived(&mut self, job: JobId, class: ClassId, at: Timestamp) {
        self.jobs.insert(
            job,
            JobRecord {
                class,
                arrived: at,
                started: None,
                done: false,
            },
        );
    }

    pub fn started(&mut self, job: JobId, at: Timestamp) {
        if let Some(r) = self.jobs.get_mut(&job)
            && r.started.is_none()
        {
            r.started = Some(at);
        }
    }

    pub fn completed(&mut self, job: JobId, _outcome: JobOutcome) {
        if let Some(r) = self.jobs.get_mut(&job)
            && !r.done
        {
            r.done = true;
            self.finished += 1;
        }
    }

    pub fn registered(&mut self, worker: ebbtide_core::WorkerId, at: Timestamp) {
        self.registered.insert(worker, at);
    }

    pub fn instance_cost(&mut self, l: &InstanceLifetime) {
        match l.market {
            Market::Spot => self.cost_spot += l.cost.0,
            Market::OnDemand => self.cost_od += l.cost.0,
        }
        let registered = self.registered.remove(&l.worker);
        let Some(launched) = l.launched_at else {
            return;
        };
        let cost = l.cost.0;
        if cost <= 0 {
            return;
        }
        let life = l.ended_at.saturating_since(launched);
        let billed = life.max(self.min_billing).as_millis().max(1) as i64;
        let boot = registered
            .map_or(life, |r| r.saturating_since(launched))
            .as_millis() as i64;
        let premium = match (l.market, self.cheapest_spot) {
            (Market::OnDemand, Some(spot)) => {
                let at_spot = spot.cost_for(life.max(self.min_billing)).to_micros().0;
                (cost - at_spot).max(0)
            }
            _ => 0,
        };
        let base = cost - premium;
        let scale = |part: i64, whole: i64| -> i64 {
            i64::try_from(i128::from(base) * i128::from(part) / i128::from(whole.max(1)))
                .unwrap_or(0)
        };
        let boot_part = scale(boot.min(billed), billed);
        let running = scale((cost - l.idle_cost.0).max(0), cost);
        let b = &mut self.breakdown;
        b.on_demand_premium_micros += premium;
        b.boot_micros += boot_part;
        b.running_micros += running;
        b.idle_micros += (base - boot_part - running).max(0);
    }

    fn counts(engine: &Engine) -> (u64, u64, u64, u64) {
        let (mut booting, mut idle, mut busy, mut retiring) = (0, 0, 0, 0);
        for p in 0..engine.config().pools.len() {
            if let Some(s) = engine.pool_status(ebbtide_core::PoolId(p as u32)) {
                booting += u64::from(s.requested + s.booting);
                idle += u64::from(s.idle);
                busy += u64::from(s.busy);
                retiring += u64::from(s.draining + s.terminating + s.lost);
            }
        }
        (booting, idle, busy, retiring)
    }

    pub fn tick(&mut self, engine: &Engine, tick: Duration) {
        let (booting, idle, busy, retiring) = Self::counts(engine);
        let ms = tick.as_millis();
        let fleet = booting + idle + busy + retiring;
        self.idle_ms += u128::from(idle) * ms;
        self.boot_ms += u128::from(booting) * ms;
        self.fleet_ms += u128::from(fleet) * ms;
        self.ticks_ms += ms;
        self.peak = self.peak.max(fleet);
    }

    pub fn sample(&mut self, engine: &mut Engine, at: Timestamp) {
        engine.accrue_all(at);
        let (booting, idle, busy, retiring) = Self::counts(engine);
        self.timeline.push(Sample {
            t_s: at.saturating_since(self.start).as_secs(),
            queued: engine.queued_jobs() as u64,
            booting,
            idle,
            busy,
            retiring,
            cost_micros: engine.costs().fleet.to_micros().0,
        });
    }

    pub fn finish(self, stats: Stats, end: Timestamp) -> RunReport {
        let mut classes = Vec::new();
        for (i, (name, target)) in self.targets.iter().enumerate() {
            let mut waits: Vec<u64> = Vec::new();
            let mut met = 0u64;
            let mut n = 0u64;
            for r in self.jobs.values().filter(|r| usize::from(r.class.0) == i) {
                n += 1;
                match r.started {
                    Some(s) => {
                        let w = s.saturating_since(r.arrived);
                        waits.push(w.as_millis() as u64);
                        if w <= *target {
                            met += 1;
                        }
                    }
                    None => waits.push(end.saturating_since(r.arrived).as_millis() as u64),
                }
            }
            if n == 0 {
                continue;
            }
            waits.sort_unstable();
            let pct = |p: f64| -> f64 {
                let idx = ((waits.len() as f64 - 1.0) * p).round() as usize;
                waits[idx.min(waits.len() - 1)] as f64 / 1000.0
            };
            classes.push(ClassReport {
                class: name.clone(),
                target_s: target.as_secs(),
                jobs: n,
                wait_p50_s: pct(0.50),
                wait_p95_s: pct(0.95),
                wait_p99_s: pct(0.99),
                sla_attainment: met as f64 / n as f64,
            });
        }
        let cost = self.cost_spot + self.cost_od;
        let hours = |ms: u128| ms as f64 / 3_600_000.0;
        RunReport {
            policy: self.policy,
            jobs: self.total as u64,
            classes,
            cost_micros: cost,
            cost_spot_micros: self.cost_spot,
            cost_on_demand_micros: self.cost_od,
            breakdown: self.breakdown,
            cost_per_job_micros: cost / (self.total.max(1) as i64),
            idle_worker_hours: hours(self.idle_ms),
            boot_worker_hours: hours(self.boot_ms),
            peak_fleet: self.peak,
            mean_fleet: if self.ticks_ms == 0 {
                0.0
            } else {
                self.fleet_ms as f64 / self.ticks_ms as f64
            },
            launches: stats.launched,
            terminations: stats.terminated,
            launch_failures: self.launch_failures,
            reclaimed_instances: self.reclaimed,
            reruns: self.reruns,
            scale_decisions: self.decisions,
            stale_events: self.stale_events,
            unfinished: (self.total - self.finished) as u64,
            hours: hours(u128::from(
                end.saturating_since(self.start).as_millis() as u64
            )),
            timeline: self.timeline,
        }
    }
}

/// Dollars with two decimals, for tables.
pub fn dollars(micros: i64) -> String {
    format!("${:.2}", ebbtide_core::Micros(micros).as_dollars())
}

/// The comparison as a fixed-width table.
pub fn table(reports: &[RunReport], oracle_micros: Option<i64>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let classes: Vec<String> = reports
        .first()
        .map(|r| r.classes.iter().map(|c| c.class.clone()).collect())
        .unwrap_or_default();
    let _ = write!(out, "{:<34}", "policy");
    for c in &classes {
        let _ = write!(
            out,
            " {:>9} {:>19}",
            format!("{c} SLA"),
            format!("{c} wait p50/95/99")
        );
    }
    let _ = writeln!(
        out,
        " {:>11} {:>7} {:>10} {:>9} {:>8} {:>6} {:>6} {:>8} {:>6}",
        "cost", "×oracle", "spot/od %", "$/1k job", "idle h", "peak", "mean", "launches", "reruns"
    );
    for r in reports {
        let _ = write!(out, "{:<34}", r.policy);
        for c in &r.classes {
            let _ = write!(
                out,
                " {:>8.2}% {:>19}",
                c.sla_attainment * 100.0,
                format!(
                    "{:.0}/{:.0}/{:.0}s",
                    c.wait_p50_s, c.wait_p95_s, c.wait_p99_s
                )
            );
        }
        let ratio = oracle_micros
            .filter(|o| *o > 0)
            .map_or("-".to_string(), |o| {
                format!("{:.2}", r.cost_micros as f64 / o as f64)
            });
        let spot_share = if r.cost_micros > 0 {
            r.cost_spot_micros * 100 / r.cost_micros
        } else {
            0
        };
        let _ = writeln!(
            out,
            " {:>11} {:>7} {:>10} {:>9} {:>8.0} {:>6} {:>6.1} {:>8} {:>6}",
            dollars(r.cost_micros),
            ratio,
            format!("{spot_share}/{}", 100 - spot_share),
            dollars(r.cost_per_job_micros * 1000),
            r.idle_worker_hours,
            r.peak_fleet,
            r.mean_fleet,
            r.launches,
            r.reruns
        );
    }
    out
}
