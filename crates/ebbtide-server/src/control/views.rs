//! What `GET /v1/status` shows: the fleet as an operator sees it (pools,
//! workers, running jobs, the queue against its targets, recent decisions
//! with their reasons, what it costs), and the slice a tenant may see (its
//! own queue and jobs). Built from the engine's state and the job book at
//! one instant; nothing here decides anything.

use std::collections::VecDeque;

use super::*;

/// Decisions kept for the status view: enough for the last minutes of a
/// busy fleet; the log and the metrics keep the rest.
const RECENT_DECISIONS: usize = 100;

/// The fleet, for operators.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StatusReport {
    /// When it was taken (ms since the Unix epoch).
    pub at_ms: u64,
    /// Jobs waiting.
    pub queued: usize,
    /// Jobs assigned to or running on a worker.
    pub on_workers: usize,
    /// Each pool's counts, in configuration order.
    pub pools: Vec<PoolReport>,
    /// Every worker the engine keeps, in id order.
    pub workers: Vec<WorkerReport>,
    /// Jobs on workers, in id order.
    pub running: Vec<RunningJobReport>,
    /// The queue by class and tenant, longest wait first.
    pub queue: Vec<QueueReport>,
    /// The latest scaling decisions, newest first.
    pub decisions: Vec<DecisionReport>,
    /// What the fleet costs.
    pub cost: CostReport,
    /// Owned machines (bare-metal hosts) and whether they take workers.
    #[serde(default)]
    pub hosts: Vec<HostStatus>,
}

/// One owned machine, as its provider's last reconcile pass saw it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct HostStatus {
    /// The provider that owns it.
    pub provider: String,
    /// Its inventory name.
    pub name: String,
    /// `ready`, `quarantined`, `powered_off` or `powering_on`.
    pub state: String,
    /// Why it is quarantined or powered off.
    pub reason: Option<String>,
    /// Our workers on it.
    pub workers: u32,
    /// Workers it runs at once.
    pub slots: u32,
    /// Its last measured boot, seconds.
    pub last_boot_s: Option<f64>,
}

/// One pool's state.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PoolReport {
    /// The pool's configured name.
    pub name: String,
    /// Its provider.
    pub provider: String,
    /// Instances the scaler wants now.
    pub desired: u32,
    /// Most instances it may have.
    pub max: u32,
    /// Asked of the provider, not yet created.
    pub requested: u32,
    /// Created, agent not yet registered.
    pub booting: u32,
    /// Registered with no job.
    pub idle: u32,
    /// Running at least one job.
    pub busy: u32,
    /// Draining or terminating.
    pub retiring: u32,
    /// Free job slots now.
    pub free_slots: u32,
    /// The boot time the planner counts on (learned).
    pub boot_estimate_s: f64,
}

/// One worker.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct WorkerReport {
    /// Its id.
    pub id: u64,
    /// Its pool.
    pub pool: String,
    /// `spot` or `on-demand`.
    pub market: String,
    /// Its zone, once known.
    pub zone: Option<String>,
    /// The provider's instance id, once launched.
    pub instance: Option<String>,
    /// `requested`, `booting`, `idle`, `busy`, `draining`, …
    pub state: String,
    /// Why it drains, when it does.
    pub draining_because: Option<String>,
    /// Jobs holding its slots.
    pub jobs: Vec<u64>,
    /// Seconds since its instance came up.
    pub up_s: Option<u64>,
    /// Jobs it was given over its life.
    pub jobs_served: u32,
    /// Spent on it so far, in US dollars.
    pub cost_usd: f64,
    /// What it costs per hour, in US dollars.
    pub rate_per_hour_usd: f64,
}

/// A job on a worker.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RunningJobReport {
    /// The job.
    pub id: u64,
    /// Whose.
    pub tenant: String,
    /// Its class.
    pub class: String,
    /// Where.
    pub worker: u64,
    /// Which attempt.
    pub attempt: u32,
    /// `assigned` (not yet confirmed started) or `running`.
    pub state: String,
    /// Seconds in that state.
    pub for_s: u64,
}

