//! Writing reports to the local spool and publishing them to a sink.
//!
//! Every report is first written to the spool directory (atomically, by
//! rename), so the operator always has a local copy even with no bucket
//! configured or the bucket unreachable. A day is marked published in the
//! store only once every format reached the sink; until then it stays due
//! and the next pass rebuilds it from the durable ledger and sends it again,
//! to the same key. So no day is ever lost, and a re-sent day replaces its
//! earlier copy instead of adding a second one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use ebbtide_store::{Store, StoreError};

use crate::ReportError;
use crate::columns::ReportFormat;
use crate::day::Day;
use crate::report::{Report, ReportTotals};

/// Both formats, in the order they are written and sent.
const FORMATS: [ReportFormat; 2] = [ReportFormat::Csv, ReportFormat::Parquet];

/// A failed upload.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What went wrong, for the log (never a credential).
    pub message: String,
    /// Whether trying again may help (throttling, 5xx, network).
    pub retryable: bool,
}

/// Where published reports go (an S3 bucket and prefix, in production).
#[async_trait::async_trait]
pub trait ReportSink: Send + Sync {
    /// Where this sink writes, for logs (`s3://bucket/prefix`).
    fn location(&self) -> String;
    /// Stores `body` under `key`, replacing what was there.
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(), SinkError>;
}

