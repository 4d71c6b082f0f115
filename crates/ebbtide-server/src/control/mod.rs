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

mod book;
mod commands;
mod launches;
mod messages;
mod metrics;
mod reconciling;
mod recovery;
mod sessions;
mod views;

use book::JobInfo;
pub use messages::{
    AgentHolds, LoopMsg, ReloadRefused, ReportedOutput, ReportedResult, SessionSender,
    SubmitRefused, WorkerRefused,
};
use sessions::{Undelivered, may_hold_session};
pub use views::{
    CostReport, DecisionReport, ExplainReport, HostStatus, PoolChoiceReport, PoolReport,
    QueueReport, RunningJobReport, StatusReport, TenantStatus, WorkerReport,
};

/// Why the loop woke.
#[expect(
    clippy::large_enum_variant,
    reason = "one Wake lives on the stack for one turn, never in a collection; boxing would allocate per message"
)]
enum Wake {
    Committed(Committed),
    Shutdown,
    FlushLedger,
    Reconcile,
    Tick,
    /// The engine's next timeout fell due before the next tick.
    Deadline,
    Message(LoopMsg),
}

/// Sleeps until `deadline`; never completes without one.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

pub(crate) struct Control {
    engine: Engine,
    /// The instant of this loop turn (read once per turn).
    now: Timestamp,
    store: Arc<dyn Store>,
    providers: HashMap<String, Arc<dyn Provider>>,
    tx: mpsc::Sender<LoopMsg>,
    journal: Journal,
    committed: Option<mpsc::Receiver<Committed>>,
    sessions: HashMap<WorkerId, SessionSender>,
    pending_register: BTreeMap<WorkerId, oneshot::Sender<Result<(), WorkerRefused>>>,
    /// Orders a worker's session could not take yet, in order; sent when it
    /// opens and retried at each heartbeat, so no assignment, cancel or
    /// drain is ever lost to a full queue or a reconnect.
    undelivered: HashMap<WorkerId, Vec<Undelivered>>,
    /// (worker, job) pairs already warned about for reporting on a job the
    /// worker does not hold (bounded: one line per pair, not per chunk).
    refused: std::collections::HashSet<(WorkerId, JobId)>,
    jobs: HashMap<JobId, JobInfo>,
    exit_codes: HashMap<JobId, Option<i32>>,
    server: ServerConfig,
    /// Adopted workers whose agent has not reconnected yet, with the jobs
    /// they were given back. If the agent never comes, the engine's
    /// heartbeat timeout declares the worker lost and requeues them.
    awaiting_session: HashMap<WorkerId, Vec<JobId>>,
    /// Largest output stored per job; beyond it a marker ends the log.
    max_output: u64,
    /// Jobs whose assignment is on its way to the disk: sent by their
    /// commit, never before.
    awaiting_commit: HashMap<JobId, u32>,
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
    /// The latest scaling decisions, for the status view.
    decisions: views::RecentDecisions,
    /// Each provider's owned machines as its last reconcile pass saw them.
    hosts: BTreeMap<String, Vec<ebbtide_provider::HostReport>>,
    /// Launch calls still out with a provider. A stop that terminates
    /// every worker waits for them: an instance whose launch returns after
    /// the terminate pass would be left running, owned by no one.
    launches_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Control {
    /// The count of launch calls out with a provider, for the stop path.
    pub(crate) fn launches_in_flight(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.launches_in_flight.clone()
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
        let clock = crate::clock::process();
        // The engine's next timeout. Scanning for it costs a pass over the
        // live workers and jobs, so it is taken after each tick, not after
        // every message: a deadline a message creates is at least its
        // timeout away and is found by the next tick's scan (a timeout
        // shorter than the tick fires at the tick, as it did before).
        let mut deadline = self.engine.next_deadline().map(|t| clock.instant_of(t));
        loop {
            self.journal.flush();
            let accepting = !self.journal.is_full();
            let woke = tokio::select! {
                biased;
                done = committed.recv() => match done {
                    Some(c) => Wake::Committed(c),
                    None => {
                        tracing::error!("journal writer stopped");
                        return;
                    }
                },
                _ = shutdown.changed() => Wake::Shutdown,
                _ = ledger.tick() => Wake::FlushLedger,
                _ = reconcile.tick() => Wake::Reconcile,
                _ = tick.tick() => Wake::Tick,
                _ = sleep_until(deadline), if deadline.is_some() => Wake::Deadline,
                msg = rx.recv(), if accepting => match msg {
                    Some(m) => Wake::Message(m),
                    None => return,
                },
            };
            // The clock is read once per turn: every decision of the turn
            // sees the same instant.
            self.now = clock.now();
            match woke {
                Wake::Committed(c) => self.on_committed(c),
                Wake::Shutdown => {
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
                    let at = clock.now();
                    let lines = self.ledger.take(&mut self.engine, at);
                    if let Err(e) = self
                        .store
                        .record_costs_until(lines, Some(at.as_millis()))
                        .await
                    {
                        tracing::error!(error = %e, "cost ledger lines lost at shutdown");
                    }
                    return;
                }
                Wake::FlushLedger => self.ledger.flush(&mut self.engine, self.now),
                Wake::Reconcile => self.start_reconcile(),
                Wake::Deadline => {
                    self.apply(Event::Tick);
                    deadline = self.engine.next_deadline().map(|t| clock.instant_of(t));
                }
                Wake::Tick => {
                    if !self.awaiting_session.is_empty() {
                        // Adopted workers the engine declared lost stop waiting.
                        let engine = &self.engine;
                        self.awaiting_session
                            .retain(|w, _| may_hold_session(engine.worker_state(*w)));
                    }
                    self.apply(Event::Tick);
                    deadline = self.engine.next_deadline().map(|t| clock.instant_of(t));
                    if self.now.saturating_since(self.last_refresh)
                        >= std::time::Duration::from_secs(1)
                    {
                        self.refresh_metrics();
                    }
                }
                Wake::Message(m) => self.on_msg(m),
            }
        }
    }

    fn on_msg(&mut self, msg: LoopMsg) {
        match msg {
            LoopMsg::Submit { record, reply } => {
                let _ = reply.send(self.submit(record));
            }
            LoopMsg::Cancel { job } => {
                self.apply(Event::JobCancelled { job });
            }
            LoopMsg::Drain { worker, reply } => {
                match self
                    .engine
                    .handle(Event::DrainRequested { worker }, self.now)
                {
                    Ok(cmds) => {
                        tracing::info!(worker = worker.0, "operator drain requested");
                        for c in cmds {
                            self.execute(c);
                        }
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
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
                    self.launched_at.insert(w, self.now);
                }
                if let Some(job) = started
                    && matches!(self.engine.job_state(job), Some(JobState::Running { .. }))
                {
                    self.write(job, JobUpdate::Running);
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
                holds,
                reply,
            } => self.on_connected(worker, sender, holds, reply),
            LoopMsg::Disconnected { worker } => {
                if self.sessions.get(&worker).is_some_and(|s| s.is_closed()) {
                    self.sessions.remove(&worker);
                }
            }
            LoopMsg::JobResult { worker, result } => self.on_result(worker, result),
            LoopMsg::Output { worker, output } => self.on_output(worker, output),
            LoopMsg::Reload { engine, reply } => {
                if let Some(p) = engine
                    .pools
                    .iter()
                    .find(|p| !self.providers.contains_key(&p.provider))
                {
                    let _ = reply.send(Err(ReloadRefused::ProviderNotRunning {
                        pool: p.name.clone(),
                        provider: p.provider.clone(),
                    }));
                    return;
                }
                match self.engine.reconfigure(*engine, self.now) {
                    Ok(cmds) => {
                        tracing::info!("configuration reloaded");
                        for c in cmds {
                            self.execute(c);
                        }
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
                        let _ = reply.send(Err(ReloadRefused::Engine(e)));
                    }
                }
            }
            LoopMsg::Reconciled {
                provider,
                listed_at,
                listed,
                reclaimed,
                hosts,
            } => {
                self.finish_reconcile(&provider, listed_at, listed, &reclaimed);
                self.hosts.insert(provider, hosts);
            }
            LoopMsg::TerminateAll { reply } => self.terminate_all(reply),
            LoopMsg::Ping { reply } => {
                let _ = reply.send(());
            }
            LoopMsg::Status { reply } => {
                let _ = reply.send(self.status_report());
            }
            LoopMsg::Explain { job, reply } => {
                let _ = reply.send(self.explain(job));
            }
        }
    }

    fn apply(&mut self, event: Event) {
        match self.engine.handle(event, self.now) {
            Ok(cmds) => {
                for c in cmds {
                    self.execute(c);
                }
            }
            Err(e) => tracing::debug!(error = %e, "event not applied"),
        }
    }
}
