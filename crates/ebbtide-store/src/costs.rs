//! The durable cost ledger and the bookkeeping of published reports.
//!
//! The engine hands over its ledger lines every few seconds; they are added
//! here (an upsert that sums amounts), and the line's day is marked changed
//! so its report is (re)published. A report is marked published only for
//! the revision it was built from, so lines that arrive while it uploads
//! make the day due again rather than being silently left out.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::{StoreError, WorkerId};

/// One ledger line, with names resolved for a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostLine {
    /// UTC day number (days since the Unix epoch).
    pub day: u64,
    /// The worker the instance was.
    pub worker: WorkerId,
    /// The tenant whose jobs used the instance; `None` for the idle share.
    pub tenant: Option<String>,
    /// The provider's instance id, when known.
    pub instance: Option<String>,
    /// Pool name.
    pub pool: String,
    /// Provider name as configured (`aws`, `docker`, `local`, …).
    pub provider: String,
    /// Cloud region, where the provider has one.
    pub region: Option<String>,
    /// Instance shape (instance type): the report's SKU.
    pub shape: String,
    /// `spot` or `on-demand`.
    pub market: String,
    /// Availability zone, where known.
    pub zone: Option<String>,
    /// Slots per instance.
    pub capacity: u32,
    /// Spent, in micro-dollar-milliseconds per hour (exact).
    pub cost: u128,
    /// The on-demand list equivalent, same unit.
    pub on_demand_cost: u128,
    /// Slot-milliseconds covered.
    pub slot_millis: u64,
    /// Milliseconds the instance ran no job (idle line only).
    pub idle_millis: u64,
    /// Jobs of this tenant started on the instance that day.
    pub jobs_started: u32,
}

/// A day whose report must be (re)published, and the revision to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportDue {
    /// UTC day number.
    pub day: u64,
    /// The day's revision when it was found due.
    pub revision: u64,
}

fn to_db(units: u128, what: &str) -> Result<i64, StoreError> {
    i64::try_from(units).map_err(|_| {
        StoreError::Corrupt(format!(
            "{what} of {units} units does not fit a ledger line"
        ))
    })
}

