//! SQLite store: WAL, `synchronous = FULL`, and group commit.
//!
//! Every write goes through one writer task that takes whatever requests
//! are waiting (up to 512), applies them in one transaction and answers
//! them all after the commit. A submission is therefore on disk (fsynced)
//! before it is acknowledged, yet thousands of submissions a second share a
//! handful of fsyncs. Reads use a separate pool: WAL lets them run while
//! the writer commits.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::costs;
use crate::{
    CostLine, JobFilter, JobId, JobRecord, JobStatus, JobUpdate, JobWrite, LogChunk, LogPage,
    NewJob, ReportDue, RequirementsRecord, Store, StoreError, TokenCheck, WorkerId,
};

/// Requests that may wait for the writer; beyond this, callers wait.
const WRITE_QUEUE: usize = 4096;
/// Most requests applied in one transaction.
const MAX_BATCH: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteOp {
    Submit(NewJob, Reply<JobRecord>),
    Update(JobId, JobUpdate, Reply<()>),
    Apply(std::sync::Arc<[JobWrite]>, Reply<Vec<JobId>>),
    IssueToken {
        hash: Vec<u8>,
        worker: WorkerId,
        pool: String,
        issued_at_ms: u64,
        expires_at_ms: u64,
        reply: Reply<()>,
    },
    RedeemToken {
        hash: Vec<u8>,
        worker: WorkerId,
        now_ms: u64,
        reply: Reply<TokenCheck>,
    },
    RecordCosts(Vec<CostLine>, Option<u64>, Reply<()>),
    MarkReported(ReportDue, Reply<()>),
}

/// An answer computed inside the transaction, sent after the commit.
enum Done {
    Job(Reply<JobRecord>, Box<Result<JobRecord, StoreError>>),
    Unit(Reply<()>, Result<(), StoreError>),
    Token(Reply<TokenCheck>, Result<TokenCheck, StoreError>),
    Jobs(Reply<Vec<JobId>>, Result<Vec<JobId>, StoreError>),
}

impl Done {
    fn send(self) {
        // A caller that gave up waiting is not an error of the store.
        match self {
            Done::Job(r, v) => drop(r.send(*v)),
            Done::Unit(r, v) => drop(r.send(v)),
            Done::Token(r, v) => drop(r.send(v)),
            Done::Jobs(r, v) => drop(r.send(v)),
        }
    }

    fn fail(self, e: &str) {
        let err = || StoreError::Corrupt(format!("transaction failed: {e}"));
        match self {
            Done::Job(r, _) => drop(r.send(Err(err()))),
            Done::Unit(r, _) => drop(r.send(Err(err()))),
            Done::Token(r, _) => drop(r.send(Err(err()))),
            Done::Jobs(r, _) => drop(r.send(Err(err()))),
        }
    }
}

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    writes: mpsc::Sender<WriteOp>,
    reads: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date. Must be called inside a tokio runtime.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let mut writer = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations").run(&mut writer).await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(write_loop(writer, rx));
        Ok(SqliteStore { writes: tx, reads })
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

async fn write_loop(mut conn: SqliteConnection, mut rx: mpsc::Receiver<WriteOp>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        apply(&mut conn, batch).await;
    }
}

async fn apply(conn: &mut SqliteConnection, batch: Vec<WriteOp>) {
    let mut done = Vec::with_capacity(batch.len());
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            for op in batch {
                into_done(op).fail(&msg);
            }
            return;
        }
    };
    for op in batch {
        let d = match op {
            WriteOp::Submit(job, reply) => Done::Job(reply, Box::new(submit(&mut tx, job).await)),
            WriteOp::Update(id, update, reply) => {
                Done::Unit(reply, update_job(&mut tx, id, &update).await)
            }
            WriteOp::Apply(writes, reply) => {
                Done::Jobs(reply, apply_writes(&mut tx, &writes).await)
            }
            WriteOp::IssueToken {
                hash,
                worker,
                pool,
                issued_at_ms,
                expires_at_ms,
                reply,
            } => {
                let r = sqlx::query("INSERT INTO bootstrap_tokens (token_hash, worker, pool, issued_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?)")
                    .bind(hash)
                    .bind(worker.0 as i64)
                    .bind(pool)
                    .bind(issued_at_ms as i64)
                    .bind(expires_at_ms as i64)
                    .execute(&mut *tx)
                    .await
                    .map(|_| ())
                    .map_err(StoreError::from);
                Done::Unit(reply, r)
            }
            WriteOp::RedeemToken {
                hash,
                worker,
                now_ms,
                reply,
            } => Done::Token(reply, redeem(&mut tx, hash, worker, now_ms).await),
            WriteOp::RecordCosts(lines, until, reply) => {
                Done::Unit(reply, costs::record(&mut tx, lines, until).await)
            }
            WriteOp::MarkReported(due, reply) => {
                Done::Unit(reply, costs::mark_reported(&mut tx, due).await)
            }
        };
        done.push(d);
    }
    match tx.commit().await {
        Ok(()) => done.into_iter().for_each(Done::send),
        Err(e) => {
            let msg = e.to_string();
            done.into_iter().for_each(|d| d.fail(&msg));
        }
    }
}

