//! Restart recovery: the engine rebuilt from the store, and the instances
//! that outlived the previous run adopted (their jobs continue when their
//! agents reconnect) or terminated.

use super::*;

/// An instance that outlived the previous run of the scheduler, waiting for
/// its agent to reconnect so it can be adopted.
pub(super) struct Survivor {
    pub(super) pool: PoolId,
    pub(super) instance: ebbtide_core::InstanceId,
    pub(super) zone: Option<String>,
    pub(super) market: ebbtide_core::Market,
    pub(super) provider: String,
    /// Jobs the store placed on it when the scheduler stopped.
    pub(super) jobs: Vec<JobRecord>,
    /// From when its cost is not in the durable ledger.
    pub(super) accrue_from: Option<Timestamp>,
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
            now: now(),
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
            launches_in_flight: Arc::default(),
            queue_series: Vec::new(),
            last_refresh: Timestamp::from_millis(0),
            decisions: Default::default(),
            hosts: BTreeMap::new(),
        };
        let live = store.live_jobs().await.map_err(|e| e.to_string())?;
        let recovered = live.len();
        let mut output_sizes = HashMap::new();
        for record in live.iter().filter(|r| r.status != JobStatus::Queued) {
            let size = store.log_size(record.id).await.map_err(|e| e.to_string())?;
            let this_attempt = store
                .attempt_log_size(record.id, record.attempts)
                .await
                .map_err(|e| e.to_string())?;
            output_sizes.insert(record.id, (size, this_attempt));
        }
        for record in live {
            let holder = record.worker.filter(|_| record.status != JobStatus::Queued);
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
            match store.accrued_until(worker).await {
                Ok(until) => survivor.accrue_from = until.map(Timestamp::from_millis),
                Err(e) => {
                    tracing::error!(worker = worker.0, error = %e, "cannot read the ledger mark; charging the adopted worker from now")
                }
            }
            control.adopt(worker, survivor);
        }
        for (job, (size, this_attempt)) in output_sizes {
            if let Some(info) = control.jobs.get_mut(&job) {
                info.output_bytes = size;
                info.truncated = size >= control.max_output;
                info.received = this_attempt;
            }
        }
        if recovered > 0 {
            tracing::info!(jobs = recovered, "recovered unfinished jobs from the store");
        }
        Ok(control)
    }

    /// Puts a job recovered from the store back in the queue, keeping its
    /// submission time (SLA clock, FIFO place) and attempt count.
    pub(super) fn requeue_recovered(&mut self, record: JobRecord) {
        if record.status != JobStatus::Queued {
            self.write(
                record.id,
                JobUpdate::Requeued {
                    attempts: record.attempts,
                },
            );
        }
        let id = record.id;
        if let Err(reason) = self.submit(record) {
            tracing::warn!(job = id.0, %reason, "recovered job refused by the engine");
        }
    }

    /// Takes back a worker that outlived the previous run, with the jobs the
    /// store placed on it: they continue there. Its agent must reconnect
    /// within the heartbeat timeout, or the engine declares it lost, has it
    /// terminated and requeues the jobs.
    pub(super) fn adopt(&mut self, worker: WorkerId, survivor: Survivor) {
        let mut specs = Vec::with_capacity(survivor.jobs.len());
        let mut refused = Vec::new();
        for record in &survivor.jobs {
            match self.job_spec(record) {
                Ok(spec) => {
                    specs.push(spec);
                    self.jobs.insert(record.id, JobInfo::of(record));
                }
                Err(reason) => {
                    self.reject_stored(record.id, reason.to_string());
                    refused.push(record.id);
                }
            }
        }
        // The agent may still run them: stop them there once it reconnects.
        for job in refused {
            self.keep_undelivered(
                worker,
                Undelivered::Order(Down::Cancel(Cancel { job_id: job.0 })),
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
        match self.engine.handle(Event::WorkerAdopted(adoption), self.now) {
            Ok(cmds) => {
                tracing::info!(
                    worker = worker.0,
                    instance = %survivor.instance.0,
                    jobs = survivor.jobs.len(),
                    "worker from before the restart adopted; waiting for its agent to reconnect"
                );
                self.awaiting_session
                    .insert(worker, survivor.jobs.iter().map(|r| r.id).collect());
                self.launched_at.insert(worker, self.now);
                for c in cmds {
                    self.execute(c);
                }
            }
            Err(e) => {
                tracing::warn!(worker = worker.0, error = %e, "surviving worker not adopted; terminating it");
                for record in &survivor.jobs {
                    self.jobs.remove(&record.id);
                }
                self.retire_survivor(survivor);
            }
        }
    }

    /// Terminates an instance the engine never knew in this run and puts
    /// its jobs back in the queue.
    pub(super) fn retire_survivor(&mut self, survivor: Survivor) {
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
}

/// A provider's instances for restart recovery, retried through a passing
/// outage: without them a job whose worker survived would be taken for
/// abandoned and run again. If the provider stays unreachable the
/// scheduler does not start (a supervisor restarts it later).
pub(super) async fn list_for_recovery(
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