/// Adds lines to the ledger, marks their days changed and, with
/// `booked_until_ms`, records that the fleet's cost is booked up to then —
/// in the same transaction, so the mark never runs ahead of the lines.
pub(crate) async fn record(
    tx: &mut SqliteConnection,
    lines: Vec<CostLine>,
    booked_until_ms: Option<u64>,
) -> Result<(), StoreError> {
    // Check every amount before writing any: the caller retries a refused
    // batch, and a half-written one would then be counted twice.
    let amounts = lines
        .iter()
        .map(|l| {
            Ok((
                to_db(l.cost, "cost")?,
                to_db(l.on_demand_cost, "on-demand cost")?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut days: Vec<u64> = Vec::new();
    for (l, (cost, on_demand_cost)) in lines.into_iter().zip(amounts) {
        sqlx::query(
            "INSERT INTO cost_ledger (day, worker, tenant, instance, pool, provider, region, shape, market, zone,
                                      capacity, cost, on_demand_cost, slot_ms, idle_ms, jobs)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (day, worker, tenant) DO UPDATE SET
                 instance = COALESCE(excluded.instance, instance),
                 zone = COALESCE(excluded.zone, zone),
                 cost = cost + excluded.cost,
                 on_demand_cost = on_demand_cost + excluded.on_demand_cost,
                 slot_ms = slot_ms + excluded.slot_ms,
                 idle_ms = idle_ms + excluded.idle_ms,
                 jobs = jobs + excluded.jobs",
        )
        .bind(l.day as i64)
        .bind(l.worker.0 as i64)
        .bind(l.tenant.as_deref().unwrap_or(""))
        .bind(l.instance.as_deref())
        .bind(&l.pool)
        .bind(&l.provider)
        .bind(l.region.as_deref())
        .bind(&l.shape)
        .bind(&l.market)
        .bind(l.zone.as_deref())
        .bind(i64::from(l.capacity))
        .bind(cost)
        .bind(on_demand_cost)
        .bind(l.slot_millis as i64)
        .bind(l.idle_millis as i64)
        .bind(i64::from(l.jobs_started))
        .execute(&mut *tx)
        .await?;
        if !days.contains(&l.day) {
            days.push(l.day);
        }
    }
    if let Some(until) = booked_until_ms {
        sqlx::query(
            "INSERT INTO ledger_marks (id, booked_until_ms) VALUES (1, ?)
             ON CONFLICT (id) DO UPDATE SET booked_until_ms = MAX(booked_until_ms, excluded.booked_until_ms)",
        )
        .bind(until as i64)
        .execute(&mut *tx)
        .await?;
    }
    for day in days {
        sqlx::query(
            "INSERT INTO cost_days (day, revision) VALUES (?, 1)
             ON CONFLICT (day) DO UPDATE SET revision = revision + 1",
        )
        .bind(day as i64)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Confirms that the report of `due.day` was published as of `due.revision`.
pub(crate) async fn mark_reported(
    tx: &mut SqliteConnection,
    due: ReportDue,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE cost_days SET reported_revision = MAX(reported_revision, ?) WHERE day = ?")
        .bind(due.revision as i64)
        .bind(due.day as i64)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The SQL that reads lines of a day range, in report order.
pub(crate) const LINES_BETWEEN: &str =
    "SELECT day, worker, tenant, instance, pool, provider, region, shape, market, zone,
        capacity, cost, on_demand_cost, slot_ms, idle_ms, jobs
   FROM cost_ledger WHERE day >= ? AND day <= ? ORDER BY day, worker, tenant";

/// The SQL that finds from when an adopted worker's cost is unbooked: the
/// later of the last ledger mark and the worker's launch (token issue).
pub(crate) const ACCRUED_UNTIL: &str = "SELECT MAX(
        COALESCE((SELECT booked_until_ms FROM ledger_marks WHERE id = 1), 0),
        COALESCE((SELECT MAX(issued_at_ms) FROM bootstrap_tokens WHERE worker = ?), 0)
    ) AS until_ms";

/// The SQL that finds days whose report is due, before a day.
pub(crate) const DUE_BEFORE: &str = "SELECT day, revision FROM cost_days WHERE revision > reported_revision AND day < ? ORDER BY day";

fn unsigned(row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(column)?;
    u64::try_from(v)
        .map_err(|_| StoreError::Corrupt(format!("negative {column} in the cost ledger: {v}")))
}

/// Decodes a ledger row.
pub(crate) fn line_from(row: &SqliteRow) -> Result<CostLine, StoreError> {
    let tenant: String = row.try_get("tenant")?;
    Ok(CostLine {
        day: unsigned(row, "day")?,
        worker: WorkerId(unsigned(row, "worker")?),
        tenant: (!tenant.is_empty()).then_some(tenant),
        instance: row.try_get("instance")?,
        pool: row.try_get("pool")?,
        provider: row.try_get("provider")?,
        region: row.try_get("region")?,
        shape: row.try_get("shape")?,
        market: row.try_get("market")?,
        zone: row.try_get("zone")?,
        capacity: u32::try_from(unsigned(row, "capacity")?).unwrap_or(u32::MAX),
        cost: u128::from(unsigned(row, "cost")?),
        on_demand_cost: u128::from(unsigned(row, "on_demand_cost")?),
        slot_millis: unsigned(row, "slot_ms")?,
        idle_millis: unsigned(row, "idle_ms")?,
        jobs_started: u32::try_from(unsigned(row, "jobs")?).unwrap_or(u32::MAX),
    })
}

/// Decodes a due day.
pub(crate) fn due_from(row: &SqliteRow) -> Result<ReportDue, StoreError> {
    Ok(ReportDue {
        day: unsigned(row, "day")?,
        revision: unsigned(row, "revision")?,
    })
}
