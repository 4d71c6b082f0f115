//! The control loop: the only owner of the engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ebbtide_config::{ClusterConfig, ServerConfig};
use ebbtide_core::{
    Command, Engine, Event, JobId, JobOutcome, JobSpec, JobState, LaunchFailure, PoolId,
    Requirements, Timestamp, WorkerId,
};
use ebbtide_proto::worker::v1::scheduler_message::Kind as Down;
use ebbtide_proto::worker::v1::{Assignment, Cancel, Drain, SchedulerMessage};
use ebbtide_provider::{LaunchRequest, Provider, Secret, WorkerLaunch};
use ebbtide_store::{JobRecord, JobStatus, JobUpdate, Store};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::journal::{AfterCommit, Committed, Journal};
use crate::now;
use crate::tokens::random_token;

/// Sender half of a worker's Session stream.
/// Boxed: a channel reserves a block of 32 slots up front, so a small slot
/// keeps a thousand idle sessions from pinning megabytes.
pub type SessionSender = mpsc::Sender<Box<SchedulerMessage>>;

/// Everything the loop is told.
pub enum LoopMsg {
    /// A durable submission; the reply says whether the engine admitted it.
    Submit {
        /// The stored job.
        record: JobRecord,
        /// `Err(reason)` if refused.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A tenant cancels its job.
    Cancel {
        /// The job.
        job: u64,
    },
    /// An engine event from an adapter (worker API, provider task).
    Event(Event),
    /// An agent redeemed its bootstrap token; the reply says whether the
    /// engine accepts the registration.
    Register {
        /// The worker.
        worker: WorkerId,
        /// `Err(reason)` if refused.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Which provider a worker's pool uses and the instance launched for
    /// it (for the identity check at registration); `None` if unknown.
    Placement {
        /// The worker.
        worker: WorkerId,
        /// (provider name, instance id once launched).
        reply: oneshot::Sender<Option<(String, Option<String>)>>,
    },
    /// A Session stream opened.
    Connected {
        /// The worker.
        worker: WorkerId,
        /// Where to send it orders.
        sender: SessionSender,
        /// Jobs it says it is running.
        running: Vec<u64>,
        /// Results it holds that were never confirmed stored.
        results: Vec<ReportedResult>,
        /// `Err(reason)` if the worker is not (or no longer) wanted.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A Session stream closed.
    Disconnected {
        /// The worker.
        worker: WorkerId,
    },
    /// A job attempt ended on a worker.
    JobResult {
        /// The worker.
        worker: WorkerId,
        /// What it reported.
        result: ReportedResult,
    },
    /// A piece of a job's output, from the worker's session.
    Output {
        /// The worker whose session sent it.
        worker: WorkerId,
        /// The job it names.
        job: u64,
        /// The bytes.
        chunk: Vec<u8>,
    },
    /// Replace the engine configuration (SIGHUP).
    Reload {
        /// The new configuration.
        engine: Box<ebbtide_core::EngineConfig>,
        /// `Err(reason)` if refused; nothing changed then.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A provider's list, for the reconciler.
    Reconciled {
        /// The provider.
        provider: String,
        /// When the list call started.
        listed_at: Timestamp,
        /// What it returned.
        listed: Result<Vec<ebbtide_provider::InstanceInfo>, String>,
    },
    /// Terminate every instance (a stop with `server.on_stop =
    /// "terminate"`); answers how many once the providers confirmed.
    TerminateAll {
        /// The count.
        reply: oneshot::Sender<usize>,
    },
    /// Status for the API.
    Status {
        /// The answer.
        reply: oneshot::Sender<StatusReport>,
    },
}

/// A job result as an agent reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedResult {
    /// The job.
    pub job: u64,
    /// The attempt the agent ran (0 from an agent that does not say).
    pub attempt: u32,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
}

/// What `GET /v1/status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Jobs waiting.
    pub queued: usize,
    /// Jobs assigned to or running on a worker.
    pub on_workers: usize,
    /// Per pool.
    pub pools: Vec<PoolReport>,
}

/// One pool's state.
#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    /// Name.
    pub name: String,
    /// Desired instances.
    pub desired: u32,
    /// Instances by state.
    pub requested: u32,
    /// Booting.
    pub booting: u32,
    /// Idle.
    pub idle: u32,
    /// Busy.
    pub busy: u32,
    /// Draining or terminating.
    pub retiring: u32,
}

/// An instance that outlived the previous run of the scheduler, waiting for
/// its agent to reconnect so it can be adopted.
struct Survivor {
    pool: PoolId,
    instance: ebbtide_core::InstanceId,
    zone: Option<String>,
    market: ebbtide_core::Market,
    provider: String,
    /// Jobs the store placed on it when the scheduler stopped.
    jobs: Vec<JobRecord>,
    /// From when its cost is not in the durable ledger.
    accrue_from: Option<Timestamp>,
}

/// What the loop keeps of a live job beyond the engine's record: what an
/// assignment carries, labels for logs and metrics, and how much output
/// its log already holds (the cap is per job, over all attempts).
struct JobInfo {
    command: String,
    timeout_ms: u64,
    /// The engine's attempt count as of the last assignment (a mirror for
    /// log lines; the engine owns the counter).
    attempt: u32,
    tenant: String,
    class: String,
    submitted_at: Timestamp,
    output_bytes: u64,
    truncated: bool,
}

impl JobInfo {
    fn of(record: &JobRecord) -> JobInfo {
        JobInfo {
            command: record.command.clone(),
            timeout_ms: record.timeout_ms,
            attempt: record.attempts,
            tenant: record.tenant.clone(),
            class: record.class.clone(),
            submitted_at: Timestamp::from_millis(record.submitted_at_ms),
            output_bytes: 0,
            truncated: false,
        }
    }
}

/// An order a worker's session could not take yet (not open, or its queue
/// full); retried when the session opens and at each heartbeat.
#[derive(Debug, Clone)]
enum Undelivered {
    /// An assignment, rebuilt at delivery (and dropped if the job moved).
    Assignment { job: u64, attempt: u32 },
    /// A cancel or drain order.
    Order(Down),
}

pub(crate) struct Control {
    engine: Engine,
    store: Arc<dyn Store>,
    providers: HashMap<String, Arc<dyn Provider>>,
    tx: mpsc::Sender<LoopMsg>,
    journal: Journal,
    committed: Option<mpsc::Receiver<Committed>>,
    sessions: HashMap<WorkerId, SessionSender>,
    pending_register: BTreeMap<WorkerId, oneshot::Sender<Result<(), String>>>,
    /// Orders a worker's session could not take yet, in order; sent when it
    /// opens and retried at each heartbeat, so no assignment, cancel or
    /// drain is ever lost to a full queue or a reconnect.
    undelivered: HashMap<WorkerId, Vec<Undelivered>>,
    /// (worker, job) pairs already warned about for reporting on a job the
    /// worker does not hold (bounded: one line per pair, not per chunk).
    refused: std::collections::HashSet<(WorkerId, u64)>,
    jobs: HashMap<u64, JobInfo>,
    exit_codes: HashMap<u64, Option<i32>>,
    server: ServerConfig,
    /// Adopted workers whose agent has not reconnected yet, with the jobs
    /// they were given back. If the agent never comes, the engine's
    /// heartbeat timeout declares the worker lost and requeues them.
    awaiting_session: HashMap<WorkerId, Vec<u64>>,
    /// Largest output stored per job; beyond it a marker ends the log.
    max_output: u64,
    /// Jobs whose assignment is on its way to the disk: sent by their
    /// commit, never before.
    awaiting_commit: HashMap<u64, u32>,
    /// When each worker's launch was requested, until it registers.
    launch_requested: HashMap<WorkerId, Timestamp>,
    /// (class, tenant) queue series last exported, to zero emptied ones.
    queue_series: Vec<(String, String)>,
    last_refresh: Timestamp,
    /// When the loop learned each worker's instance (for the reconciler).
    launched_at: HashMap<WorkerId, Timestamp>,
    reconciler: crate::reconcile::Reconciler,
    ledger: crate::costs::LedgerWriter,
    ledger_flush: std::time::Duration,
}

impl Control {
    /// Builds the engine and rebuilds its queue from the store: every job
    /// that was not finished is queued again (its old attempt, if any, is
    /// stopped when its agent reconnects), and instances left from before
    /// are terminated.
    pub(crate) async fn new(
        config: &ClusterConfig,
        store: Arc<dyn Store>,
        providers: HashMap<String, Arc<dyn Provider>>,
        tx: mpsc::Sender<LoopMsg>,
    ) -> Result<Self, String> {
        let mut engine = Engine::new(config.engine.clone(), now()).map_err(|e| format!("{e:?}"))?;
        let high_water = store.max_worker_id().await.map_err(|e| e.to_string())?;
        engine.reserve_worker_ids(WorkerId(high_water));
        let (journal, committed) = Journal::start(store.clone());
        let mut survivors = HashMap::new();
        for (name, provider) in &providers {
            // Without the list, a job whose worker survived would look
            // abandoned and run a second time: recovery waits for it.
            let listed = list_for_recovery(name, provider.as_ref()).await?;
            let mut doomed = Vec::new();
            for info in listed {
                // A worker id above every id we issued a credential for was
                // never launched by this cluster's scheduler: not adopted;
                // the reconciler removes it as an orphan after its grace.
                if info.worker.0 > high_water {
                    tracing::warn!(provider = %name, instance = %info.instance.0, worker = info.worker.0, "instance carries a worker id this scheduler never issued; leaving it to the reconciler");
                    continue;
                }
                match engine.pool_id(&info.pool) {
                    Some(pool) if info.running => {
                        survivors.insert(
                            info.worker,
                            Survivor {
                                pool,
                                instance: info.instance,
                                zone: info.zone,
                                market: info.market,
                                provider: name.clone(),
                                jobs: Vec::new(),
                                accrue_from: None,
                            },
                        );
                    }
                    _ => doomed.push(info.instance),
                }
            }
            if !doomed.is_empty() {
                tracing::warn!(
                    provider = %name,
                    count = doomed.len(),
                    "terminating dead or unknown-pool instances left from a previous run"
                );
                if let Err(e) = provider.terminate(&doomed).await {
                    tracing::error!(provider = %name, error = %e, "could not terminate leftover instances");
                }
            }
        }
        let mut control = Control {
            engine,
            store: store.clone(),
            providers,
            tx,
            journal,
            committed: Some(committed),
            sessions: HashMap::new(),
            pending_register: BTreeMap::new(),
            undelivered: HashMap::new(),
            refused: Default::default(),
            jobs: HashMap::new(),
            exit_codes: HashMap::new(),
            server: config.server.clone(),
            awaiting_session: HashMap::new(),
            max_output: config.server.max_job_output,
            awaiting_commit: Default::default(),
            launched_at: HashMap::new(),
            reconciler: Default::default(),
            ledger: crate::costs::LedgerWriter::start(store.clone(), config),
            ledger_flush: config.cost_reports.ledger_flush,
            launch_requested: HashMap::new(),
            queue_series: Vec::new(),
            last_refresh: Timestamp::from_millis(0),
        };
        let live = store.live_jobs().await.map_err(|e| e.to_string())?;
        let recovered = live.len();
        let mut output_sizes = HashMap::new();
        for record in live.iter().filter(|r| r.status != JobStatus::Queued) {
            let size = store.log_size(record.id).await.map_err(|e| e.to_string())?;
            output_sizes.insert(record.id.0, size);
        }
        for record in live {
            let holder = record
                .worker
                .filter(|_| record.status != JobStatus::Queued)
                .map(|w| WorkerId(w.0));
            if let Some(w) = holder
                && let Some(survivor) = survivors.get_mut(&w)
            {
                survivor.jobs.push(record);
                continue;
            }
            control.requeue_recovered(record);
        }
        // Survivors are adopted before the first tick, so the planner counts
        // them and launches no duplicates for their pools. Each is charged
        // from where the durable ledger stops, so the time it ran while no
        // scheduler watched is booked too.
        for (worker, mut survivor) in survivors {
            match store.accrued_until(ebbtide_store::WorkerId(worker.0)).await {
                Ok(until) => survivor.accrue_from = until.map(Timestamp::from_millis),
                Err(e) => {
                    tracing::error!(worker = worker.0, error = %e, "cannot read the ledger mark; charging the adopted worker from now")
                }
            }
            control.adopt(worker, survivor);
        }
        for (job, size) in output_sizes {
            if let Some(info) = control.jobs.get_mut(&job) {
                info.output_bytes = size;
                info.truncated = size >= control.max_output;
            }
        }
        if recovered > 0 {
            tracing::info!(jobs = recovered, "recovered unfinished jobs from the store");
        }
        Ok(control)
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<LoopMsg>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.server.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut reconcile = tokio::time::interval(self.server.reconcile_interval);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut ledger = tokio::time::interval(self.ledger_flush);
        ledger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let Some(mut committed) = self.committed.take() else {
            tracing::error!("control loop started twice");
            return;
        };
        loop {
            self.journal.flush();
            let accepting = !self.journal.is_full();
            tokio::select! {
                biased;
                done = committed.recv() => match done {
                    Some(c) => self.on_committed(c),
                    None => {
                        tracing::error!("journal writer stopped");
                        return;
                    }
                },
                _ = shutdown.changed() => {
                    // Everything decided is made durable before the loop
                    // ends, and the last cost lines written, so a clean stop
                    // loses neither a job's state nor any cost.
                    while !self.journal.is_idle() {
                        self.journal.flush();
                        match committed.recv().await {
                            Some(c) => self.on_committed(c),
                            None => break,
                        }
                    }
                    let at = now();
                    let lines = self.ledger.take(&mut self.engine, at);
                    if let Err(e) = self.store.record_costs_until(lines, Some(at.as_millis())).await {
                        tracing::error!(error = %e, "cost ledger lines lost at shutdown");
                    }
                    return;
                }
                _ = ledger.tick() => self.ledger.flush(&mut self.engine, now()),
                _ = reconcile.tick() => self.start_reconcile(),
                _ = tick.tick() => {
                    if !self.awaiting_session.is_empty() {
                        // Adopted workers the engine declared lost stop waiting.
                        let engine = &self.engine;
                        self.awaiting_session
                            .retain(|w, _| may_hold_session(engine.worker_state(*w)));
                    }
                    self.apply(Event::Tick);
                    if now().saturating_since(self.last_refresh) >= std::time::Duration::from_secs(1) {
                        self.refresh_metrics();
                    }
                }
                msg = rx.recv(), if accepting => match msg {
                    Some(m) => self.on_msg(m),
                    None => return,
                },
            }
        }
    }

