//! # ebbtide-store
//!
//! Durable state for the scheduler: every accepted job (durable before the
//! API answers), its log, and the one-time bootstrap tokens workers
//! register with, and the cost ledger daily reports are built from. The
//! [`Store`] trait is what the server uses; SQLite (WAL, group commit) is
//! the one implementation today. The trait is kept free of SQLite types so
//! that a PostgreSQL store for several replicas can implement it (not
//! written yet).
//!
//! This crate must never depend on the engine's decisions or on a provider:
//! it stores records, it does not interpret them. Tokens are stored only as
//! SHA-256 hashes, so a database dump never reveals a usable credential.

mod costs;
mod sqlite;
mod types;

pub use costs::{CostLine, ReportDue};

pub use sqlite::SqliteStore;
pub use types::*;

/// The scheduler's durable state.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Makes a job durable and returns it with its id; the submission is on
    /// disk when this returns.
    async fn submit(&self, job: NewJob) -> Result<JobRecord, StoreError>;
    /// Records a state change of a job.
    async fn update(&self, id: JobId, update: JobUpdate) -> Result<(), StoreError>;
    /// One job.
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;
    /// Jobs matching a filter, oldest first, at most `filter.limit`.
    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError>;
    /// Jobs not finished (queued, assigned, running): what a restarted
    /// scheduler must rebuild.
    async fn live_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// Appends output to a job's log (as attempt 0: outside the control
    /// loop's stream, for tools and tests).
    async fn append_log(&self, id: JobId, chunk: Vec<u8>) -> Result<(), StoreError> {
        let missing = self
            .apply(std::sync::Arc::from([JobWrite::Log {
                job: id,
                attempt: 0,
                chunk,
            }]))
            .await?;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::NoSuchJob(id))
        }
    }
    /// Applies the control loop's writes in order, in one transaction:
    /// when this returns `Ok` every one of them is on disk. Returns the
    /// jobs of writes that matched no stored job (a bug upstream, never a
    /// reason to lose the rest of the batch). Shared, so the caller keeps
    /// the batch to retry without copying its output.
    async fn apply(&self, writes: std::sync::Arc<[JobWrite]>) -> Result<Vec<JobId>, StoreError>;
    /// Up to about `max_bytes` of a job's log from byte `offset` on (whole
    /// chunks: a page ends at the first chunk boundary past `max_bytes`).
    async fn log_page(&self, id: JobId, offset: u64, max_bytes: u64)
    -> Result<LogPage, StoreError>;
    /// How many bytes a job's log holds.
    async fn log_size(&self, id: JobId) -> Result<u64, StoreError>;
    /// How many bytes of a job's log one attempt wrote (the scheduler's own
    /// lines, attempt 0, not counted): where a restarted scheduler resumes
    /// that attempt's output, in the agent's offsets.
    async fn attempt_log_size(&self, id: JobId, attempt: u32) -> Result<u64, StoreError>;
    /// A job's whole log; for tests and small logs (the API pages).
    async fn logs(&self, id: JobId) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let page = self.log_page(id, at, 1 << 20).await?;
            for c in page.chunks {
                out.extend(c.bytes);
            }
            match page.next {
                Some(n) => at = n,
                None => return Ok(out),
            }
        }
    }
    /// Records a one-time bootstrap token for a worker (only its hash).
    async fn issue_token(
        &self,
        token: &str,
        worker: WorkerId,
        pool: &str,
        issued_at_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StoreError>;
    /// The highest worker id a token was ever issued for (0 if none), so a
    /// restarted scheduler never reuses a worker id.
    async fn max_worker_id(&self) -> Result<u64, StoreError>;
    /// Checks and consumes a bootstrap token, atomically: a token is valid
    /// once, for its own worker, before it expires.
    async fn redeem_token(
        &self,
        token: &str,
        worker: WorkerId,
        now_ms: u64,
    ) -> Result<TokenCheck, StoreError>;
    /// Adds cost ledger lines (amounts of the same day, worker and tenant
    /// sum up) and marks their days' reports due.
    async fn record_costs(&self, lines: Vec<CostLine>) -> Result<(), StoreError> {
        self.record_costs_until(lines, None).await
    }
    /// [`Store::record_costs`], and, atomically with it, that the whole
    /// fleet's cost is now booked up to `booked_until_ms`.
    async fn record_costs_until(
        &self,
        lines: Vec<CostLine>,
        booked_until_ms: Option<u64>,
    ) -> Result<(), StoreError>;
    /// From when a worker's cost is not booked yet: the later of the last
    /// ledger mark and its launch; `None` if neither is known.
    async fn accrued_until(&self, worker: WorkerId) -> Result<Option<u64>, StoreError>;
    /// Ledger lines of the UTC days `from..=to`, ordered by day, worker and
    /// tenant (the idle line first).
    async fn cost_lines(&self, from: u64, to: u64) -> Result<Vec<CostLine>, StoreError>;
    /// Days before `before` whose ledger changed since their report was
    /// last published, oldest first.
    async fn reports_due(&self, before: u64) -> Result<Vec<ReportDue>, StoreError>;
    /// Records that a day's report was published as of a revision.
    async fn mark_reported(&self, due: ReportDue) -> Result<(), StoreError>;
}