/// Waiting jobs of one class and tenant.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct QueueReport {
    /// The class.
    pub class: String,
    /// The tenant.
    pub tenant: String,
    /// Jobs waiting.
    pub queued: usize,
    /// How long the oldest has waited, in milliseconds.
    pub oldest_wait_ms: u64,
    /// The class's wait target, in seconds.
    pub sla_target_s: f64,
    /// Whether the oldest already waited past the target.
    pub over_target: bool,
}

/// A decision the scaler made, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DecisionReport {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The pool it was for.
    pub pool: String,
    /// `scale`, `launch`, `launch_failed`, `spot_awaited`, `drain`, `lost`.
    pub kind: String,
    /// What was decided and why, as the log says it.
    pub summary: String,
}

/// What the fleet costs.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CostReport {
    /// Every launched instance's price, per hour, in US dollars.
    pub rate_per_hour_usd: f64,
    /// Spent since this scheduler started, in US dollars.
    pub since_start_usd: f64,
    /// Spent today (UTC) as the cost ledger has booked it, in US dollars
    /// (the ledger books every `cost_reports.ledger_flush`); filled by the
    /// API from the store.
    pub today_usd: Option<f64>,
}

/// What a tenant's key sees of the status: its own queue and jobs.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TenantStatus {
    /// When it was taken (ms since the Unix epoch).
    pub at_ms: u64,
    /// The tenant.
    pub tenant: String,
    /// Its jobs waiting.
    pub queued: usize,
    /// Its jobs on workers.
    pub on_workers: usize,
    /// Its queue by class.
    pub queue: Vec<QueueReport>,
    /// Its jobs on workers.
    pub running: Vec<RunningJobReport>,
}

impl TenantStatus {
    /// The slice of `fleet` that belongs to `tenant`.
    pub fn of(fleet: &StatusReport, tenant: &str) -> TenantStatus {
        let queue: Vec<QueueReport> = fleet
            .queue
            .iter()
            .filter(|q| q.tenant == tenant)
            .cloned()
            .collect();
        let running: Vec<RunningJobReport> = fleet
            .running
            .iter()
            .filter(|r| r.tenant == tenant)
            .cloned()
            .collect();
        TenantStatus {
            at_ms: fleet.at_ms,
            tenant: tenant.to_string(),
            queued: queue.iter().map(|q| q.queued).sum(),
            on_workers: running.len(),
            queue,
            running,
        }
    }
}

/// The latest decisions, bounded.
#[derive(Debug, Default)]
pub(super) struct RecentDecisions {
    items: VecDeque<DecisionReport>,
}

impl RecentDecisions {
    pub(super) fn push(&mut self, at: Timestamp, pool: &str, kind: &'static str, summary: String) {
        if self.items.len() == RECENT_DECISIONS {
            self.items.pop_front();
        }
        self.items.push_back(DecisionReport {
            at_ms: at.as_millis(),
            pool: pool.to_string(),
            kind: kind.to_string(),
            summary,
        });
    }

    fn newest_first(&self) -> Vec<DecisionReport> {
        self.items.iter().rev().cloned().collect()
    }
}

impl Control {
    /// Remembers a decision for the status view.
    pub(super) fn remember(&mut self, pool: PoolId, kind: &'static str, summary: String) {
        let name = self
            .engine
            .config()
            .pools
            .get(pool.0 as usize)
            .map_or("", |p| p.name.as_str());
        self.decisions.push(self.now, name, kind, summary);
    }