    /// Puts a job recovered from the store back in the queue, keeping its
    /// submission time (SLA clock, FIFO place) and attempt count.
    fn requeue_recovered(&mut self, record: JobRecord) {
        if record.status != JobStatus::Queued {
            self.write(
                record.id,
                JobUpdate::Requeued {
                    attempts: record.attempts,
                },
            );
        }
        let id = record.id.0;
        if let Err(reason) = self.submit(record) {
            tracing::warn!(job = id, %reason, "recovered job refused by the engine");
        }
    }

    /// Takes back a worker that outlived the previous run, with the jobs the
    /// store placed on it: they continue there. Its agent must reconnect
    /// within the heartbeat timeout, or the engine declares it lost, has it
    /// terminated and requeues the jobs.
    fn adopt(&mut self, worker: WorkerId, survivor: Survivor) {
        let mut specs = Vec::with_capacity(survivor.jobs.len());
        let mut refused = Vec::new();
        for record in &survivor.jobs {
            match self.job_spec(record) {
                Ok(spec) => {
                    specs.push(spec);
                    self.jobs.insert(record.id.0, JobInfo::of(record));
                }
                Err(reason) => {
                    self.reject_stored(record.id.0, reason);
                    refused.push(record.id.0);
                }
            }
        }
        // The agent may still run them: stop them there once it reconnects.
        for job in refused {
            self.keep_undelivered(
                worker,
                Undelivered::Order(Down::Cancel(Cancel { job_id: job })),
            );
        }
        let adoption = ebbtide_core::Adoption {
            worker,
            pool: survivor.pool,
            instance: survivor.instance.clone(),
            zone: survivor.zone.clone(),
            market: survivor.market,
            running: specs,
            accrue_from: survivor.accrue_from,
        };
        match self.engine.handle(Event::WorkerAdopted(adoption), now()) {
            Ok(cmds) => {
                tracing::info!(
                    worker = worker.0,
                    instance = %survivor.instance.0,
                    jobs = survivor.jobs.len(),
                    "worker from before the restart adopted; waiting for its agent to reconnect"
                );
                self.awaiting_session
                    .insert(worker, survivor.jobs.iter().map(|r| r.id.0).collect());
                self.launched_at.insert(worker, now());
                for c in cmds {
                    self.execute(c);
                }
            }
            Err(e) => {
                tracing::warn!(worker = worker.0, error = %e, "surviving worker not adopted; terminating it");
                for record in &survivor.jobs {
                    self.jobs.remove(&record.id.0);
                }
                self.retire_survivor(survivor);
            }
        }
    }

