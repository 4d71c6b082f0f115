//! `ebbtide cost report`: a cost report for any range of days, on demand.
//!
//! Reads the durable ledger in the scheduler's data directory (SQLite
//! allows this while the scheduler runs; lines still in the scheduler's
//! memory — at most `cost_reports.ledger_flush` of accrual — are not in it
//! yet), writes CSV and Parquet and, with `--upload`, sends them to the
//! configured bucket. A one-day report uses the daily key, so uploading it
//! replaces that day's scheduled report with the same content.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use ebbtide_cost_report::{Day, Publisher, ReportFormat};
use ebbtide_store::SqliteStore;

/// Arguments of `ebbtide cost report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Cluster configuration (TOML): where the ledger is, where reports go.
    #[arg(long, default_value = "examples/local.toml")]
    config: PathBuf,
    /// First UTC day, YYYY-MM-DD.
    #[arg(long)]
    from: Day,
    /// Last UTC day (inclusive), YYYY-MM-DD.
    #[arg(long)]
    to: Day,
    /// Directory to write the report to (default: the configured spool).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also upload to `[cost_reports.s3]`.
    #[arg(long)]
    upload: bool,
}

/// `ebbtide cost …`.
#[derive(clap::Subcommand)]
pub enum CostCommand {
    /// Build the cost report of a range of days (CSV and Parquet, FOCUS columns).
    Report(ReportArgs),
}

/// Runs `ebbtide cost …`.
pub fn run(command: CostCommand) -> anyhow::Result<()> {
    let CostCommand::Report(a) = command;
    if a.from > a.to {
        bail!("--from {} is after --to {}", a.from, a.to);
    }
    let config = crate::plugins::load(&a.config)?;
    if a.upload && config.cost_reports.s3.is_none() {
        bail!("--upload needs [cost_reports.s3] in {}", a.config.display());
    }
    let db = config.server.data_dir.join("ebbtide.db");
    if !db.exists() {
        bail!(
            "no ledger at {} (server.data_dir of {})",
            db.display(),
            a.config.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Arc::new(
            SqliteStore::open(&db)
                .await
                .with_context(|| format!("opening {}", db.display()))?,
        );
        let sink = match a.upload {
            true => crate::plugins::report_sink(&config).await,
            false => None,
        };
        let publisher = ebbtide_server::cost_report_publisher(&config, store, a.out.clone(), sink);
        let totals = publisher.publish_range(a.from, a.to).await?;
        let dir = a
            .out
            .unwrap_or_else(|| config.cost_reports.spool_dir.clone());
        for format in [ReportFormat::Csv, ReportFormat::Parquet] {
            println!(
                "{}",
                dir.join(Publisher::file_name(a.from, a.to, format))
                    .display()
            );
            if a.upload {
                println!(
                    "  uploaded to {}/{}",
                    publisher.location(),
                    publisher.key(a.from, a.to, format)
                );
            }
        }
        let dollars = |micros: i64| ebbtide_core::Micros(micros).to_string();
        println!(
            "{}..{}: {} rows, {} jobs, billed {}, on-demand list {}, saved {}",
            a.from,
            a.to,
            totals.rows,
            totals.jobs_served,
            dollars(totals.billed_micros),
            dollars(totals.list_micros),
            dollars(totals.list_micros - totals.billed_micros)
        );
        Ok(())
    })
}
