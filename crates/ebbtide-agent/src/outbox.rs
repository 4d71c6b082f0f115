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
//! there in its Hello once the result has left the queue (before that the
//! job is listed as running: its output still queued must reach the
//! scheduler before the result closes the job). That is what makes a result
//! survive a scheduler crash: the scheduler stores it before it confirms.
//! Its size is bounded by the jobs that can finish while no scheduler
//! answers — at most the worker's slots, since nothing new is assigned
//! meanwhile — and capped at [`MAX_UNCONFIRMED`] regardless.
//!
//! Output is kept the same way, from the moment a session takes a chunk
//! off the queue (and numbers it with its offset in the attempt's output)
//! until the scheduler answers `OutputStored` for it or `ResultStored` for
//! its job; every new session repeats what is kept in its Hello, and the
//! scheduler stores each byte once. What is kept is what was in flight
//! when a session broke — the session's send buffer and the scheduler's
//! uncommitted batch — so a scheduler killed mid-job loses no line of its
//! log. It is capped at [`MAX_KEPT_OUTPUT`]; past that the oldest bytes of
//! the job keeping most are forgotten (and, should the session then break,
//! the scheduler marks the gap in the job's log).

use std::collections::{BTreeMap, VecDeque};

use ebbtide_proto::worker::v1::agent_message::Kind as Up;
use ebbtide_proto::worker::v1::{AgentMessage, JobOutput, JobResult};
use tokio::sync::mpsc;

/// Reports waiting for a session (output chunks of up to 16 KiB each).
pub(crate) const REPORT_QUEUE: usize = 1024;
/// Most results kept waiting for confirmation.
pub(crate) const MAX_UNCONFIRMED: usize = 1024;
/// Most output bytes kept for repeating after a broken session: far above
/// what is in flight between two commits, and small enough that a Hello
/// carrying all of it stays well under the 4 MiB gRPC message limit.
pub(crate) const MAX_KEPT_OUTPUT: usize = 2 << 20;
/// Largest piece kept output is repeated in (contiguous chunks merge).
const HELLO_PIECE: usize = 64 << 10;
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
    /// Ended, but its last reports are still queued: they go out in order,
    /// the result last, so nothing is repeated now.
    Reporting,
    /// Its result was sent and awaits confirmation: repeat the result.
    Unconfirmed(Box<JobResult>),
    /// Done and confirmed: ignore the repeat.
    Confirmed,
}

/// A result awaiting confirmation, and whether it left the queue yet.
#[derive(Debug)]
struct Pending {
    result: JobResult,
    /// Whether a session took the result off the queue: only then has all
    /// of the job's output been sent before it, and only then may a Hello
    /// carry it (applied first, it would close the job to the output still
    /// queued behind it).
    sent: bool,
}

/// One attempt's output a session took off the queue: the next offset, and
/// the chunks not yet confirmed stored.
#[derive(Debug, Default)]
struct SentOutput {
    attempt: u32,
    next: u64,
    kept: VecDeque<(u64, Vec<u8>)>,
    kept_bytes: usize,
}

impl SentOutput {
    fn forget_through(&mut self, through: u64) -> usize {
        let mut freed = 0;
        while let Some((at, chunk)) = self.kept.front() {
            if at + chunk.len() as u64 > through {
                break;
            }
            freed += chunk.len();
            self.kept.pop_front();
        }
        self.kept_bytes -= freed;
        freed
    }
}

