//! The cost ledger's way from the engine to S3.
//!
//! The control loop takes the engine's ledger lines every
//! `cost_reports.ledger_flush` and hands them to [`LedgerWriter`], which
//! makes them durable in the store off the loop (lines it cannot write are
//! kept and retried; amounts add up, so order never matters). The way to
//! the writer is bounded: while the store is behind, the loop leaves the
//! lines in the engine, whose ledger sums them per (day, worker, tenant) —
//! its size is bounded by the fleet, not by how long the store stalls. A separate
//! task publishes every finished day whose ledger changed, every
//! `cost_reports.publish_interval` and once at start-up (days left due by
//! an earlier run go first).

use std::sync::Arc;
use std::time::Duration;

use ebbtide_config::ClusterConfig;
use ebbtide_core::{Engine, Timestamp};
use ebbtide_cost_report::{Day, Publisher, ReportSink, Spool, name_lines};
use ebbtide_store::{CostLine, Store};
use tokio::sync::{mpsc, watch};

/// Makes ledger lines durable without ever blocking the control loop.
pub(crate) struct LedgerWriter {
    /// Lines, and the instant the fleet's cost is booked up to with them.
    lines: mpsc::Sender<(Vec<CostLine>, u64)>,
    /// Each provider's region, where it has one (the reports' RegionId).
    regions: std::collections::HashMap<String, String>,
}

impl LedgerWriter {
    /// Starts the writer task over `store`.
    pub(crate) fn start(store: Arc<dyn Store>, config: &ClusterConfig) -> LedgerWriter {
        let (tx, rx) = mpsc::channel(LEDGER_BATCHES);
        tokio::spawn(write_loop(store, rx));
        LedgerWriter {
            lines: tx,
            regions: config
                .providers
                .iter()
                .filter_map(|(name, p)| Some((name.to_string(), p.settings.region()?.to_string())))
                .collect(),
        }
    }

    /// Takes the engine's lines booked up to `now`, named for the store.
    pub(crate) fn take(&self, engine: &mut Engine, now: Timestamp) -> Vec<CostLine> {
        let lines = engine.take_ledger(now);
        let region = |provider: &str| self.regions.get(provider).cloned();
        name_lines(lines, engine.config(), &region)
    }

    /// Queues the engine's new lines for the store, with `now` as the
    /// instant the whole fleet is booked up to (sent even with no lines:
    /// an idle fleet's mark still moves).
    pub(crate) fn flush(&self, engine: &mut Engine, now: Timestamp) {
        let permit = match self.lines.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => {
                tracing::warn!(
                    "the cost ledger writer is behind; lines stay in the engine until it catches up"
                );
                return;
            }
            Err(mpsc::error::TrySendError::Closed(())) => {
                tracing::error!(
                    "the ledger writer stopped; cost lines since the last flush are not durable"
                );
                return;
            }
        };
        permit.send((self.take(engine, now), now.as_millis()));
    }
}

/// Flushes waiting for the writer; beyond this the engine keeps the lines.
const LEDGER_BATCHES: usize = 4;

async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(Vec<CostLine>, u64)>) {
    let mut pending: Vec<CostLine> = Vec::new();
    let mut mark: Option<u64> = None;
    loop {
        let next = if pending.is_empty() {
            rx.recv().await
        } else {
            // Retry what failed at the next batch or after 5 s, whichever first.
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap_or(Some((Vec::new(), 0)))
        };
        let Some((batch, until)) = next else {
            break;
        };
        pending.extend(batch);
        mark = mark.max(Some(until)).filter(|m| *m > 0);
        let lines = std::mem::take(&mut pending);
        let count = lines.len();
        if let Err(e) = store.record_costs_until(lines.clone(), mark).await {
            crate::telemetry::ledger_write_failed();
            tracing::error!(error = %e, lines = count, "cost ledger write failed; keeping the lines to retry");
            pending = lines;
        }
    }
    if (!pending.is_empty() || mark.is_some())
        && let Err(e) = store.record_costs_until(pending, mark).await
    {
        tracing::error!(error = %e, "cost ledger lines lost at shutdown");
    }
}

/// Builds the publisher `[cost_reports]` describes: reports written to
/// `spool` (default: the configured spool) and, with a `sink` (the one
/// `[cost_reports.s3]` names), uploaded.
pub fn publisher(
    config: &ClusterConfig,
    store: Arc<dyn Store>,
    spool: Option<std::path::PathBuf>,
    sink: Option<Arc<dyn ReportSink>>,
) -> Publisher {
    let reports = &config.cost_reports;
    let prefix = reports.s3.as_ref().map_or("", |s| s.prefix.as_str());
    let spool = spool.unwrap_or_else(|| reports.spool_dir.clone());
    Publisher::new(store, Spool::new(spool), sink, prefix)
}

/// Publishes due days now and every `interval` until shutdown.
pub(crate) async fn publish_loop(
    publisher: Publisher,
    store: Arc<dyn Store>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = every.tick() => publish_once(&publisher, store.as_ref()).await,
        }
    }
}

async fn publish_once(publisher: &Publisher, store: &dyn Store) {
    let today = Day::of_millis(crate::now().as_millis());
    match publisher.publish_due(today).await {
        Ok(summary) => {
            for (day, totals) in &summary.published {
                tracing::info!(
                    %day,
                    billed_micros = totals.billed_micros,
                    list_micros = totals.list_micros,
                    jobs = totals.jobs_served,
                    rows = totals.rows,
                    to = %publisher.location(),
                    "cost report published"
                );
            }
            for (day, error) in &summary.failed {
                tracing::warn!(%day, %error, "cost report upload failed; kept locally, will retry");
            }
            let due = store
                .reports_due(today.0)
                .await
                .map_or(0, |d| d.len() as u64);
            crate::telemetry::cost_reports(
                summary.published.len() as u64,
                summary.failed.len() as u64,
                due,
            );
        }
        Err(e) => tracing::error!(error = %e, "cost report publishing failed"),
    }
}
