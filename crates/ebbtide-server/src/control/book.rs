//! The job book: what the loop keeps of each live job beside the engine's
//! record, submissions, and the journal writes and their commits.

use super::*;

/// What the loop keeps of a live job beyond the engine's record: what an
/// assignment carries, labels for logs and metrics, and how much output
/// its log already holds (the cap is per job, over all attempts).
pub(super) struct JobInfo {
    pub(super) command: String,
    pub(super) timeout_ms: u64,
    /// The engine's attempt count as of the last assignment (a mirror for
    /// log lines; the engine owns the counter).
    pub(super) attempt: u32,
    pub(super) tenant: String,
    pub(super) class: String,
    pub(super) submitted_at: Timestamp,
    pub(super) output_bytes: u64,
    pub(super) truncated: bool,
    /// How far into the current attempt's output (in the agent's offsets)
    /// the log holds: a chunk repeated after a reconnect or a restart is
    /// trimmed to what lies beyond.
    pub(super) received: u64,
}

impl JobInfo {
    pub(super) fn of(record: &JobRecord) -> JobInfo {
        JobInfo {
            command: record.command.clone(),
            timeout_ms: record.timeout_ms,
            attempt: record.attempts,
            tenant: record.tenant.clone(),
            class: record.class.clone(),
            submitted_at: Timestamp::from_millis(record.submitted_at_ms),
            output_bytes: 0,
            truncated: false,
            received: 0,
        }
    }
}

impl Control {
    /// The span job log lines are written in: one per job, carrying who it
    /// belongs to, so a log pipeline can follow a job from start to end.
    pub(super) fn job_span(&self, job: JobId) -> tracing::Span {
        match self.jobs.get(&job) {
            Some(info) => {
                tracing::info_span!("job", id = job.0, tenant = %info.tenant, class = %info.class)
            }
            None => tracing::info_span!("job", id = job.0),
        }
    }

    pub(super) fn write(&mut self, id: JobId, update: JobUpdate) {
        self.journal.update(id, update);
    }

    /// Carries out what waited for a batch to be durable.
    pub(super) fn on_committed(&mut self, committed: Committed) {
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
                AfterCommit::ConfirmOutput {
                    job,
                    worker,
                    attempt,
                    through,
                } => {
                    // Not delivered: a later acknowledgement covers it, or
                    // the agent repeats the output and is answered then.
                    self.send(
                        worker,
                        Down::OutputStored(ebbtide_proto::worker::v1::OutputStored {
                            job_id: job.0,
                            attempt,
                            through,
                        }),
                    );
                }
                AfterCommit::ConfirmResult { job, worker } => {
                    // Not delivered: the agent repeats the result on its next
                    // session and is confirmed then.
                    self.send(
                        worker,
                        Down::ResultStored(ebbtide_proto::worker::v1::ResultStored {
                            job_id: job.0,
                        }),
                    );
                }
            }
        }
    }

    /// The engine's view of a stored job, or why the current configuration
    /// cannot represent it (its tenant or class was removed while it
    /// waited): such a job is refused with that reason, never given a
    /// placeholder id.
    pub(super) fn job_spec(&self, record: &JobRecord) -> Result<JobSpec, SubmitRefused> {
        let r = &record.requirements;
        let tenant = self
            .engine
            .tenant_id(&record.tenant)
            .ok_or_else(|| SubmitRefused::UnknownTenant(record.tenant.clone()))?;
        let class = self
            .engine
            .class_id(&record.class)
            .ok_or_else(|| SubmitRefused::UnknownClass(record.class.clone()))?;
        Ok(JobSpec {
            id: record.id,
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
    pub(super) fn reject_stored(&mut self, job: JobId, reason: String) {
        tracing::warn!(job = job.0, %reason, "stored job refused");
        self.write(
            job,
            JobUpdate::Finished {
                status: JobStatus::Rejected,
                exit_code: None,
                reason: Some(reason),
                cost_micros: 0,
                at_ms: self.now.as_millis(),
            },
        );
    }

    pub(super) fn submit(&mut self, record: JobRecord) -> Result<(), SubmitRefused> {
        let spec = match self.job_spec(&record) {
            Ok(spec) => spec,
            Err(reason) => {
                self.reject_stored(record.id, reason.to_string());
                return Err(reason);
            }
        };
        self.jobs.insert(record.id, JobInfo::of(&record));
        let cmds = match self.engine.handle(Event::JobSubmitted(spec), self.now) {
            Ok(c) => c,
            Err(e) => return Err(SubmitRefused::Engine(e)),
        };
        let mut verdict = Ok(());
        for c in &cmds {
            if let Command::Rejected { job, reason } = c
                && *job == record.id
            {
                verdict = Err(SubmitRefused::Rejected(reason.clone()));
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
}