    /// Terminates an instance the engine never knew in this run and puts
    /// its jobs back in the queue.
    fn retire_survivor(&mut self, survivor: Survivor) {
        if let Some(provider) = self.providers.get(&survivor.provider).cloned() {
            let instance = survivor.instance;
            tokio::spawn(async move {
                if let Err(e) = provider.terminate(std::slice::from_ref(&instance)).await {
                    tracing::error!(instance = %instance.0, error = %e, "terminate failed");
                }
            });
        }
        for record in survivor.jobs {
            self.requeue_recovered(record);
        }
    }

    /// Asks every provider for its instances and its offerings; the
    /// answers come back as messages, so a slow API never blocks the loop.
    fn start_reconcile(&self) {
        for (name, provider) in &self.providers {
            let (name, provider, tx) = (name.clone(), provider.clone(), self.tx.clone());
            tokio::spawn(async move {
                let listed_at = now();
                let listed = provider.list().await.map_err(|e| e.to_string());
                let _ = tx
                    .send(LoopMsg::Reconciled {
                        provider: name,
                        listed_at,
                        listed,
                    })
                    .await;
                match provider.offerings().await {
                    Ok(offerings) => {
                        for o in offerings.into_iter().filter(|o| o.available) {
                            let _ = tx
                                .send(LoopMsg::Event(Event::PriceUpdate {
                                    shape: o.shape,
                                    market: o.market,
                                    zone: o.zone,
                                    price: o.price,
                                }))
                                .await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(provider = provider.name(), error = %e, "cannot read offerings")
                    }
                }
            });
        }
    }

    fn finish_reconcile(
        &mut self,
        provider: &str,
        listed_at: Timestamp,
        listed: Result<Vec<ebbtide_provider::InstanceInfo>, String>,
    ) {
        let instances = match listed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(provider, error = %e, "reconcile skipped: cannot list instances");
                return;
            }
        };
        let engine = &self.engine;
        self.launched_at
            .retain(|w, _| engine.worker_state(*w).is_some());
        let verdict = self.reconciler.pass(
            &self.engine,
            &crate::reconcile::Listing {
                provider,
                listed_at,
                instances: &instances,
            },
            &self.launched_at,
            now(),
            self.server.orphan_grace,
        );
        for worker in verdict.lost {
            tracing::warn!(
                provider,
                worker = worker.0,
                "reconcile: the provider no longer runs this worker; declaring it lost"
            );
            self.apply(Event::WorkerLost { worker });
        }
        if !verdict.orphans.is_empty()
            && let Some(p) = self.providers.get(provider).cloned()
        {
            tracing::warn!(provider, count = verdict.orphans.len(), instances = ?verdict.orphans.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(), "reconcile: terminating instances no worker owns");
            let orphans = verdict.orphans;
            tokio::spawn(async move {
                if let Err(e) = p.terminate(&orphans).await {
                    tracing::error!(error = %e, "could not terminate orphaned instances");
                }
            });
        }
    }

    /// The span job log lines are written in: one per job, carrying who it
    /// belongs to, so a log pipeline can follow a job from start to end.
    fn job_span(&self, job: u64) -> tracing::Span {
        match self.jobs.get(&job) {
            Some(info) => {
                tracing::info_span!("job", id = job, tenant = %info.tenant, class = %info.class)
            }
            None => tracing::info_span!("job", id = job),
        }
    }

