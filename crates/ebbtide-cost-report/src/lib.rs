//! # ebbtide-cost-report
//!
//! Daily cost reports built from the scheduler's cost ledger, in the
//! columns of the FinOps FOCUS specification (so they load into the same
//! tools as a cloud bill) plus Ebbtide's own `x_` columns, written as CSV
//! and Parquet, kept in a local spool and published to a sink (S3, in the
//! AWS provider crate) idempotently: the same day always lands on the same
//! key.
//!
//! Money stays exact up to the report: the ledger holds the engine's exact
//! units, and a report rounds each day's running total once, so the rows of
//! a day add up to that day's ledger to the micro-dollar.

mod columns;
mod day;
mod ledger;
mod publish;
mod readback;
mod report;

pub use columns::{ReportFormat, to_csv, to_parquet};
pub use day::{Day, DayError};
pub use ledger::name_lines;
pub use publish::{PublishError, PublishSummary, Publisher, ReportSink, SinkError, Spool};
pub use readback::{ReadBack, ReadBackError, read_csv, read_parquet};
pub use report::{Report, ReportRow, ReportTotals};

/// What can go wrong while building or encoding a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing CSV failed.
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Writing Parquet failed.
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}
