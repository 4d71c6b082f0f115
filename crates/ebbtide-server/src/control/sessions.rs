//! Workers' sessions: registration, orders delivered (or kept until the
//! session can take them), and what agents report back, checked against
//! what the worker holds.

use super::*;

/// An order a worker's session could not take yet (not open, or its queue
/// full); retried when the session opens and at each heartbeat.
#[derive(Debug, Clone)]
pub(super) enum Undelivered {
    /// An assignment, rebuilt at delivery (and dropped if the job moved).
    Assignment { job: JobId, attempt: u32 },
    /// A cancel or drain order.
    Order(Down),
}

impl Control {
    /// Whether `job` is still this attempt on this worker: an assignment
    /// made stale by a cancel, a loss or a newer attempt is never sent.
    pub(super) fn still_assigned(&self, worker: WorkerId, job: JobId, attempt: u32) -> bool {
        self.engine.job_state(job).and_then(|s| s.worker()) == Some(worker)
            && self.engine.job_attempts(job) == Some(attempt)
    }

    /// Sends a stored assignment, or keeps it for the next chance.
    pub(super) fn deliver(&mut self, worker: WorkerId, job: JobId, attempt: u32) {
        self.send_assignment(worker, job, attempt, "job assigned");
    }

    /// Sends the stored assignment of `job` unless it went stale, logs
    /// `what`, and keeps it for the next chance if the session cannot take
    /// it now.
    fn send_assignment(&mut self, worker: WorkerId, job: JobId, attempt: u32, what: &str) {
        if !self.still_assigned(worker, job, attempt) {
            return;
        }
        let Some(order) = self.assignment(job, attempt) else {
            return;
        };
        let delivered = self.send(worker, order);
        let _span = self.job_span(job).entered();
        tracing::info!(job = job.0, worker = worker.0, attempt, delivered, "{what}");
        if !delivered {
            self.keep_undelivered(worker, Undelivered::Assignment { job, attempt });
        }
    }

    pub(super) fn keep_undelivered(&mut self, worker: WorkerId, order: Undelivered) {
        self.undelivered.entry(worker).or_default().push(order);
    }

