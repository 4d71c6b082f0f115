//! Carrying out the engine's commands.

use super::*;

impl Control {
    pub(super) fn execute(&mut self, command: Command) {
        match command {
            Command::Assign {
                job,
                worker,
                attempt,
            } => {
                if let Some(info) = self.jobs.get(&job) {
                    let target = self
                        .engine
                        .class_id(&info.class)
                        .and_then(|c| self.engine.sla_target(c));
                    crate::telemetry::job_started(
                        &info.tenant,
                        &info.class,
                        self.now.saturating_since(info.submitted_at),
                        target,
                    );
                }
                if let Some(info) = self.jobs.get_mut(&job) {
                    info.attempt = attempt;
                    info.received = 0;
                }
                // Write-ahead: the worker sees the assignment only once it
                // is durable, so a restarted scheduler knows every job that
                // may be running and where.
                self.write(
                    job,
                    JobUpdate::Assigned {
                        worker,
                        attempts: attempt,
                    },
                );
                self.awaiting_commit.insert(job, attempt);
                self.journal.after_commit(AfterCommit::Deliver {
                    job,
                    worker,
                    attempt,
                });
            }
            Command::Launch {
                pool,
                market,
                workers,
                zones,
                why,
            } => self.launch(pool, market, workers, zones, why),
            Command::SpotAwaited { pool, count, until } => {
                let name = &self.engine.config().pools[pool.0 as usize].name;
                tracing::info!(
                    pool = %name,
                    count,
                    until_ms = until.as_millis(),
                    "spot launch held back: every spot offering is locked after capacity errors and no job misses its target by waiting"
                );
                self.remember(
                    pool,
                    "spot_awaited",
                    format!("{count} spot instance(s) held back until {until}: every spot offering is locked after capacity errors and no job misses its target by waiting"),
                );
            }
            Command::Drain { worker, reason } => {
                tracing::info!(worker = worker.0, ?reason, "draining worker");
                if let Some((pool, _)) = self.engine.worker_placement(worker) {
                    self.remember(
                        pool,
                        "drain",
                        format!("draining worker {}: {}", worker.0, reason.name()),
                    );
                }
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
                self.remember(
                    pool,
                    "lost",
                    format!("worker {} lost with {jobs} job(s): {reason}", worker.0),
                );
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
            Command::Redeliver {
                job,
                worker,
                attempt,
            } => self.resend(worker, job, attempt),
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
                self.write(job, JobUpdate::Requeued { attempts });
            }
            Command::Rejected { job, reason } => {
                if let Some(info) = self.jobs.remove(&job) {
                    crate::telemetry::job_finished(&info.tenant, &info.class, "rejected");
                }
                tracing::info!(job = job.0, %reason, "job rejected");
                self.write(
                    job,
                    JobUpdate::Finished {
                        status: JobStatus::Rejected,
                        exit_code: None,
                        reason: Some(reason.to_string()),
                        cost_micros: 0,
                        at_ms: self.now.as_millis(),
                    },
                );
            }
            Command::Completed {
                job, outcome, cost, ..
            } => {
                let _span = self.job_span(job).entered();
                if let Some(info) = self.jobs.remove(&job) {
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
                let exit_code = self.exit_codes.remove(&job).flatten();
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
                    job,
                    JobUpdate::Finished {
                        status,
                        exit_code,
                        reason,
                        cost_micros: cost.0,
                        at_ms: self.now.as_millis(),
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
                drop(_entered);
                let summary = format!(
                    "desired {} -> {} ({} active): {}",
                    d.from, d.to, d.active, d.reason
                );
                self.remember(d.pool, "scale", summary);
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
                    market.name(),
                    kind,
                    u64::from(count),
                );
                tracing::warn!(pool = %cfg.name, ?market, ?reason, count, "launch failed");
                self.remember(
                    pool,
                    "launch_failed",
                    format!("{count} {} launch(es) failed: {kind}", market.name()),
                );
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
}