/// Results of jobs that ended but were not confirmed stored, the ids of
/// those that were, and output sent but not confirmed.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    unconfirmed: BTreeMap<u64, Pending>,
    confirmed: VecDeque<u64>,
    output: BTreeMap<u64, SentOutput>,
    kept_bytes: usize,
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
        self.unconfirmed.insert(
            result.job_id,
            Pending {
                result: *result,
                sent: false,
            },
        );
    }

    /// A session took `report` off the queue and is about to send it: an
    /// output chunk gets its offset and is kept; a result is marked sent.
    pub(crate) fn stamp(&mut self, report: &mut AgentMessage) {
        match &mut report.kind {
            Some(Up::Output(o)) => self.number(o),
            Some(Up::Result(r)) => {
                if let Some(p) = self.unconfirmed.get_mut(&r.job_id) {
                    p.sent = true;
                }
            }
            _ => {}
        }
    }

    fn number(&mut self, o: &mut JobOutput) {
        let sent = self.output.entry(o.job_id).or_default();
        if sent.attempt != o.attempt {
            self.kept_bytes -= sent.kept_bytes;
            *sent = SentOutput {
                attempt: o.attempt,
                ..SentOutput::default()
            };
        }
        o.offset = Some(sent.next);
        sent.kept.push_back((sent.next, o.chunk.clone()));
        sent.next += o.chunk.len() as u64;
        sent.kept_bytes += o.chunk.len();
        self.kept_bytes += o.chunk.len();
        while self.kept_bytes > MAX_KEPT_OUTPUT {
            let Some(most) = self.output.values_mut().max_by_key(|s| s.kept_bytes) else {
                break;
            };
            let Some((at, chunk)) = most.kept.pop_front() else {
                break;
            };
            most.kept_bytes -= chunk.len();
            self.kept_bytes -= chunk.len();
            tracing::warn!(
                offset = at,
                bytes = chunk.len(),
                "output kept for resending passed its cap; the oldest piece is forgotten"
            );
        }
    }

    /// The scheduler stored `job`'s output of `attempt` before `through`.
    pub(crate) fn output_stored(&mut self, job: u64, attempt: u32, through: u64) {
        if let Some(sent) = self.output.get_mut(&job)
            && sent.attempt == attempt
        {
            self.kept_bytes -= sent.forget_through(through);
        }
    }

    /// The scheduler stored this job's result (and, before it, all of its
    /// output).
    pub(crate) fn confirmed(&mut self, job: u64) {
        if let Some(sent) = self.output.remove(&job) {
            self.kept_bytes -= sent.kept_bytes;
        }
        if self.unconfirmed.remove(&job).is_some() {
            if self.confirmed.len() == REMEMBER_CONFIRMED {
                self.confirmed.pop_front();
            }
            self.confirmed.push_back(job);
        }
    }

    /// What the agent knows of `job`.
    pub(crate) fn known(&self, job: u64) -> Known {
        if let Some(p) = self.unconfirmed.get(&job) {
            if p.sent {
                Known::Unconfirmed(Box::new(p.result))
            } else {
                Known::Reporting
            }
        } else if self.confirmed.contains(&job) {
            Known::Confirmed
        } else {
            Known::New
        }
    }

    /// Results to repeat in a new session's Hello: those already sent.
    pub(crate) fn pending(&self) -> Vec<JobResult> {
        self.unconfirmed
            .values()
            .filter(|p| p.sent)
            .map(|p| p.result)
            .collect()
    }

    /// Jobs that ended but whose reports are still queued: a Hello lists
    /// them as running, and their result follows in order.
    pub(crate) fn still_reporting(&self) -> impl Iterator<Item = u64> + '_ {
        self.unconfirmed
            .iter()
            .filter(|(_, p)| !p.sent)
            .map(|(&job, _)| job)
    }

    /// Output to repeat in a new session's Hello, contiguous chunks merged
    /// into pieces of at most [`HELLO_PIECE`] bytes.
    pub(crate) fn unacknowledged_output(&self) -> Vec<JobOutput> {
        let mut pieces = Vec::new();
        for (&job_id, sent) in &self.output {
            let mut piece: Option<JobOutput> = None;
            for (at, chunk) in &sent.kept {
                if let Some(p) = piece.as_mut()
                    && p.offset.map(|o| o + p.chunk.len() as u64) == Some(*at)
                    && p.chunk.len() + chunk.len() <= HELLO_PIECE
                {
                    p.chunk.extend_from_slice(chunk);
                    continue;
                }
                pieces.extend(piece.take());
                piece = Some(JobOutput {
                    job_id,
                    chunk: chunk.clone(),
                    offset: Some(*at),
                    attempt: sent.attempt,
                });
            }
            pieces.extend(piece);
        }
        pieces
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

    fn sent(l: &mut Ledger, r: JobResult) {
        l.finished(&r);
        let mut m = AgentMessage {
            kind: Some(Up::Result(r)),
        };
        l.stamp(&mut m);
    }

    fn output(job: u64, attempt: u32, text: &str) -> AgentMessage {
        AgentMessage {
            kind: Some(Up::Output(JobOutput {
                job_id: job,
                chunk: text.as_bytes().to_vec(),
                offset: None,
                attempt,
            })),
        }
    }

    /// Takes a chunk off the queue as a session does; returns its offset.
    fn take(l: &mut Ledger, job: u64, attempt: u32, text: &str) -> Option<u64> {
        let mut m = output(job, attempt, text);
        l.stamp(&mut m);
        match m.kind {
            Some(Up::Output(o)) => o.offset,
            _ => None,
        }
    }

    #[test]
    fn a_written_result_is_repeated_until_confirmed_then_remembered_as_done() {
        let mut l = Ledger::default();
        sent(&mut l, result(7));
        assert_eq!(l.pending(), vec![result(7)]);
        assert_eq!(l.known(7), Known::Unconfirmed(Box::new(result(7))));
        l.confirmed(7);
        assert!(l.pending().is_empty());
        assert_eq!(l.known(7), Known::Confirmed);
        assert_eq!(l.known(8), Known::New);
    }

    #[test]
    fn a_result_still_queued_is_not_in_hello_and_its_job_is_listed_as_running() {
        let mut l = Ledger::default();
        l.finished(&result(7));
        assert!(l.pending().is_empty(), "its output may still be queued");
        assert_eq!(l.still_reporting().collect::<Vec<_>>(), vec![7]);
        assert_eq!(l.known(7), Known::Reporting);
        let mut m = AgentMessage {
            kind: Some(Up::Result(result(7))),
        };
        l.stamp(&mut m);
        assert_eq!(l.pending(), vec![result(7)]);
        assert_eq!(l.still_reporting().count(), 0);
    }

    #[test]
    fn unconfirmed_results_are_bounded() {
        let mut l = Ledger::default();
        for j in 0..(MAX_UNCONFIRMED as u64 + 10) {
            sent(&mut l, result(j));
        }
        assert_eq!(l.pending().len(), MAX_UNCONFIRMED);
        assert_eq!(l.known(0), Known::New);
    }

    #[test]
    fn output_is_numbered_as_taken_and_kept_until_stored() {
        let mut l = Ledger::default();
        assert_eq!(take(&mut l, 7, 1, "before\n"), Some(0));
        assert_eq!(take(&mut l, 7, 1, "middle\n"), Some(7));
        assert_eq!(take(&mut l, 8, 1, "other"), Some(0));
        let kept = l.unacknowledged_output();
        assert_eq!(kept.len(), 2, "contiguous chunks merge: {kept:?}");
        assert_eq!(kept[0].chunk, b"before\nmiddle\n");
        assert_eq!((kept[0].offset, kept[0].attempt), (Some(0), 1));
        l.output_stored(7, 1, 7);
        let kept = l.unacknowledged_output();
        assert_eq!(kept[0].chunk, b"middle\n");
        assert_eq!(kept[0].offset, Some(7));
        // An acknowledgement of another attempt frees nothing.
        l.output_stored(8, 2, 5);
        assert_eq!(l.unacknowledged_output().len(), 2);
        sent(&mut l, result(7));
        l.confirmed(7);
        let kept = l.unacknowledged_output();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].job_id, 8);
        assert_eq!(l.kept_bytes, 5);
    }

    #[test]
    fn a_new_attempt_numbers_from_zero() {
        let mut l = Ledger::default();
        take(&mut l, 7, 1, "first try");
        assert_eq!(take(&mut l, 7, 2, "again"), Some(0));
        assert_eq!(l.kept_bytes, 5);
    }

    #[test]
    fn kept_output_is_capped_by_forgetting_the_oldest_of_the_largest() {
        let mut l = Ledger::default();
        let big = "x".repeat(16 << 10);
        take(&mut l, 8, 1, "small");
        let chunks = MAX_KEPT_OUTPUT / big.len() + 3;
        for _ in 0..chunks {
            take(&mut l, 7, 1, &big);
        }
        assert!(l.kept_bytes <= MAX_KEPT_OUTPUT);
        let kept = l.unacknowledged_output();
        assert_eq!(kept.iter().filter(|o| o.job_id == 8).count(), 1);
        let first_of_7 = kept.iter().find(|o| o.job_id == 7).and_then(|o| o.offset);
        // 131 chunks and 5 bytes against a cap of 128 chunks: the first
        // overflow forgets two chunks (one is not enough for the 5 bytes),
        // each later one a chunk more.
        assert_eq!(first_of_7, Some(4 * big.len() as u64));
        // Offsets keep counting what was sent, forgotten or not.
        assert_eq!(take(&mut l, 7, 1, "end"), Some((chunks * big.len()) as u64));
    }
}
