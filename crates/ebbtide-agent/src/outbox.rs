//! What the agent owes the scheduler, and what it may forget.
//!
//! Reports travel through one bounded queue shared by every job and
//! survive reconnects. Policies when it is full: a job's output chunk is
//! dropped (and counted, so the job's log says how much is missing); a
//! start, a result, a drain acknowledgement or a reclamation notice waits
//! for room — back-pressure on the job task, never a loss.
//!
//! A result enters `unconfirmed` the moment its job ends — before the job
//! leaves the running set, so at every instant the agent knows a job it
//! was given as running or as finished — and stays there until the
//! scheduler answers `ResultStored`; every new session repeats what is
//! there in its Hello. That is what makes a result
//! survive a scheduler crash: the scheduler stores it before it confirms.
//! Its size is bounded by the jobs that can finish while no scheduler
//! answers — at most the worker's slots, since nothing new is assigned
//! meanwhile — and capped at [`MAX_UNCONFIRMED`] regardless.

use std::collections::{BTreeMap, VecDeque};

use ebbtide_proto::worker::v1::agent_message::Kind as Up;
use ebbtide_proto::worker::v1::{AgentMessage, JobResult};
use tokio::sync::mpsc;

/// Reports waiting for a session (output chunks of up to 16 KiB each).
pub(crate) const REPORT_QUEUE: usize = 1024;
/// Most results kept waiting for confirmation.
pub(crate) const MAX_UNCONFIRMED: usize = 1024;
/// How many confirmed job ids are remembered, so a repeated assignment of
/// a job already done is recognised and not run again.
const REMEMBER_CONFIRMED: usize = 4096;

/// The sending half every job holds.
pub(crate) type Reports = mpsc::Sender<AgentMessage>;

/// The ledger every job and session shares.
pub(crate) type SharedLedger = std::sync::Arc<std::sync::Mutex<Ledger>>;

/// What the agent knows of a job the scheduler (re)sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Known {
    /// Never seen: run it.
    New,
    /// Its result is waiting for confirmation: repeat the result.
    Unconfirmed(Box<JobResult>),
    /// Done and confirmed: ignore the repeat.
    Confirmed,
}

/// Results of jobs that ended but were not confirmed stored, and the ids
/// of those that were.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    unconfirmed: BTreeMap<u64, JobResult>,
    confirmed: VecDeque<u64>,
}

impl Ledger {
    /// A job ended: keep its result until the scheduler confirms it.
    pub(crate) fn finished(&mut self, result: &JobResult) {
        if self.unconfirmed.len() >= MAX_UNCONFIRMED
            && !self.unconfirmed.contains_key(&result.job_id)
            && let Some((&oldest, _)) = self.unconfirmed.iter().next()
        {
            tracing::error!(
                job = oldest,
                "too many unconfirmed results; forgetting the oldest"
            );
            self.unconfirmed.remove(&oldest);
        }
        self.unconfirmed.insert(result.job_id, *result);
    }

    /// The scheduler stored this job's result.
    pub(crate) fn confirmed(&mut self, job: u64) {
        if self.unconfirmed.remove(&job).is_some() {
            if self.confirmed.len() == REMEMBER_CONFIRMED {
                self.confirmed.pop_front();
            }
            self.confirmed.push_back(job);
        }
    }

    /// What the agent knows of `job`.
    pub(crate) fn known(&self, job: u64) -> Known {
        if let Some(r) = self.unconfirmed.get(&job) {
            Known::Unconfirmed(Box::new(*r))
        } else if self.confirmed.contains(&job) {
            Known::Confirmed
        } else {
            Known::New
        }
    }

    /// Results to repeat in a new session's Hello.
    pub(crate) fn pending(&self) -> Vec<JobResult> {
        self.unconfirmed.values().copied().collect()
    }

    /// Whether every result was confirmed.
    pub(crate) fn is_empty(&self) -> bool {
        self.unconfirmed.is_empty()
    }
}

/// Sends a report that must not be lost, waiting for room.
pub(crate) async fn send(reports: &Reports, kind: Up) {
    // Only fails once the agent is shutting down, when nothing is sent.
    let _ = reports.send(AgentMessage { kind: Some(kind) }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(job: u64) -> JobResult {
        JobResult {
            job_id: job,
            outcome: 1,
            exit_code: Some(0),
            attempt: 1,
        }
    }

    #[test]
    fn a_written_result_is_repeated_until_confirmed_then_remembered_as_done() {
        let mut l = Ledger::default();
        l.finished(&result(7));
        assert_eq!(l.pending(), vec![result(7)]);
        assert_eq!(l.known(7), Known::Unconfirmed(Box::new(result(7))));
        l.confirmed(7);
        assert!(l.pending().is_empty());
        assert_eq!(l.known(7), Known::Confirmed);
        assert_eq!(l.known(8), Known::New);
    }

    #[test]
    fn unconfirmed_results_are_bounded() {
        let mut l = Ledger::default();
        for j in 0..(MAX_UNCONFIRMED as u64 + 10) {
            l.finished(&result(j));
        }
        assert_eq!(l.pending().len(), MAX_UNCONFIRMED);
        assert_eq!(l.known(0), Known::New);
    }
}