    /// Exports the engine's state as gauges and its cost books as
    /// counters (at most once a second; called from the tick).
    fn refresh_metrics(&mut self) {
        use crate::telemetry::{self as t, set_counter, set_gauge};
        let at = now();
        self.last_refresh = at;
        self.launch_requested.retain(|w, _| {
            matches!(
                self.engine.worker_state(*w),
                Some(ebbtide_core::WorkerState::Requested | ebbtide_core::WorkerState::Booting)
            )
        });
        self.engine.accrue_all(at);
        let engine = &self.engine;
        let config = engine.config();
        let rates = engine.cost_rates();
        for (i, p) in config.pools.iter().enumerate() {
            let Some(s) = engine.pool_status(PoolId(i as u32)) else {
                continue;
            };
            let pool = || ("pool", p.name.clone());
            for (state, n) in [
                ("requested", s.requested),
                ("booting", s.booting),
                ("idle", s.idle),
                ("busy", s.busy),
                ("draining", s.draining),
                ("terminating", s.terminating),
                ("lost", s.lost),
            ] {
                set_gauge(t::WORKERS, &[pool(), ("state", state.into())], f64::from(n));
            }
            set_gauge(t::POOL_DESIRED, &[pool()], f64::from(s.desired));
            let actual = s.requested + s.booting + s.idle + s.busy + s.draining;
            set_gauge(t::POOL_ACTUAL, &[pool()], f64::from(actual));
            set_gauge(t::POOL_MAX, &[pool()], f64::from(p.max));
            let warm = match p.kind {
                ebbtide_core::PoolKind::Static { warm } => warm,
                ebbtide_core::PoolKind::Dynamic { .. } => 0,
            };
            set_gauge(t::POOL_WARM, &[pool()], f64::from(warm));
            for market in [ebbtide_core::Market::OnDemand, ebbtide_core::Market::Spot] {
                let rate = rates
                    .iter()
                    .filter(|(pid, m, _)| pid.0 as usize == i && *m == market)
                    .map(|(_, _, r)| r.0.0)
                    .sum::<i64>();
                set_gauge(
                    t::COST_RATE,
                    &[pool(), ("market", market_name(market).into())],
                    rate as f64,
                );
            }
            let spent = engine.costs().by_pool.get(i).map_or(0, |c| c.to_micros().0);
            set_counter(t::COST_POOL, &[pool()], u64::try_from(spent).unwrap_or(0));
        }
        let mut series = Vec::new();
        for q in engine.queue_stats() {
            let (Some(class), Some(tenant)) = (
                config.classes.get(usize::from(q.class.0)),
                config.tenants.get(q.tenant.0 as usize),
            ) else {
                continue;
            };
            let labels = [
                ("class", class.name.clone()),
                ("tenant", tenant.name.clone()),
            ];
            set_gauge(t::QUEUE_DEPTH, &labels, q.depth as f64);
            let oldest = q
                .oldest
                .map_or(0.0, |o| at.saturating_since(o).as_secs_f64());
            set_gauge(t::QUEUE_OLDEST, &labels, oldest);
            series.push((class.name.clone(), tenant.name.clone()));
        }
        for (class, tenant) in std::mem::take(&mut self.queue_series) {
            if !series.contains(&(class.clone(), tenant.clone())) {
                let labels = [("class", class), ("tenant", tenant)];
                set_gauge(t::QUEUE_DEPTH, &labels, 0.0);
                set_gauge(t::QUEUE_OLDEST, &labels, 0.0);
            }
        }
        self.queue_series = series;
        let engine = &self.engine;
        let config = engine.config();
        for c in &config.classes {
            set_gauge(
                t::SLA_TARGET,
                &[("class", c.name.clone())],
                c.sla_target.as_secs_f64(),
            );
        }
        let costs = engine.costs();
        for (i, tenant) in config.tenants.iter().enumerate() {
            let spent = costs.by_tenant.get(i).map_or(0, |c| c.to_micros().0);
            set_counter(
                t::COST_TENANT,
                &[("tenant", tenant.name.clone())],
                u64::try_from(spent).unwrap_or(0),
            );
            if let (Some(limit), Some(usage)) = (
                tenant.quota.max_running_jobs,
                engine.tenant_usage(ebbtide_core::TenantId(i as u32)),
            ) && limit > 0
            {
                set_gauge(
                    t::QUOTA_USED,
                    &[("tenant", tenant.name.clone())],
                    f64::from(usage.running_jobs) / f64::from(limit),
                );
            }
        }
        let fleet = costs.fleet.to_micros().0;
        let spot = costs.spot.to_micros().0;
        set_counter(
            t::COST_MARKET,
            &[("market", "spot".into())],
            u64::try_from(spot).unwrap_or(0),
        );
        set_counter(
            t::COST_MARKET,
            &[("market", "on-demand".into())],
            u64::try_from(fleet - spot).unwrap_or(0),
        );
        set_counter(
            t::SAVINGS,
            &[],
            u64::try_from(costs.savings().0).unwrap_or(0),
        );
        if let Some(budget) = config.max_cost_per_hour {
            set_gauge(t::BUDGET, &[], budget.0.0 as f64);
        }
    }

    fn write(&mut self, id: ebbtide_store::JobId, update: JobUpdate) {
        self.journal.update(id.0, update);
    }

    /// Carries out what waited for a batch to be durable.
    fn on_committed(&mut self, committed: Committed) {
        self.journal.landed();
        for action in committed.then {
            match action {
                AfterCommit::Deliver {
                    job,
                    worker,
                    attempt,
                } => {
                    if self.awaiting_commit.get(&job) == Some(&attempt) {
                        self.awaiting_commit.remove(&job);
                    }
                    self.deliver(worker, job, attempt);
                }
                AfterCommit::ConfirmResult { job, worker } => {
                    // Not delivered: the agent repeats the result on its next
                    // session and is confirmed then.
                    self.send(
                        worker,
                        Down::ResultStored(ebbtide_proto::worker::v1::ResultStored { job_id: job }),
                    );
                }
            }
        }
    }

    /// Whether `job` is still this attempt on this worker: an assignment
    /// made stale by a cancel, a loss or a newer attempt is never sent.
    fn still_assigned(&self, worker: WorkerId, job: u64, attempt: u32) -> bool {
        self.engine.job_state(JobId(job)).and_then(|s| s.worker()) == Some(worker)
            && self.engine.job_attempts(JobId(job)) == Some(attempt)
    }

    /// Sends a stored assignment, or keeps it for the next chance.
    fn deliver(&mut self, worker: WorkerId, job: u64, attempt: u32) {
        if !self.still_assigned(worker, job, attempt) {
            return;
        }
        let Some(order) = self.assignment(job, attempt) else {
            return;
        };
        let delivered = self.send(worker, order);
        let _span = self.job_span(job).entered();
        tracing::info!(job, worker = worker.0, attempt, delivered, "job assigned");
        if !delivered {
            self.keep_undelivered(worker, Undelivered::Assignment { job, attempt });
        }
    }

    fn keep_undelivered(&mut self, worker: WorkerId, order: Undelivered) {
        self.undelivered.entry(worker).or_default().push(order);
    }