/// Why publishing could not even start or finish its bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The store failed.
    #[error("reading the cost ledger: {0}")]
    Store(#[from] StoreError),
    /// A report could not be encoded.
    #[error(transparent)]
    Encode(#[from] ReportError),
    /// The report is in the spool but the sink refused it (after retries).
    #[error("the report was written to {spool} but not uploaded to {location}: {message}")]
    Upload {
        /// The spool directory holding the report.
        spool: PathBuf,
        /// The sink.
        location: String,
        /// The sink's last error.
        message: String,
    },
    /// The spool could not be written.
    #[error("writing {path}: {source}")]
    Spool {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The local directory every report is written to first.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// A spool in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Spool {
        Spool { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` as `name`, replacing it atomically.
    pub async fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, PublishError> {
        let fail = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PublishError::Spool { path, source }
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(fail(&self.dir))?;
        let path = self.dir.join(name);
        let partial = self.dir.join(format!(".{name}.partial"));
        tokio::fs::write(&partial, bytes)
            .await
            .map_err(fail(&partial))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(fail(&path))?;
        Ok(path)
    }
}

/// What one publishing pass did.
#[derive(Debug, Clone, Default)]
pub struct PublishSummary {
    /// Days built (and sent, when there is a sink), with their totals.
    pub published: Vec<(Day, ReportTotals)>,
    /// Days whose upload failed; they stay due for the next pass.
    pub failed: Vec<(Day, String)>,
}

/// Builds, spools and publishes reports.
pub struct Publisher {
    store: Arc<dyn Store>,
    spool: Spool,
    sink: Option<Arc<dyn ReportSink>>,
    prefix: String,
    retry: ExponentialBuilder,
}

impl Publisher {
    /// A publisher over the ledger in `store`; `sink: None` keeps reports in
    /// the spool only. `prefix` is prepended to every key.
    pub fn new(
        store: Arc<dyn Store>,
        spool: Spool,
        sink: Option<Arc<dyn ReportSink>>,
        prefix: &str,
    ) -> Publisher {
        Publisher {
            store,
            spool,
            sink,
            prefix: prefix.trim_matches('/').to_string(),
            retry: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(4)
                .with_jitter(),
        }
    }

    /// Overrides the retry policy of one upload (tests make it fast).
    pub fn with_retry(mut self, retry: ExponentialBuilder) -> Publisher {
        self.retry = retry;
        self
    }

    /// The file name of a report: one name per day (or range), so a day
    /// re-sent replaces itself.
    pub fn file_name(from: Day, to: Day, format: ReportFormat) -> String {
        let ext = format.extension();
        if from == to {
            format!("ebbtide-cost-{from}.{ext}")
        } else {
            format!("ebbtide-cost-{from}_{to}.{ext}")
        }
    }

    /// The sink key of a report: `PREFIX/daily/YYYY/MM/ebbtide-cost-DAY.EXT`
    /// for a day, `PREFIX/range/ebbtide-cost-FROM_TO.EXT` for a range.
    pub fn key(&self, from: Day, to: Day, format: ReportFormat) -> String {
        let name = Self::file_name(from, to, format);
        let folder = if from == to {
            let date = from.date();
            format!("daily/{:04}/{:02}", date.year(), u8::from(date.month()))
        } else {
            "range".to_string()
        };
        if self.prefix.is_empty() {
            format!("{folder}/{name}")
        } else {
            format!("{}/{folder}/{name}", self.prefix)
        }
    }

    /// Where reports go, for logs.
    pub fn location(&self) -> String {
        self.sink
            .as_ref()
            .map_or_else(|| self.spool.dir.display().to_string(), |s| s.location())
    }

    /// Publishes every finished day (before `today`) whose ledger changed
    /// since it was last published. An upload that fails after its retries
    /// leaves the day due; the others go on.
    pub async fn publish_due(&self, today: Day) -> Result<PublishSummary, PublishError> {
        let mut summary = PublishSummary::default();
        for due in self.store.reports_due(today.0).await? {
            let day = Day(due.day);
            match self.publish(day, day).await {
                Ok(totals) => {
                    self.store.mark_reported(due).await?;
                    summary.published.push((day, totals));
                }
                Err(Failure::Upload(message)) => summary.failed.push((day, message)),
                Err(Failure::Local(e)) => return Err(e),
            }
        }
        Ok(summary)
    }

    /// Builds the report of `from..=to`, writes it to the spool and, with a
    /// sink, uploads it. Returns its totals. It never marks a day
    /// published: the scheduled pass still sends every due day (to the same
    /// key, so an on-demand upload of a day is simply rewritten), and a
    /// report written only locally must not stop that day's upload.
    pub async fn publish_range(&self, from: Day, to: Day) -> Result<ReportTotals, PublishError> {
        match self.publish(from, to).await {
            Ok(totals) => Ok(totals),
            Err(Failure::Local(e)) => Err(e),
            Err(Failure::Upload(message)) => Err(PublishError::Upload {
                spool: self.spool.dir.clone(),
                location: self.location(),
                message,
            }),
        }
    }

    async fn publish(&self, from: Day, to: Day) -> Result<ReportTotals, Failure> {
        let lines = self
            .store
            .cost_lines(from.0, to.0)
            .await
            .map_err(|e| Failure::Local(e.into()))?;
        let report = Report::build(from, to, &lines);
        let mut encoded = Vec::with_capacity(FORMATS.len());
        for format in FORMATS {
            let bytes = format
                .encode(&report)
                .map_err(|e| Failure::Local(e.into()))?;
            let name = Self::file_name(from, to, format);
            self.spool
                .write(&name, &bytes)
                .await
                .map_err(Failure::Local)?;
            encoded.push((format, bytes));
        }
        if let Some(sink) = &self.sink {
            for (format, bytes) in encoded {
                let key = self.key(from, to, format);
                let put = || sink.put(&key, bytes.clone(), format.content_type());
                put.retry(self.retry)
                    .when(|e: &SinkError| e.retryable)
                    .notify(|e, wait| tracing::warn!(%key, error = %e, ?wait, "cost report upload failed; retrying"))
                    .await
                    .map_err(|e| Failure::Upload(format!("{key}: {e}")))?;
            }
        }
        Ok(report.totals())
    }
}

/// Why one report was not published.
enum Failure {
    /// The sink refused it (after retries): the day stays due.
    Upload(String),
    /// Reading the ledger or writing the spool failed: stop the pass.
    Local(PublishError),
}