    /// The fleet now.
    pub(super) fn status_report(&self) -> StatusReport {
        let config = self.engine.config();
        let pool_name = |p: PoolId| {
            config
                .pools
                .get(p.0 as usize)
                .map_or_else(String::new, |c| c.name.clone())
        };
        let pools = config
            .pools
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let s = self.engine.pool_status(PoolId(i as u32))?;
                Some(PoolReport {
                    name: p.name.clone(),
                    provider: p.provider.clone(),
                    desired: s.desired,
                    max: p.max,
                    requested: s.requested,
                    booting: s.booting,
                    idle: s.idle,
                    busy: s.busy,
                    retiring: s.draining + s.terminating + s.lost,
                    free_slots: s.free_slots,
                    boot_estimate_s: s.boot_estimate.as_secs_f64(),
                })
            })
            .collect();
        let views = self.engine.worker_views(self.now);
        let mut running = Vec::new();
        for v in &views {
            for job in &v.jobs {
                let (state, since) = match self.engine.job_state(*job) {
                    Some(JobState::Assigned { at, .. }) => ("assigned", at),
                    Some(JobState::Running { since, .. }) => ("running", since),
                    _ => continue,
                };
                let info = self.jobs.get(job);
                running.push(RunningJobReport {
                    id: job.0,
                    tenant: info.map_or_else(String::new, |i| i.tenant.clone()),
                    class: info.map_or_else(String::new, |i| i.class.clone()),
                    worker: v.id.0,
                    attempt: self.engine.job_attempts(*job).unwrap_or(0),
                    state: state.to_string(),
                    for_s: self.now.saturating_since(since).as_secs(),
                });
            }
        }
        running.sort_by_key(|r| r.id);
        let workers = views
            .iter()
            .map(|v| WorkerReport {
                id: v.id.0,
                pool: pool_name(v.pool),
                market: v.market.name().to_string(),
                zone: v.zone.clone(),
                instance: v.instance.as_ref().map(|i| i.0.clone()),
                state: v.state.name().to_string(),
                draining_because: v.drain.map(|d| d.name().to_string()),
                jobs: v.jobs.iter().map(|j| j.0).collect(),
                up_s: v
                    .launched_at
                    .map(|t| self.now.saturating_since(t).as_secs()),
                jobs_served: v.jobs_served,
                cost_usd: v.cost.as_dollars(),
                rate_per_hour_usd: v.rate.0.as_dollars(),
            })
            .collect();
        let mut queue: Vec<QueueReport> = self
            .engine
            .queue_stats()
            .into_iter()
            .filter_map(|q| {
                let class = config.classes.get(usize::from(q.class.0))?;
                let tenant = config.tenants.get(q.tenant.0 as usize)?;
                let wait = q
                    .oldest
                    .map_or(std::time::Duration::ZERO, |o| self.now.saturating_since(o));
                Some(QueueReport {
                    class: class.name.clone(),
                    tenant: tenant.name.clone(),
                    queued: q.depth,
                    oldest_wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    sla_target_s: class.sla_target.as_secs_f64(),
                    over_target: wait > class.sla_target,
                })
            })
            .collect();
        queue.sort_by_key(|q| std::cmp::Reverse(q.oldest_wait_ms));
        let rate: i64 = self.engine.cost_rates().iter().map(|(_, _, r)| r.0.0).sum();
        StatusReport {
            at_ms: self.now.as_millis(),
            queued: self.engine.queued_jobs(),
            on_workers: self.engine.live_jobs() - self.engine.queued_jobs(),
            pools,
            workers,
            running,
            queue,
            decisions: self.decisions.newest_first(),
            hosts: self
                .hosts
                .iter()
                .flat_map(|(provider, hosts)| {
                    hosts.iter().map(move |h| HostStatus {
                        provider: provider.clone(),
                        name: h.name.clone(),
                        state: h.state.name().to_string(),
                        reason: h.reason.clone(),
                        workers: h.workers,
                        slots: h.slots,
                        last_boot_s: h.last_boot.map(|d| d.as_secs_f64()),
                    })
                })
                .collect(),
            cost: CostReport {
                rate_per_hour_usd: ebbtide_core::Micros(rate).as_dollars(),
                since_start_usd: self.engine.costs().fleet.to_micros().as_dollars(),
                today_usd: None,
            },
        }
    }
}