    /// Retries the orders a worker's session could not take, in order; the
    /// ones it still cannot take stay.
    fn retry_undelivered(&mut self, worker: WorkerId) {
        let Some(orders) = self.undelivered.remove(&worker) else {
            return;
        };
        let mut kept = Vec::new();
        for order in orders {
            if !kept.is_empty() {
                // Keep the order: nothing overtakes an earlier order.
                kept.push(order);
                continue;
            }
            let delivered = match &order {
                Undelivered::Assignment { job, attempt } => {
                    if !self.still_assigned(worker, *job, *attempt) {
                        continue;
                    }
                    match self.assignment(*job, *attempt) {
                        Some(a) => self.send(worker, a),
                        None => continue,
                    }
                }
                Undelivered::Order(down) => self.send(worker, down.clone()),
            };
            tracing::info!(worker = worker.0, delivered, "undelivered order retried");
            if !delivered {
                kept.push(order);
            }
        }
        if !kept.is_empty() {
            self.undelivered.insert(worker, kept);
        }
    }

    /// A job result from a worker: applied if the worker holds that attempt,
    /// confirmed to the agent once durable. A result for a job the engine no
    /// longer holds is a repeat of one already applied (its final state is
    /// stored or ahead of the confirmation in the journal) and is confirmed
    /// without being applied again; one for a job another worker holds is
    /// refused.
    fn on_result(&mut self, worker: WorkerId, r: ReportedResult) {
        let job = JobId(r.job);
        match self.engine.job_state(job).and_then(|s| s.worker()) {
            Some(holder) if holder == worker => {
                let current = self.engine.job_attempts(job);
                if r.attempt != 0 && current != Some(r.attempt) {
                    tracing::debug!(
                        job = r.job,
                        worker = worker.0,
                        attempt = r.attempt,
                        ?current,
                        "result of an earlier attempt confirmed, not applied"
                    );
                } else {
                    self.exit_codes.insert(r.job, r.exit_code);
                    self.apply(Event::JobFinished {
                        job,
                        worker,
                        outcome: r.outcome,
                    });
                }
            }
            None if self.engine.job_state(job).is_none() => {
                tracing::debug!(job = r.job, worker = worker.0, "repeated result confirmed");
            }
            _ => {
                self.refuse_report(worker, r.job, "result");
                return;
            }
        }
        self.journal
            .after_commit(AfterCommit::ConfirmResult { job: r.job, worker });
    }

    /// Output from a worker's session: stored only for a job that worker
    /// holds, and only up to the per-job cap (then a marker says why).
    fn on_output(&mut self, worker: WorkerId, job: u64, chunk: Vec<u8>) {
        if self.engine.job_state(JobId(job)).and_then(|s| s.worker()) != Some(worker) {
            self.refuse_report(worker, job, "output");
            return;
        }
        let max = self.max_output;
        let Some(info) = self.jobs.get_mut(&job) else {
            return;
        };
        if info.truncated {
            return;
        }
        let room = max.saturating_sub(info.output_bytes);
        let attempt = info.attempt;
        let mut chunk = chunk;
        if chunk.len() as u64 > room {
            chunk.truncate(usize::try_from(room).unwrap_or(usize::MAX));
            chunk.extend_from_slice(
                format!(
                    "\n[ebbtide: output truncated: this job's log reached server.max_job_output_bytes ({max} bytes); the rest was not stored]\n"
                )
                .as_bytes(),
            );
            info.truncated = true;
            tracing::warn!(
                job,
                worker = worker.0,
                max_bytes = max,
                "job output truncated at its cap"
            );
        }
        info.output_bytes += chunk.len() as u64;
        self.journal.log(job, attempt, chunk);
    }

    /// A session reported on a job its worker does not hold: refused, and
    /// said once per (worker, job) so a flood of chunks is one line.
    fn refuse_report(&mut self, worker: WorkerId, job: u64, what: &'static str) {
        crate::telemetry::report_refused(what);
        if self.refused.len() >= 10_000 {
            self.refused.clear();
        }
        if self.refused.insert((worker, job)) {
            tracing::warn!(
                worker = worker.0,
                job,
                what,
                "refused: a worker reported on a job it does not hold"
            );
        }
    }