    /// Retries the orders a worker's session could not take, in order; the
    /// ones it still cannot take stay.
    pub(super) fn retry_undelivered(&mut self, worker: WorkerId) {
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
    pub(super) fn on_result(&mut self, worker: WorkerId, r: ReportedResult) {
        let job = r.job;
        match self.engine.job_state(job).and_then(|s| s.worker()) {
            Some(holder) if holder == worker => {
                let current = self.engine.job_attempts(job);
                if r.attempt != 0 && current != Some(r.attempt) {
                    tracing::debug!(
                        job = r.job.0,
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
                tracing::debug!(
                    job = r.job.0,
                    worker = worker.0,
                    "repeated result confirmed"
                );
            }
            _ => {
                self.refuse_report(worker, r.job, "result");
                return;
            }
        }
        self.journal
            .after_commit(AfterCommit::ConfirmResult { job: r.job, worker });
    }

    /// Output from a worker's session: stored only for the attempt that
    /// worker holds, each byte once (a chunk the agent repeats after a
    /// broken session is trimmed to what is new), and only up to the per-job
    /// cap (then a marker says why). Numbered output is acknowledged once
    /// durable, so the agent can forget what it kept.
    pub(super) fn on_output(&mut self, worker: WorkerId, output: ReportedOutput) {
        let ReportedOutput {
            job,
            attempt,
            offset,
            mut chunk,
        } = output;
        if self.engine.job_state(job).and_then(|s| s.worker()) != Some(worker) {
            self.refuse_report(worker, job, "output");
            return;
        }
        if attempt != 0 && self.engine.job_attempts(job) != Some(attempt) {
            tracing::debug!(
                job = job.0,
                worker = worker.0,
                attempt,
                "output of an earlier attempt, not stored"
            );
            return;
        }
        let max = self.max_output;
        let Some(info) = self.jobs.get_mut(&job) else {
            return;
        };
        let mut lost = 0;
        if let Some(offset) = offset {
            let end = offset + chunk.len() as u64;
            if end <= info.received {
                chunk.clear();
            } else if offset < info.received {
                chunk.drain(..usize::try_from(info.received - offset).unwrap_or(usize::MAX));
            } else {
                lost = offset - info.received;
            }
            info.received = info.received.max(end);
            self.journal
                .confirm_output(worker, job, attempt, info.received);
        }
        if info.truncated || chunk.is_empty() {
            return;
        }
        if lost > 0 {
            tracing::warn!(
                job = job.0,
                worker = worker.0,
                bytes = lost,
                "output lost: the agent could not keep all it sent while its session was broken"
            );
            // Written as the scheduler's own line (attempt 0), so the
            // attempt's stored size stays equal to the agent's offsets and a
            // restarted scheduler trims repeats exactly.
            let marker = format!(
                "\n[ebbtide: {lost} bytes of this attempt's output were lost while the agent's session was broken]\n"
            )
            .into_bytes();
            info.output_bytes += marker.len() as u64;
            self.journal.log(job, 0, marker);
        }
        let room = max.saturating_sub(info.output_bytes);
        let attempt = info.attempt;
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
                job = job.0,
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
    pub(super) fn refuse_report(&mut self, worker: WorkerId, job: JobId, what: &'static str) {
        crate::telemetry::report_refused(what);
        if self.refused.len() >= 10_000 {
            self.refused.clear();
        }
        if self.refused.insert((worker, job)) {
            tracing::warn!(
                worker = worker.0,
                job = job.0,
                what,
                "refused: a worker reported on a job it does not hold"
            );
        }
    }

    /// A Session opened: the engine hears what the agent holds
    /// (`Event::SessionOpened`: it stops what runs in the wrong place and
    /// redelivers what never arrived), then the output and the results the
    /// agent kept are applied, then every order that waited for the session
    /// is sent.
    pub(super) fn on_connected(
        &mut self,
        worker: WorkerId,
        sender: SessionSender,
        holds: AgentHolds,
        reply: oneshot::Sender<Result<(), WorkerRefused>>,
    ) {
        let AgentHolds {
            running,
            output,
            results,
        } = holds;
        if !may_hold_session(self.engine.worker_state(worker)) {
            let _ = reply.send(Err(WorkerRefused::NotActive(worker)));
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
        // Before the results free slots: a job dispatched now is delivered
        // by its own commit, never as a redelivery.
        let finished = results.iter().map(|r| r.job).collect();
        self.apply(Event::SessionOpened {
            worker,
            running,
            finished,
        });
        for o in output {
            self.on_output(worker, o);
        }
        for r in results {
            self.on_result(worker, r);
        }
        self.retry_undelivered(worker);
    }

    pub(super) fn register(
        &mut self,
        worker: WorkerId,
        reply: oneshot::Sender<Result<(), WorkerRefused>>,
    ) {
        match self.engine.worker_state(worker) {
            Some(ebbtide_core::WorkerState::Requested) => {
                self.pending_register.insert(worker, reply);
            }
            Some(ebbtide_core::WorkerState::Booting) => {
                if let Some(at) = self.launch_requested.remove(&worker)
                    && let Some((pool, _)) = self.engine.worker_placement(worker)
                {
                    let name = &self.engine.config().pools[pool.0 as usize].name;
                    crate::telemetry::registered(name, self.now.saturating_since(at));
                }
                self.apply(Event::WorkerRegistered { worker });
                let _ = reply.send(Ok(()));
            }
            Some(ebbtide_core::WorkerState::Idle | ebbtide_core::WorkerState::Busy) => {
                // Re-registration after an agent restart: the old session is gone.
                let _ = reply.send(Ok(()));
            }
            state => {
                let _ = reply.send(Err(WorkerRefused::CannotRegister { worker, state }));
            }
        }
    }

    pub(super) fn send(&self, worker: WorkerId, kind: Down) -> bool {
        match self.sessions.get(&worker) {
            Some(s) => s
                .try_send(Box::new(SchedulerMessage { kind: Some(kind) }))
                .is_ok(),
            None => false,
        }
    }

    pub(super) fn assignment(&self, job: JobId, attempt: u32) -> Option<Down> {
        let info = self.jobs.get(&job)?;
        Some(Down::Assignment(Assignment {
            job_id: job.0,
            command: info.command.clone(),
            timeout_ms: info.timeout_ms,
            env: Default::default(),
            attempt,
            max_output_bytes: self.max_output,
        }))
    }

    /// Sends a stored assignment again after a reconnect
    /// (`Command::Redeliver`); one still on its way to the disk is left to
    /// its own commit.
    pub(super) fn resend(&mut self, worker: WorkerId, job: JobId, attempt: u32) {
        if self.awaiting_commit.contains_key(&job) {
            return;
        }
        self.send_assignment(
            worker,
            job,
            attempt,
            "assignment re-sent: the agent did not have it",
        );
    }
}

/// Whether a worker in `state` may have a session open: it is registered
/// and not yet retired or lost.
pub(super) fn may_hold_session(state: Option<ebbtide_core::WorkerState>) -> bool {
    matches!(
        state,
        Some(
            ebbtide_core::WorkerState::Idle
                | ebbtide_core::WorkerState::Busy
                | ebbtide_core::WorkerState::Draining
        )
    )
}