/// `GET /v1/jobs/ID/explain`: why a live job is where it is.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ExplainReport {
    /// The job.
    pub id: u64,
    /// Whose.
    pub tenant: String,
    /// Its class.
    pub class: String,
    /// `queued`, `assigned` or `running`.
    pub state: String,
    /// The worker holding it, once placed.
    pub worker: Option<u64>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Since submission, in milliseconds.
    pub waited_ms: u64,
    /// Its class's wait target, in seconds.
    pub sla_target_s: f64,
    /// What a worker must offer.
    pub cpu_millis: u32,
    /// What a worker must offer.
    pub memory_mib: u32,
    /// Labels a worker must have.
    pub labels: Vec<String>,
    /// Queued jobs of its class submitted before it.
    pub ahead_in_class: usize,
    /// Pools that can run it, in the order dispatch tries them.
    pub pools: Vec<PoolChoiceReport>,
    /// What keeps it waiting, most decisive first.
    pub holdups: Vec<String>,
}

/// One pool that can run the job.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PoolChoiceReport {
    /// The pool.
    pub pool: String,
    /// Free job slots now.
    pub free_slots: u32,
    /// Instances the planner wants.
    pub desired: u32,
    /// Instances that exist (what counts against `max`).
    pub existing: u32,
    /// Its ceiling.
    pub max: u32,
    /// Asked for or booting.
    pub booting: u32,
    /// Seconds until the first booting instance should be ready.
    pub first_ready_in_s: Option<u64>,
    /// The planner's latest decision for it, with its reason (operators
    /// only: decisions speak of every tenant's demand).
    pub last_decision: Option<DecisionReport>,
}

impl ExplainReport {
    /// Without what only operators may read.
    pub fn for_tenant(mut self) -> ExplainReport {
        for p in &mut self.pools {
            p.last_decision = None;
        }
        self
    }
}

impl Control {
    /// Why `job` is where it is; `None` if the engine does not hold it.
    pub(super) fn explain(&self, job: JobId) -> Option<ExplainReport> {
        let e = self.engine.explain(job, self.now)?;
        let info = self.jobs.get(&job);
        let (state, worker) = match e.state {
            JobState::Queued => ("queued", None),
            JobState::Assigned { worker, .. } => ("assigned", Some(worker.0)),
            JobState::Running { worker, .. } => ("running", Some(worker.0)),
        };
        let pools = e
            .pools
            .iter()
            .map(|p| PoolChoiceReport {
                pool: p.pool.clone(),
                free_slots: p.free_slots,
                desired: p.desired,
                existing: p.existing,
                max: p.max,
                booting: p.booting,
                first_ready_in_s: p
                    .first_ready
                    .map(|t| t.saturating_since(self.now).as_secs()),
                last_decision: self
                    .decisions
                    .newest_first()
                    .into_iter()
                    .find(|d| d.pool == p.pool && d.kind == "scale"),
            })
            .collect();
        Some(ExplainReport {
            id: job.0,
            tenant: info.map_or_else(String::new, |i| i.tenant.clone()),
            class: info.map_or_else(String::new, |i| i.class.clone()),
            state: state.to_string(),
            worker,
            attempts: e.attempts,
            waited_ms: u64::try_from(e.waited.as_millis()).unwrap_or(u64::MAX),
            sla_target_s: e.target.as_secs_f64(),
            cpu_millis: e.needs.cpu_millis,
            memory_mib: e.needs.memory_mib,
            labels: e.needs.labels.clone(),
            ahead_in_class: e.ahead_in_class,
            pools,
            holdups: e.holdups.iter().map(ToString::to_string).collect(),
        })
    }
}
