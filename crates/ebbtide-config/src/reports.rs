//! `[cost_reports]`: where the daily cost reports go.
//!
//! Reports are always written to a local spool (by default
//! `<data_dir>/cost-reports`); with `[cost_reports.s3]` they are also
//! uploaded. The bucket's region defaults to `[providers.aws].region`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The file's `[cost_reports]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CostReportsSection {
    spool_dir: Option<String>,
    #[serde(with = "humantime_serde", default = "default_ledger_flush")]
    ledger_flush: Duration,
    #[serde(with = "humantime_serde", default = "default_publish_interval")]
    publish_interval: Duration,
    s3: Option<S3Section>,
}

impl Default for CostReportsSection {
    fn default() -> Self {
        CostReportsSection {
            spool_dir: None,
            ledger_flush: default_ledger_flush(),
            publish_interval: default_publish_interval(),
            s3: None,
        }
    }
}

fn default_ledger_flush() -> Duration {
    Duration::from_secs(10)
}

fn default_publish_interval() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Section {
    bucket: String,
    #[serde(default)]
    prefix: String,
    region: Option<String>,
    /// For an emulator in tests only.
    endpoint: Option<String>,
    #[serde(default)]
    path_style: bool,
}

/// Cost report settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostReportsConfig {
    /// Where every report is written first (and kept).
    pub spool_dir: PathBuf,
    /// How often the engine's ledger lines are made durable: at most this
    /// much accrual is re-booked from the instances' state after a crash.
    pub ledger_flush: Duration,
    /// How often finished days are published (and failed uploads retried).
    pub publish_interval: Duration,
    /// Upload target, if any.
    pub s3: Option<S3ReportSettings>,
}

/// `[cost_reports.s3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3ReportSettings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix (no leading or trailing `/` needed).
    pub prefix: String,
    /// The bucket's region.
    pub region: String,
    /// Endpoint override (an S3-compatible store or an emulator).
    pub endpoint: Option<String>,
    /// Path-style addressing.
    pub path_style: bool,
}

/// S3's bucket naming rules, the ones a typo breaks.
fn bucket_problem(name: &str) -> Option<&'static str> {
    if !(3..=63).contains(&name.len()) {
        return Some("must be 3 to 63 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Some("may hold only lowercase letters, digits, '-' and '.'");
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(name.chars().next()) || !edge(name.chars().last()) {
        return Some("must begin and end with a letter or digit");
    }
    None
}

/// The provider whose region an S3 bucket defaults to.
const S3_HOME_PROVIDER: &str = "aws";

/// Checks the section and resolves its defaults.
pub(crate) fn to_config(
    section: CostReportsSection,
    data_dir: &std::path::Path,
    providers: &crate::ProvidersConfig,
    issue: &mut impl FnMut(String, String),
) -> CostReportsConfig {
    // S3 is AWS's: a bucket with no region of its own is taken to live
    // where the AWS provider launches.
    let aws_region = providers
        .get(S3_HOME_PROVIDER)
        .and_then(|p| p.settings.region());
    if section.ledger_flush < Duration::from_secs(1) {
        issue(
            "cost_reports.ledger_flush".into(),
            "must be at least 1s".into(),
        );
    }
    if section.publish_interval < Duration::from_secs(10) {
        issue(
            "cost_reports.publish_interval".into(),
            "must be at least 10s".into(),
        );
    }
    let s3 = section.s3.map(|s| {
        if let Some(problem) = bucket_problem(&s.bucket) {
            issue(
                "cost_reports.s3.bucket".into(),
                format!("{:?} is not an S3 bucket name: {problem}", s.bucket),
            );
        }
        let region = s.region.or_else(|| aws_region.map(str::to_string));
        if region.is_none() {
            issue(
                "cost_reports.s3.region".into(),
                "give the bucket's region (or configure [providers.aws])".into(),
            );
        }
        S3ReportSettings {
            bucket: s.bucket,
            prefix: s.prefix.trim_matches('/').to_string(),
            region: region.unwrap_or_default(),
            endpoint: s.endpoint,
            path_style: s.path_style,
        }
    });
    CostReportsConfig {
        spool_dir: section
            .spool_dir
            .map_or_else(|| data_dir.join("cost-reports"), PathBuf::from),
        ledger_flush: section.ledger_flush,
        publish_interval: section.publish_interval,
        s3,
    }
}