/// The reply slot of an operation that never ran (its result is replaced
/// by the failure).
fn into_done(op: WriteOp) -> Done {
    match op {
        WriteOp::Submit(_, r) => Done::Job(r, Box::new(Err(StoreError::Closed))),
        WriteOp::Apply(_, r) => Done::Jobs(r, Err(StoreError::Closed)),
        WriteOp::Update(_, _, r)
        | WriteOp::IssueToken { reply: r, .. }
        | WriteOp::RecordCosts(_, _, r)
        | WriteOp::MarkReported(_, r) => Done::Unit(r, Err(StoreError::Closed)),
        WriteOp::RedeemToken { reply, .. } => Done::Token(reply, Err(StoreError::Closed)),
    }
}

async fn submit(tx: &mut SqliteConnection, job: NewJob) -> Result<JobRecord, StoreError> {
    let requirements =
        serde_json::to_string(&job.requirements).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let timeout_ms = u64::try_from(job.timeout.as_millis()).unwrap_or(u64::MAX);
    let row = sqlx::query(
        "INSERT INTO jobs (tenant, class, requirements, command, timeout_ms, max_attempts, state, submitted_at_ms)
         VALUES (?, ?, ?, ?, ?, ?, 'queued', ?) RETURNING id",
    )
    .bind(&job.tenant)
    .bind(&job.class)
    .bind(&requirements)
    .bind(&job.command)
    .bind(timeout_ms as i64)
    .bind(i64::from(job.max_attempts))
    .bind(job.submitted_at_ms as i64)
    .fetch_one(&mut *tx)
    .await?;
    let id: i64 = row.try_get("id")?;
    Ok(JobRecord {
        id: JobId(id as u64),
        tenant: job.tenant,
        class: job.class,
        requirements: job.requirements,
        command: job.command,
        timeout_ms,
        max_attempts: job.max_attempts,
        status: JobStatus::Queued,
        submitted_at_ms: job.submitted_at_ms,
        attempts: 0,
        worker: None,
        exit_code: None,
        reason: None,
        cost_micros: 0,
        finished_at_ms: None,
    })
}

async fn update_job(
    tx: &mut SqliteConnection,
    id: JobId,
    update: &JobUpdate,
) -> Result<(), StoreError> {
    let key = id.0 as i64;
    let result = match *update {
        JobUpdate::Assigned { worker, attempts } => {
            sqlx::query("UPDATE jobs SET state = 'assigned', worker = ?, attempts = ? WHERE id = ?")
                .bind(worker.0 as i64)
                .bind(i64::from(attempts))
                .bind(key)
                .execute(&mut *tx)
                .await?
        }
        JobUpdate::Running => sqlx::query("UPDATE jobs SET state = 'running' WHERE id = ?").bind(key).execute(&mut *tx).await?,
        JobUpdate::Requeued { attempts } => {
            sqlx::query("UPDATE jobs SET state = 'queued', attempts = ? WHERE id = ?")
                .bind(i64::from(attempts))
                .bind(key)
                .execute(&mut *tx)
                .await?
        }
        JobUpdate::Finished { status, exit_code, ref reason, cost_micros, at_ms } => {
            sqlx::query("UPDATE jobs SET state = ?, exit_code = ?, reason = ?, cost_micros = ?, finished_at_ms = ? WHERE id = ?")
                .bind(status.as_str())
                .bind(exit_code)
                .bind(reason.as_deref())
                .bind(cost_micros)
                .bind(at_ms as i64)
                .bind(key)
                .execute(&mut *tx)
                .await?
        }
    };
    if result.rows_affected() == 0 {
        Err(StoreError::NoSuchJob(id))
    } else {
        Ok(())
    }
}