    fn on_msg(&mut self, msg: LoopMsg) {
        match msg {
            LoopMsg::Submit { record, reply } => {
                let _ = reply.send(self.submit(record));
            }
            LoopMsg::Cancel { job } => {
                self.apply(Event::JobCancelled { job: JobId(job) });
            }
            LoopMsg::Event(e) => {
                let launched = if let Event::InstanceLaunched { worker, .. } = &e {
                    Some(*worker)
                } else {
                    None
                };
                if let Event::ReclamationNotice { worker, .. } = &e
                    && let Some((pool, _)) = self.engine.worker_placement(*worker)
                {
                    crate::telemetry::reclamation(
                        &self.engine.config().pools[pool.0 as usize].name,
                    );
                }
                let started = if let Event::JobStarted { job, .. } = &e {
                    Some(*job)
                } else {
                    None
                };
                let beat = if let Event::Heartbeat { worker } = &e {
                    Some(*worker)
                } else {
                    None
                };
                self.apply(e);
                if let Some(w) = beat
                    && self.undelivered.contains_key(&w)
                {
                    self.retry_undelivered(w);
                }
                if let Some(w) = launched {
                    self.launched_at.insert(w, now());
                }
                if let Some(job) = started
                    && matches!(self.engine.job_state(job), Some(JobState::Running { .. }))
                {
                    self.write(ebbtide_store::JobId(job.0), JobUpdate::Running);
                }
                if let Some(w) = launched
                    && let Some(reply) = self.pending_register.remove(&w)
                {
                    self.register(w, reply);
                }
            }
            LoopMsg::Register { worker, reply } => self.register(worker, reply),
            LoopMsg::Placement { worker, reply } => {
                let placement =
                    self.engine
                        .worker_placement(worker)
                        .and_then(|(pool, instance)| {
                            let provider = self
                                .engine
                                .config()
                                .pools
                                .get(pool.0 as usize)?
                                .provider
                                .clone();
                            Some((provider, instance.map(|i| i.0.clone())))
                        });
                let _ = reply.send(placement);
            }
            LoopMsg::Connected {
                worker,
                sender,
                running,
                results,
                reply,
            } => self.on_connected(worker, sender, running, results, reply),
            LoopMsg::Disconnected { worker } => {
                if self.sessions.get(&worker).is_some_and(|s| s.is_closed()) {
                    self.sessions.remove(&worker);
                }
            }
            LoopMsg::JobResult { worker, result } => self.on_result(worker, result),
            LoopMsg::Output { worker, job, chunk } => self.on_output(worker, job, chunk),
            LoopMsg::Reload { engine, reply } => {
                let missing: Vec<String> =
                    engine.pools.iter().filter(|p| !self.providers.contains_key(&p.provider)).map(|p| format!("pool {:?} uses provider {:?}, which is not running (restart to add providers)", p.name, p.provider)).collect();
                if !missing.is_empty() {
                    let _ = reply.send(Err(missing.join("; ")));
                    return;
                }
                match self.engine.reconfigure(*engine, now()) {
                    Ok(cmds) => {
                        tracing::info!("configuration reloaded");
                        for c in cmds {
                            self.execute(c);
                        }
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            LoopMsg::Reconciled {
                provider,
                listed_at,
                listed,
            } => self.finish_reconcile(&provider, listed_at, listed),
            LoopMsg::TerminateAll { reply } => self.terminate_all(reply),
            LoopMsg::Status { reply } => {
                let pools = self
                    .engine
                    .config()
                    .pools
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        let s = self.engine.pool_status(PoolId(i as u32))?;
                        Some(PoolReport {
                            name: p.name.clone(),
                            desired: s.desired,
                            requested: s.requested,
                            booting: s.booting,
                            idle: s.idle,
                            busy: s.busy,
                            retiring: s.draining + s.terminating + s.lost,
                        })
                    })
                    .collect();
                let _ = reply.send(StatusReport {
                    queued: self.engine.queued_jobs(),
                    on_workers: self.engine.live_jobs() - self.engine.queued_jobs(),
                    pools,
                });
            }
        }
    }

    /// Terminates every instance of every worker, provider by provider,
    /// and answers once the providers are done.
    fn terminate_all(&mut self, reply: oneshot::Sender<usize>) {
        let mut by_provider: HashMap<String, Vec<ebbtide_core::InstanceId>> = HashMap::new();
        for w in self.engine.live_workers() {
            if let Some((pool, Some(instance))) = self.engine.worker_placement(w)
                && let Some(p) = self.engine.config().pools.get(pool.0 as usize)
            {
                by_provider
                    .entry(p.provider.clone())
                    .or_default()
                    .push(instance.clone());
            }
        }
        let calls: Vec<_> = by_provider
            .into_iter()
            .filter_map(|(name, instances)| Some((self.providers.get(&name)?.clone(), instances)))
            .collect();
        tokio::spawn(async move {
            let mut n = 0;
            for (provider, instances) in calls {
                match provider.terminate(&instances).await {
                    Ok(()) => n += instances.len(),
                    Err(e) => {
                        tracing::error!(provider = provider.name(), error = %e, "could not terminate workers at stop")
                    }
                }
            }
            let _ = reply.send(n);
        });
    }

    /// A Session opened: results the agent holds are applied first, a job
    /// it runs that the engine placed elsewhere is stopped there (it must
    /// never run twice), a job placed on it that it does not know is sent
    /// again, then every order that waited for the session.
    fn on_connected(
        &mut self,
        worker: WorkerId,
        sender: SessionSender,
        running: Vec<u64>,
        results: Vec<ReportedResult>,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        if !may_hold_session(self.engine.worker_state(worker)) {
            let _ = reply.send(Err(format!(
                "worker {} is not an active member of this cluster",
                worker.0
            )));
            return;
        }
        let _ = reply.send(Ok(()));
        self.sessions.insert(worker, sender);
        if let Some(adopted) = self.awaiting_session.remove(&worker) {
            tracing::info!(
                worker = worker.0,
                jobs = adopted.len(),
                running = running.len(),
                results = results.len(),
                "adopted worker reconnected; its jobs continue"
            );
        }
        tracing::debug!(worker = worker.0, "session connected");
        // Taken before the results free slots: a job dispatched now is
        // delivered by its own commit, never from here.
        let unknown = self.unknown_to_agent(worker, &running, &results);
        for r in results {
            self.on_result(worker, r);
        }
        for job in running {
            if self.engine.job_state(JobId(job)).and_then(|s| s.worker()) != Some(worker) {
                // Requeued while the agent was away: stop the stale
                // attempt so the job never runs twice.
                tracing::warn!(
                    job,
                    worker = worker.0,
                    "agent runs a job the scheduler placed elsewhere; stopping it there"
                );
                self.send(worker, Down::Cancel(Cancel { job_id: job }));
            }
        }
        for (job, attempt) in unknown {
            self.resend(worker, job, attempt);
        }
        self.retry_undelivered(worker);
    }

    fn register(&mut self, worker: WorkerId, reply: oneshot::Sender<Result<(), String>>) {
        match self.engine.worker_state(worker) {
            Some(ebbtide_core::WorkerState::Requested) => {
                self.pending_register.insert(worker, reply);
            }
            Some(ebbtide_core::WorkerState::Booting) => {
                if let Some(at) = self.launch_requested.remove(&worker)
                    && let Some((pool, _)) = self.engine.worker_placement(worker)
                {
                    let name = &self.engine.config().pools[pool.0 as usize].name;
                    crate::telemetry::registered(name, now().saturating_since(at));
                }
                self.apply(Event::WorkerRegistered { worker });
                let _ = reply.send(Ok(()));
            }
            Some(ebbtide_core::WorkerState::Idle | ebbtide_core::WorkerState::Busy) => {
                // Re-registration after an agent restart: the old session is gone.
                let _ = reply.send(Ok(()));
            }
            other => {
                let _ = reply.send(Err(format!(
                    "worker {} cannot register in state {other:?}",
                    worker.0
                )));
            }
        }
    }

    /// The engine's view of a stored job, or why the current configuration
    /// cannot represent it (its tenant or class was removed while it
    /// waited): such a job is refused with that reason, never given a
    /// placeholder id.
    fn job_spec(&self, record: &JobRecord) -> Result<JobSpec, String> {
        let r = &record.requirements;
        let tenant = self
            .engine
            .tenant_id(&record.tenant)
            .ok_or_else(|| format!("tenant {:?} is no longer configured", record.tenant))?;
        let class = self
            .engine
            .class_id(&record.class)
            .ok_or_else(|| format!("class {:?} is no longer configured", record.class))?;
        Ok(JobSpec {
            id: JobId(record.id.0),
            tenant,
            class,
            requirements: Requirements {
                labels: r.labels.clone(),
                cpu_millis: r.cpu_millis,
                memory_mib: r.memory_mib,
                os: r.os.clone(),
                arch: r.arch.clone(),
            },
            max_attempts: record.max_attempts.max(1),
            attempts: record.attempts,
            expected_duration: None,
            submitted_at: Some(Timestamp::from_millis(record.submitted_at_ms)),
        })
    }

    /// Stores a job the engine never took as rejected, with the reason.
    fn reject_stored(&mut self, job: u64, reason: String) {
        tracing::warn!(job, %reason, "stored job refused");
        self.write(
            ebbtide_store::JobId(job),
            JobUpdate::Finished {
                status: JobStatus::Rejected,
                exit_code: None,
                reason: Some(reason),
                cost_micros: 0,
                at_ms: now().as_millis(),
            },
        );
    }

    fn submit(&mut self, record: JobRecord) -> Result<(), String> {
        let spec = match self.job_spec(&record) {
            Ok(spec) => spec,
            Err(reason) => {
                self.reject_stored(record.id.0, reason.clone());
                return Err(reason);
            }
        };
        self.jobs.insert(record.id.0, JobInfo::of(&record));
        let cmds = match self.engine.handle(Event::JobSubmitted(spec), now()) {
            Ok(c) => c,
            Err(e) => return Err(e.to_string()),
        };
        let mut verdict = Ok(());
        for c in &cmds {
            if let Command::Rejected { job, reason } = c
                && job.0 == record.id.0
            {
                verdict = Err(reason.to_string());
            }
        }
        if verdict.is_ok() && record.status == JobStatus::Queued && record.attempts == 0 {
            crate::telemetry::job_submitted(&record.tenant, &record.class);
        }
        for c in cmds {
            self.execute(c);
        }
        verdict
    }

    fn apply(&mut self, event: Event) {
        match self.engine.handle(event, now()) {
            Ok(cmds) => {
                for c in cmds {
                    self.execute(c);
                }
            }
            Err(e) => tracing::debug!(error = %e, "event not applied"),
        }
    }

    fn send(&self, worker: WorkerId, kind: Down) -> bool {
        match self.sessions.get(&worker) {
            Some(s) => s
                .try_send(Box::new(SchedulerMessage { kind: Some(kind) }))
                .is_ok(),
            None => false,
        }
    }

    fn assignment(&self, job: u64, attempt: u32) -> Option<Down> {
        let info = self.jobs.get(&job)?;
        Some(Down::Assignment(Assignment {
            job_id: job,
            command: info.command.clone(),
            timeout_ms: info.timeout_ms,
            env: Default::default(),
            attempt,
            max_output_bytes: self.max_output,
        }))
    }

    /// At a (re)connect: the stored assignments on `worker` that its agent
    /// neither runs nor holds a result for. They never reached it (an agent
    /// forgets a job only once its result is confirmed stored), so they are
    /// sent again — the same attempt, not a new run elsewhere. Assignments
    /// still on their way to the disk are left to their own commit.
    fn unknown_to_agent(
        &self,
        worker: WorkerId,
        running: &[u64],
        results: &[ReportedResult],
    ) -> Vec<(u64, u32)> {
        self.engine
            .jobs_on(worker)
            .iter()
            .filter(|j| {
                !running.contains(&j.0)
                    && !results.iter().any(|r| r.job == j.0)
                    && !self.awaiting_commit.contains_key(&j.0)
            })
            .filter_map(|j| Some((j.0, self.engine.job_attempts(*j)?)))
            .collect()
    }

    /// Sends a stored assignment again after a reconnect.
    fn resend(&mut self, worker: WorkerId, job: u64, attempt: u32) {
        if !self.still_assigned(worker, job, attempt) {
            return;
        }
        let Some(order) = self.assignment(job, attempt) else {
            return;
        };
        let delivered = self.send(worker, order);
        tracing::info!(
            job,
            worker = worker.0,
            attempt,
            delivered,
            "assignment re-sent: the agent did not have it"
        );
        if !delivered {
            self.keep_undelivered(worker, Undelivered::Assignment { job, attempt });
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::Assign {
                job,
                worker,
                attempt,
            } => {
                if let Some(info) = self.jobs.get(&job.0) {
                    let target = self
                        .engine
                        .class_id(&info.class)
                        .and_then(|c| self.engine.sla_target(c));
                    crate::telemetry::job_started(
                        &info.tenant,
                        &info.class,
                        now().saturating_since(info.submitted_at),
                        target,
                    );
                }
                if let Some(info) = self.jobs.get_mut(&job.0) {
                    info.attempt = attempt;
                }
                // Write-ahead: the worker sees the assignment only once it
                // is durable, so a restarted scheduler knows every job that
                // may be running and where.
                self.write(
                    ebbtide_store::JobId(job.0),
                    JobUpdate::Assigned {
                        worker: ebbtide_store::WorkerId(worker.0),
                        attempts: attempt,
                    },
                );
                self.awaiting_commit.insert(job.0, attempt);
                self.journal.after_commit(AfterCommit::Deliver {
                    job: job.0,
                    worker,
                    attempt,
                });
            }
            Command::Launch {
                pool,
                market,
                workers,
            } => self.launch(pool, market, workers),
            Command::Drain { worker, reason } => {
                tracing::info!(worker = worker.0, ?reason, "draining worker");
                if !self.send(worker, Down::Drain(Drain {})) {
                    self.keep_undelivered(worker, Undelivered::Order(Down::Drain(Drain {})));
                }
            }
            Command::AssignmentExpired {
                job,
                worker,
                waited,
            } => {
                tracing::warn!(
                    job = job.0,
                    worker = worker.0,
                    waited_ms = waited.as_millis() as u64,
                    "worker never confirmed it started the job; stopping it there and requeueing (engine.assignment_timeout)"
                );
            }
            Command::WorkerLost {
                pool,
                worker,
                reason,
                jobs,
            } => {
                if let Some(p) = self.engine.config().pools.get(pool.0 as usize) {
                    crate::telemetry::worker_lost(&p.name);
                    tracing::warn!(pool = %p.name, worker = worker.0, jobs, %reason, "worker lost; its jobs go back to the queue and its instance is terminated");
                }
            }
            Command::Terminate {
                pool,
                worker,
                instance,
            } => {
                let Some(provider) = self.provider_of(pool) else {
                    return;
                };
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    match provider.terminate(std::slice::from_ref(&instance)).await {
                        Ok(()) => {
                            let _ = tx
                                .send(LoopMsg::Event(Event::InstanceTerminated { worker }))
                                .await;
                        }
                        Err(e) => {
                            tracing::error!(instance = %instance.0, error = %e, "terminate failed")
                        }
                    }
                });
            }
            Command::StopJob { job, worker } => {
                let delivered = self.send(worker, Down::Cancel(Cancel { job_id: job.0 }));
                if !delivered {
                    self.keep_undelivered(
                        worker,
                        Undelivered::Order(Down::Cancel(Cancel { job_id: job.0 })),
                    );
                }
                tracing::info!(
                    job = job.0,
                    worker = worker.0,
                    delivered,
                    "job stop requested"
                );
            }
            Command::Requeued { job, attempts } => {
                self.write(
                    ebbtide_store::JobId(job.0),
                    JobUpdate::Requeued { attempts },
                );
            }
            Command::Rejected { job, reason } => {
                if let Some(info) = self.jobs.remove(&job.0) {
                    crate::telemetry::job_finished(&info.tenant, &info.class, "rejected");
                }
                tracing::info!(job = job.0, %reason, "job rejected");
                self.write(
                    ebbtide_store::JobId(job.0),
                    JobUpdate::Finished {
                        status: JobStatus::Rejected,
                        exit_code: None,
                        reason: Some(reason.to_string()),
                        cost_micros: 0,
                        at_ms: now().as_millis(),
                    },
                );
            }
            Command::Completed {
                job, outcome, cost, ..
            } => {
                let _span = self.job_span(job.0).entered();
                if let Some(info) = self.jobs.remove(&job.0) {
                    let name = match outcome {
                        JobOutcome::Succeeded => "succeeded",
                        JobOutcome::Failed => "failed",
                        JobOutcome::Cancelled => "cancelled",
                        JobOutcome::Lost => "lost",
                    };
                    crate::telemetry::job_finished(&info.tenant, &info.class, name);
                    tracing::info!(
                        job = job.0,
                        outcome = name,
                        attempts = info.attempt,
                        cost_micros = cost.0,
                        "job finished"
                    );
                }
                let exit_code = self.exit_codes.remove(&job.0).flatten();
                let (status, reason) = match outcome {
                    JobOutcome::Succeeded => (JobStatus::Succeeded, None),
                    JobOutcome::Failed => (JobStatus::Failed, None),
                    JobOutcome::Cancelled => (JobStatus::Cancelled, None),
                    JobOutcome::Lost => (
                        JobStatus::Lost,
                        Some("lost by the infrastructure more often than max_attempts".to_string()),
                    ),
                };
                self.write(
                    ebbtide_store::JobId(job.0),
                    JobUpdate::Finished {
                        status,
                        exit_code,
                        reason,
                        cost_micros: cost.0,
                        at_ms: now().as_millis(),
                    },
                );
            }
            Command::Scale(d) => {
                let pool = &self.engine.config().pools[d.pool.0 as usize].name;
                let span =
                    tracing::info_span!("scale_decision", pool = %pool, kind = d.reason.kind());
                let _entered = span.enter();
                tracing::info!(pool = %pool, from = d.from, to = d.to, active = d.active, kind = d.reason.kind(), reason = %d.reason, "scale decision");
                crate::telemetry::scale_decision(pool, d.from, d.to, d.reason.kind());
            }
            Command::LaunchFailed {
                pool,
                market,
                reason,
                count,
            } => {
                let cfg = &self.engine.config().pools[pool.0 as usize];
                let kind = match reason {
                    LaunchFailure::Capacity => "capacity",
                    LaunchFailure::Throttled => "throttled",
                    LaunchFailure::Quota => "quota",
                    LaunchFailure::Permanent => "permanent",
                    LaunchFailure::Incomplete => "incomplete",
                    LaunchFailure::NotIssued => "not_issued",
                };
                crate::telemetry::launch_failed(
                    &cfg.provider,
                    &cfg.name,
                    market_name(market),
                    kind,
                    u64::from(count),
                );
                tracing::warn!(pool = %cfg.name, ?market, ?reason, count, "launch failed");
            }
            Command::InstanceCost(l) => {
                if let Some(p) = self.engine.config().pools.get(l.pool.0 as usize) {
                    crate::telemetry::worker_retired(&p.name, l.jobs_served);
                }
                tracing::info!(
                    worker = l.worker.0,
                    cost_micros = l.cost.0,
                    jobs = l.jobs_served,
                    "instance retired"
                );
            }
        }
    }

    fn provider_of(&self, pool: PoolId) -> Option<Arc<dyn Provider>> {
        let name = &self.engine.config().pools.get(pool.0 as usize)?.provider;
        self.providers.get(name).cloned()
    }

    fn launch(&mut self, pool: PoolId, market: ebbtide_core::Market, workers: Vec<WorkerId>) {
        let Some(provider) = self.provider_of(pool) else {
            return;
        };
        let cfg = &self.engine.config().pools[pool.0 as usize];
        crate::telemetry::launched(
            &cfg.provider,
            &cfg.name,
            market_name(market),
            workers.len() as u64,
        );
        let requested = now();
        for w in &workers {
            self.launch_requested.insert(*w, requested);
        }
        let launches: Vec<WorkerLaunch> = workers
            .iter()
            .map(|w| WorkerLaunch {
                worker: *w,
                bootstrap_token: Secret::new(random_token()),
            })
            .collect();
        let request = LaunchRequest {
            cluster: self.server.cluster.clone(),
            pool: cfg.name.clone(),
            shape: cfg.shape.name.clone(),
            cpu_millis: cfg.shape.cpu_millis,
            memory_mib: cfg.shape.memory_mib,
            market,
            scheduler_url: self.server.public_grpc_url.clone(),
            workers: launches,
        };
        let issued = now().as_millis();
        let expires = issued + self.server.bootstrap_token_ttl.as_millis() as u64;
        let (store, tx) = (self.store.clone(), self.tx.clone());
        tokio::spawn(async move {
            for w in &request.workers {
                if let Err(e) = store
                    .issue_token(
                        w.bootstrap_token.expose(),
                        ebbtide_store::WorkerId(w.worker.0),
                        &request.pool,
                        issued,
                        expires,
                    )
                    .await
                {
                    tracing::error!(error = %e, "cannot record bootstrap token");
                    let _ = tx
                        .send(LoopMsg::Event(Event::LaunchFailed {
                            workers,
                            reason: LaunchFailure::NotIssued,
                        }))
                        .await;
                    return;
                }
            }
            match provider.launch(request).await {
                Ok(launched) => {
                    let done: Vec<WorkerId> = launched.iter().map(|l| l.worker).collect();
                    for l in launched {
                        let _ = tx
                            .send(LoopMsg::Event(Event::InstanceLaunched {
                                worker: l.worker,
                                instance: l.instance,
                                zone: l.zone,
                            }))
                            .await;
                    }
                    let missing: Vec<WorkerId> =
                        workers.into_iter().filter(|w| !done.contains(w)).collect();
                    if !missing.is_empty() {
                        let _ = tx
                            .send(LoopMsg::Event(Event::LaunchFailed {
                                workers: missing,
                                reason: LaunchFailure::Incomplete,
                            }))
                            .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "launch failed");
                    let _ = tx
                        .send(LoopMsg::Event(Event::LaunchFailed {
                            workers,
                            reason: e.as_launch_failure(),
                        }))
                        .await;
                }
            }
        });
    }
}

