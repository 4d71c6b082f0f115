//! Ledger lines → report rows, rounded so every day adds up exactly.

use ebbtide_store::CostLine;

use crate::day::Day;

/// Ledger units (micro-dollar-milliseconds per hour) in one micro-dollar.
const UNITS_PER_MICRO: u128 = 3_600_000;

/// One row of a cost report: one instance's cost for one tenant (or its
/// idle share) on one day, with what the FOCUS columns need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// The charge period (a UTC day).
    pub day: Day,
    /// The tenant, or `None` for the instance's idle share.
    pub tenant: Option<String>,
    /// Pool name.
    pub pool: String,
    /// Provider name as configured.
    pub provider: String,
    /// Region, where the provider has one.
    pub region: Option<String>,
    /// Availability zone, where known.
    pub zone: Option<String>,
    /// The provider's instance id, or the worker name when none is known.
    pub resource_id: String,
    /// The worker's name (`worker-N`).
    pub resource_name: String,
    /// Instance shape: the SKU.
    pub shape: String,
    /// Whether it ran on spot (FOCUS `Dynamic`) or on-demand (`Standard`).
    pub spot: bool,
    /// Billed (= effective) cost in micro-dollars.
    pub billed_micros: i64,
    /// The on-demand list cost of the same time, in micro-dollars.
    pub list_micros: i64,
    /// Instance-hours covered, in millionths of an hour.
    pub micro_hours: i64,
    /// Milliseconds the instance had no job (idle rows only).
    pub idle_millis: u64,
    /// Jobs of this tenant the instance started that day.
    pub jobs_served: u32,
}

impl ReportRow {
    /// What running on spot saved against on-demand list prices.
    pub fn savings_micros(&self) -> i64 {
        self.list_micros - self.billed_micros
    }
}

/// The totals of a report, for logs, the command line and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportTotals {
    /// Sum of billed cost, micro-dollars.
    pub billed_micros: i64,
    /// Sum of list (on-demand) cost, micro-dollars.
    pub list_micros: i64,
    /// Jobs served.
    pub jobs_served: u64,
    /// Rows.
    pub rows: usize,
}

/// A cost report over a range of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// First day covered.
    pub from: Day,
    /// Last day covered (inclusive).
    pub to: Day,
    /// Rows ordered by day, worker and tenant.
    pub rows: Vec<ReportRow>,
}

/// Rounds a day's running total once: each row gets the growth of the
/// rounded-down running sum, so a day's rows add up to its exact total
/// rounded down, never drifting by a micro-dollar per row.
#[derive(Default)]
struct RunningRound {
    units: u128,
    reported: u128,
}

impl RunningRound {
    fn take(&mut self, units: u128) -> i64 {
        self.units += units;
        let due = self.units / UNITS_PER_MICRO;
        let step = due - self.reported;
        self.reported = due;
        i64::try_from(step).unwrap_or(i64::MAX)
    }
}

impl Report {
    /// Builds the report of `from..=to` from the ledger lines of those days
    /// (in the store's order: day, worker, tenant).
    pub fn build(from: Day, to: Day, lines: &[CostLine]) -> Report {
        let mut rows = Vec::with_capacity(lines.len());
        let mut day = None;
        let (mut billed, mut list) = (RunningRound::default(), RunningRound::default());
        for l in lines.iter().filter(|l| (from.0..=to.0).contains(&l.day)) {
            if day != Some(l.day) {
                day = Some(l.day);
                billed = RunningRound::default();
                list = RunningRound::default();
            }
            let worker = format!("worker-{}", l.worker.0);
            let capacity = u128::from(l.capacity.max(1));
            // Instance-ms = slot-ms / capacity, and 3.6 ms is a micro-hour.
            let micro_hours = u128::from(l.slot_millis) * 1_000 / (capacity * 3_600);
            rows.push(ReportRow {
                day: Day(l.day),
                tenant: l.tenant.clone(),
                pool: l.pool.clone(),
                provider: l.provider.clone(),
                region: l.region.clone(),
                zone: l.zone.clone(),
                resource_id: l.instance.clone().unwrap_or_else(|| worker.clone()),
                resource_name: worker,
                shape: l.shape.clone(),
                spot: l.market == ebbtide_core::Market::Spot.name(),
                billed_micros: billed.take(l.cost),
                list_micros: list.take(l.on_demand_cost),
                micro_hours: i64::try_from(micro_hours).unwrap_or(i64::MAX),
                idle_millis: l.idle_millis,
                jobs_served: l.jobs_started,
            });
        }
        Report { from, to, rows }
    }

