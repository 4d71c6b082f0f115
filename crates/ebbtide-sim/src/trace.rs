//! Job traces: Ebbtide's native CSV and the Travis CI month.
//!
//! Native format (header required, one job per row):
//!
//! | column | meaning |
//! |---|---|
//! | `submit_s` | arrival, seconds since the epoch (may be fractional) |
//! | `duration_s` | run time in seconds |
//! | `tenant` | tenant name |
//! | `class` | priority class name (as in the config) |
//! | `labels` | optional, `;`-separated labels the job needs |
//! | `cpu_millis`, `memory_mib` | optional resource requests |

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// One job to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceJob {
    /// Arrival time, ms since the epoch.
    pub submit_ms: u64,
    /// How long it runs once started.
    pub duration: Duration,
    /// Tenant name.
    pub tenant: String,
    /// Priority class name.
    pub class: String,
    /// Labels it needs.
    pub labels: Vec<String>,
    /// CPU it requests.
    pub cpu_millis: u32,
    /// Memory it requests.
    pub memory_mib: u32,
}

/// A loaded trace, sorted by arrival.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The jobs.
    pub jobs: Vec<TraceJob>,
    /// Input rows that could not be used, with why (reported, not hidden).
    pub skipped: Vec<String>,
}

/// Reading a trace failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: String,
        /// The reader's error.
        source: csv::Error,
    },
    /// A row does not follow the format.
    #[error("{path}, line {line}: {message}")]
    Row {
        /// The file.
        path: String,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct NativeRow {
    submit_s: f64,
    duration_s: f64,
    tenant: String,
    class: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    cpu_millis: Option<u32>,
    #[serde(default)]
    memory_mib: Option<u32>,
}

/// The rows of a CSV file with a header, each with its 1-based line number
/// or an error naming the file and line.
fn rows<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<impl Iterator<Item = Result<(u64, T), TraceError>>, TraceError> {
    let shown = path.display().to_string();
    let reader = csv::Reader::from_path(path).map_err(|source| TraceError::Csv {
        path: shown.clone(),
        source,
    })?;
    Ok(reader
        .into_deserialize::<T>()
        .enumerate()
        .map(move |(i, row)| {
            let line = i as u64 + 2;
            row.map(|r| (line, r)).map_err(|e| TraceError::Row {
                path: shown.clone(),
                line,
                message: e.to_string(),
            })
        }))
}

/// Reads a native-format trace.
pub fn read_native(path: &Path) -> Result<Trace, TraceError> {
    let shown = path.display().to_string();
    let mut trace = Trace::default();
    for row in rows::<NativeRow>(path)? {
        let (line, row) = row?;
        if !(row.submit_s.is_finite()
            && row.submit_s >= 0.0
            && row.duration_s.is_finite()
            && row.duration_s >= 0.0)
        {
            return Err(TraceError::Row {
                path: shown,
                line,
                message: "submit_s and duration_s must be non-negative numbers".into(),
            });
        }
        trace.jobs.push(TraceJob {
            submit_ms: (row.submit_s * 1000.0).round() as u64,
            duration: Duration::from_millis((row.duration_s * 1000.0).round() as u64),
            tenant: row.tenant,
            class: row.class,
            labels: row
                .labels
                .split(';')
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            cpu_millis: row.cpu_millis.unwrap_or(0),
            memory_mib: row.memory_mib.unwrap_or(0),
        });
    }
    trace.jobs.sort_by_key(|j| j.submit_ms);
    Ok(trace)
}

#[derive(Deserialize)]
struct TravisRow {
    project: String,
    start_epoch_s: u64,
    duration_s: String,
    num_jobs: String,
    event_type: String,
}

/// How Travis event types map to priority classes.
#[derive(Debug, Clone)]
pub struct TravisClasses {
    /// Class for `push` and `pull_request` builds.
    pub interactive: String,
    /// Class for `cron` and `api` builds.
    pub scheduled: String,
}

/// Reads the Travis CI month (`travis_2020-09.csv`) as the data README
/// prescribes: one job per matrix entry, arriving at the build's start,
/// each running `duration_s / num_jobs` seconds; the project is the tenant.
pub fn read_travis(path: &Path, classes: &TravisClasses) -> Result<Trace, TraceError> {
    let mut trace = Trace::default();
    for row in rows::<TravisRow>(path)? {
        let (line, row) = row?;
        let (Ok(total), Ok(n)) = (row.duration_s.parse::<u64>(), row.num_jobs.parse::<u64>())
        else {
            trace.skipped.push(format!(
                "line {line}: build of {} has no duration or job count",
                row.project
            ));
            continue;
        };
        if n == 0 {
            trace
                .skipped
                .push(format!("line {line}: build of {} has no jobs", row.project));
            continue;
        }
        let class = match row.event_type.as_str() {
            "cron" | "api" => classes.scheduled.clone(),
            _ => classes.interactive.clone(),
        };
        let each = Duration::from_millis(total * 1000 / n);
        for _ in 0..n {
            trace.jobs.push(TraceJob {
                submit_ms: row.start_epoch_s * 1000,
                duration: each,
                tenant: row.project.clone(),
                class: class.clone(),
                labels: Vec::new(),
                cpu_millis: 0,
                memory_mib: 0,
            });
        }
    }
    trace.jobs.sort_by_key(|j| j.submit_ms);
    Ok(trace)
}

impl Trace {
    /// Distinct tenant names, in first-arrival order.
    pub fn tenants(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        self.jobs
            .iter()
            .filter(|j| seen.insert(j.tenant.as_str()))
            .map(|j| j.tenant.clone())
            .collect()
    }

    /// Keeps only jobs arriving in the first `d` of the trace.
    pub fn truncate_to(&mut self, d: Duration) {
        if let Some(first) = self.jobs.first().map(|j| j.submit_ms) {
            let end = first + d.as_millis() as u64;
            self.jobs.retain(|j| j.submit_ms < end);
        }
    }
}