/// A provider's instances for restart recovery, retried through a passing
/// outage: without them a job whose worker survived would be taken for
/// abandoned and run again. If the provider stays unreachable the
/// scheduler does not start (a supervisor restarts it later).
async fn list_for_recovery(
    name: &str,
    provider: &dyn Provider,
) -> Result<Vec<ebbtide_provider::InstanceInfo>, String> {
    let mut delay = std::time::Duration::from_millis(500);
    let mut tries = 0;
    loop {
        match provider.list().await {
            Ok(listed) => return Ok(listed),
            Err(e) if tries < 5 => {
                tracing::warn!(provider = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot list instances for recovery; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                tries += 1;
            }
            Err(e) => {
                return Err(format!(
                    "provider {name}: cannot list its instances ({e}); without the list, jobs of workers that survived the restart would run twice, so the scheduler does not start"
                ));
            }
        }
    }
}

/// The market as a metric label value.
fn market_name(market: ebbtide_core::Market) -> &'static str {
    ebbtide_provider::labels::market_value(market)
}

/// Whether a worker in `state` may have a session open: it is registered
/// and not yet retired or lost.
fn may_hold_session(state: Option<ebbtide_core::WorkerState>) -> bool {
    matches!(
        state,
        Some(
            ebbtide_core::WorkerState::Idle
                | ebbtide_core::WorkerState::Busy
                | ebbtide_core::WorkerState::Draining
        )
    )
}