    /// Sums of the report's rows.
    pub fn totals(&self) -> ReportTotals {
        self.rows.iter().fold(
            ReportTotals {
                rows: self.rows.len(),
                ..ReportTotals::default()
            },
            |mut t, r| {
                t.billed_micros += r.billed_micros;
                t.list_micros += r.list_micros;
                t.jobs_served += u64::from(r.jobs_served);
                t
            },
        )
    }

    /// Whether it covers a single day (a daily report).
    pub fn is_daily(&self) -> bool {
        self.from == self.to
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebbtide_store::WorkerId;

    fn line(day: u64, worker: u64, tenant: Option<&str>, cost: u128) -> CostLine {
        CostLine {
            day,
            worker: WorkerId(worker),
            tenant: tenant.map(str::to_string),
            instance: worker.is_multiple_of(2).then(|| format!("i-{worker}")),
            pool: "linux".into(),
            provider: "aws".into(),
            region: Some("eu-west-1".into()),
            shape: "m5.large".into(),
            market: "spot".into(),
            zone: Some("eu-west-1a".into()),
            capacity: 2,
            cost,
            on_demand_cost: cost * 3,
            slot_millis: 7_200_000,
            idle_millis: 0,
            jobs_started: 1,
        }
    }

    #[test]
    fn a_days_rows_add_up_to_its_exact_total_rounded_once() {
        // Each line is 0.7 µ$: rounding rows one by one would report 0.
        let lines: Vec<_> = (0..10).map(|w| line(5, w, Some("a"), 2_520_000)).collect();
        let report = Report::build(Day(5), Day(5), &lines);
        assert_eq!(report.totals().billed_micros, 7, "10 × 0.7 µ$ = 7 µ$");
        assert_eq!(report.totals().list_micros, 21);
        assert!(report.rows.iter().all(|r| r.billed_micros <= 1));
    }

    #[test]
    fn each_day_rounds_on_its_own_so_a_range_agrees_with_its_daily_reports() {
        let lines = vec![line(5, 1, None, 1_800_000), line(6, 1, None, 1_800_000)];
        let range = Report::build(Day(5), Day(6), &lines);
        let daily: i64 = [5, 6]
            .into_iter()
            .map(|d| Report::build(Day(d), Day(d), &lines).totals().billed_micros)
            .sum();
        assert_eq!(range.totals().billed_micros, daily);
        assert_eq!(
            daily, 0,
            "half a micro-dollar on each day rounds down on each day"
        );
    }

    #[test]
    fn a_row_names_its_instance_or_else_its_worker_and_counts_instance_hours() {
        let report = Report::build(Day(5), Day(5), &[line(5, 1, None, 0), line(5, 2, None, 0)]);
        assert_eq!(report.rows[0].resource_id, "worker-1");
        assert_eq!(report.rows[1].resource_id, "i-2");
        // 2 slot-hours on a 2-slot instance = 1 instance-hour.
        assert_eq!(report.rows[0].micro_hours, 1_000_000);
        assert_eq!(report.rows[0].savings_micros(), 0);
    }

    #[test]
    fn lines_outside_the_range_are_left_out() {
        let report = Report::build(Day(5), Day(5), &[line(4, 1, None, 9), line(5, 1, None, 9)]);
        assert_eq!(report.rows.len(), 1);
        assert!(report.is_daily());
    }
}