/// The loop's writes, in order; a write that matches no job is reported,
/// not fatal, so one stale id never costs the rest of the batch.
async fn apply_writes(
    tx: &mut SqliteConnection,
    writes: &[JobWrite],
) -> Result<Vec<JobId>, StoreError> {
    let mut missing = Vec::new();
    for w in writes {
        let outcome = match w {
            JobWrite::Update(id, update) => update_job(tx, *id, update).await,
            JobWrite::Log {
                job,
                attempt,
                chunk,
            } => append_log(tx, *job, *attempt, chunk).await,
        };
        match outcome {
            Ok(()) => {}
            Err(StoreError::NoSuchJob(id)) => missing.push(id),
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

async fn append_log(
    tx: &mut SqliteConnection,
    id: JobId,
    attempt: u32,
    chunk: &[u8],
) -> Result<(), StoreError> {
    let result = sqlx::query(
        "INSERT INTO job_logs (job, seq, chunk, start, attempt)
         SELECT id,
                (SELECT COALESCE(MAX(seq), -1) + 1 FROM job_logs WHERE job = ?1),
                ?2,
                (SELECT COALESCE(MAX(start + length(chunk)), 0) FROM job_logs WHERE job = ?1),
                ?3
         FROM jobs WHERE id = ?1",
    )
    .bind(id.0 as i64)
    .bind(chunk)
    .bind(i64::from(attempt))
    .execute(&mut *tx)
    .await?;
    if result.rows_affected() == 0 {
        Err(StoreError::NoSuchJob(id))
    } else {
        Ok(())
    }
}

async fn redeem(
    tx: &mut SqliteConnection,
    hash: Vec<u8>,
    worker: WorkerId,
    now_ms: u64,
) -> Result<TokenCheck, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT worker, pool, expires_at_ms, used_at_ms FROM bootstrap_tokens WHERE token_hash = ?",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(TokenCheck::Unknown);
    };
    let owner: i64 = row.try_get("worker")?;
    let pool: String = row.try_get("pool")?;
    let expires: i64 = row.try_get("expires_at_ms")?;
    let used: Option<i64> = row.try_get("used_at_ms")?;
    if used.is_some() {
        return Ok(TokenCheck::Reused);
    }
    if owner as u64 != worker.0 {
        return Ok(TokenCheck::WrongWorker);
    }
    if now_ms as i64 >= expires {
        return Ok(TokenCheck::Expired);
    }
    sqlx::query(
        "UPDATE bootstrap_tokens SET used_at_ms = ? WHERE token_hash = ? AND used_at_ms IS NULL",
    )
    .bind(now_ms as i64)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    Ok(TokenCheck::Valid { pool })
}

fn job_from_row(row: &SqliteRow) -> Result<JobRecord, StoreError> {
    let status: String = row.try_get("state")?;
    let requirements: String = row.try_get("requirements")?;
    let opt_u64 = |v: Option<i64>| v.map(|x| x as u64);
    Ok(JobRecord {
        id: JobId(row.try_get::<i64, _>("id")? as u64),
        tenant: row.try_get("tenant")?,
        class: row.try_get("class")?,
        requirements: serde_json::from_str::<RequirementsRecord>(&requirements)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        command: row.try_get("command")?,
        timeout_ms: row.try_get::<i64, _>("timeout_ms")? as u64,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("job state {status:?}")))?,
        submitted_at_ms: row.try_get::<i64, _>("submitted_at_ms")? as u64,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        worker: opt_u64(row.try_get("worker")?).map(WorkerId),
        exit_code: row
            .try_get::<Option<i64>, _>("exit_code")?
            .map(|c| c as i32),
        reason: row.try_get("reason")?,
        cost_micros: row.try_get("cost_micros")?,
        finished_at_ms: opt_u64(row.try_get("finished_at_ms")?),
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn submit(&self, job: NewJob) -> Result<JobRecord, StoreError> {
        self.write(|r| WriteOp::Submit(job, r)).await
    }

    async fn update(&self, id: JobId, update: JobUpdate) -> Result<(), StoreError> {
        self.write(|r| WriteOp::Update(id, update, r)).await
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id.0 as i64)
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR state = ?2) AND id > ?3
             ORDER BY id LIMIT ?4",
        )
        .bind(filter.tenant.as_deref())
        .bind(filter.status.map(JobStatus::as_str))
        .bind(filter.after.map_or(0, |a| a.0 as i64))
        .bind(i64::from(filter.limit.clamp(1, 1000)))
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn live_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state IN ('queued', 'assigned', 'running') ORDER BY id",
        )
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn apply(&self, writes: std::sync::Arc<[JobWrite]>) -> Result<Vec<JobId>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|r| WriteOp::Apply(writes, r)).await
    }

    async fn log_page(
        &self,
        id: JobId,
        offset: u64,
        max_bytes: u64,
    ) -> Result<LogPage, StoreError> {
        // Rows are read one at a time and the read stops at the page's
        // size, so a page costs about `max_bytes` however big the log is.
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query(
            "SELECT start, attempt, chunk FROM job_logs
             WHERE job = ?1 AND start + length(chunk) > ?2 ORDER BY seq",
        )
        .bind(id.0 as i64)
        .bind(offset as i64)
        .fetch(&self.reads);
        let mut page = LogPage::default();
        let mut taken = 0u64;
        while let Some(r) = rows.try_next().await? {
            let start = r.try_get::<i64, _>("start")? as u64;
            if taken >= max_bytes.max(1) {
                page.next = Some(start);
                break;
            }
            let attempt = r.try_get::<Option<i64>, _>("attempt")?.unwrap_or(0) as u32;
            let mut bytes: Vec<u8> = r.try_get("chunk")?;
            let mut at = start;
            if start < offset {
                let skip = usize::try_from(offset - start).unwrap_or(usize::MAX);
                bytes.drain(..skip.min(bytes.len()));
                at = offset;
            }
            taken += bytes.len() as u64;
            page.chunks.push(LogChunk {
                offset: at,
                attempt,
                bytes,
            });
        }
        Ok(page)
    }

    async fn log_size(&self, id: JobId) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(start + length(chunk)), 0) AS size FROM job_logs WHERE job = ?",
        )
        .bind(id.0 as i64)
        .fetch_one(&self.reads)
        .await?;
        Ok(row.try_get::<i64, _>("size")? as u64)
    }

    async fn attempt_log_size(&self, id: JobId, attempt: u32) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(length(chunk)), 0) AS size FROM job_logs WHERE job = ? AND attempt = ?",
        )
        .bind(id.0 as i64)
        .bind(i64::from(attempt))
        .fetch_one(&self.reads)
        .await?;
        Ok(row.try_get::<i64, _>("size")? as u64)
    }

    async fn issue_token(
        &self,
        token: &str,
        worker: WorkerId,
        pool: &str,
        issued_at_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let (hash, pool) = (hash(token), pool.to_string());
        self.write(|reply| WriteOp::IssueToken {
            hash,
            worker,
            pool,
            issued_at_ms,
            expires_at_ms,
            reply,
        })
        .await
    }

    async fn record_costs_until(
        &self,
        lines: Vec<CostLine>,
        booked_until_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        if lines.is_empty() && booked_until_ms.is_none() {
            return Ok(());
        }
        self.write(|r| WriteOp::RecordCosts(lines, booked_until_ms, r))
            .await
    }

    async fn accrued_until(&self, worker: WorkerId) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query(costs::ACCRUED_UNTIL)
            .bind(worker.0 as i64)
            .fetch_one(&self.reads)
            .await?;
        let ms: i64 = row.try_get("until_ms")?;
        Ok(u64::try_from(ms).ok().filter(|ms| *ms > 0))
    }

    async fn cost_lines(&self, from: u64, to: u64) -> Result<Vec<CostLine>, StoreError> {
        let rows = sqlx::query(costs::LINES_BETWEEN)
            .bind(from as i64)
            .bind(to as i64)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(costs::line_from).collect()
    }

    async fn reports_due(&self, before: u64) -> Result<Vec<ReportDue>, StoreError> {
        let rows = sqlx::query(costs::DUE_BEFORE)
            .bind(before as i64)
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(costs::due_from).collect()
    }

    async fn mark_reported(&self, due: ReportDue) -> Result<(), StoreError> {
        self.write(|r| WriteOp::MarkReported(due, r)).await
    }

    async fn max_worker_id(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(worker), 0) AS m FROM bootstrap_tokens")
            .fetch_one(&self.reads)
            .await?;
        Ok(row.try_get::<i64, _>("m")? as u64)
    }

    async fn redeem_token(
        &self,
        token: &str,
        worker: WorkerId,
        now_ms: u64,
    ) -> Result<TokenCheck, StoreError> {
        let hash = hash(token);
        self.write(|reply| WriteOp::RedeemToken {
            hash,
            worker,
            now_ms,
            reply,
        })
        .await
    }
}
