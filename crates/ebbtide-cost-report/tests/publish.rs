//! Publishing against a real SQLite ledger and an in-memory sink that can
//! be told to fail: the retry, "kept locally and sent later" and same-key
//! rules. (The S3 sink itself is tested against moto in the AWS provider.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::ExponentialBuilder;
use ebbtide_cost_report::*;
use ebbtide_store::{CostLine, SqliteStore, Store, WorkerId};

#[derive(Default)]
struct MemorySink {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Puts still to refuse.
    refuse: AtomicU32,
    puts: AtomicU32,
}

#[async_trait::async_trait]
impl ReportSink for MemorySink {
    fn location(&self) -> String {
        "memory://reports".into()
    }

    async fn put(&self, key: &str, body: Vec<u8>, _: &'static str) -> Result<(), SinkError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError {
                message: "503 Slow Down".into(),
                retryable: true,
            });
        }
        self.objects
            .lock()
            .expect("lock")
            .insert(key.to_string(), body);
        Ok(())
    }
}

fn line(day: u64, worker: u64, tenant: Option<&str>, cost: u128) -> CostLine {
    CostLine {
        day,
        worker: WorkerId(worker),
        tenant: tenant.map(str::to_string),
        instance: Some(format!("i-{worker:04}")),
        pool: "linux".into(),
        provider: "aws".into(),
        region: Some("eu-west-1".into()),
        shape: "m5.large".into(),
        market: if worker % 2 == 1 { "spot" } else { "on-demand" }.into(),
        zone: Some("eu-west-1a".into()),
        capacity: 1,
        cost,
        on_demand_cost: cost * 3,
        slot_millis: 3_600_000,
        idle_millis: if tenant.is_none() { 600_000 } else { 0 },
        jobs_started: u32::from(tenant.is_some()) * 4,
    }
}

fn fast() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(1))
        .with_max_times(2)
}

struct Fixture {
    _dir: tempfile::TempDir,
    spool: std::path::PathBuf,
    store: Arc<SqliteStore>,
    sink: Arc<MemorySink>,
    publisher: Publisher,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("ebbtide.db"))
            .await
            .expect("store"),
    );
    let sink = Arc::new(MemorySink::default());
    let spool = dir.path().join("reports");
    let publisher = Publisher::new(
        store.clone(),
        Spool::new(&spool),
        Some(sink.clone()),
        "/billing/ebbtide/",
    )
    .with_retry(fast());
    Fixture {
        _dir: dir,
        spool,
        store,
        sink,
        publisher,
    }
}

const DAY: Day = Day(20_785); // 2026-11-28

#[tokio::test]
async fn a_finished_day_is_published_once_in_both_formats_and_reads_back_exactly() {
    let f = fixture().await;
    // 0.3 µ$ lines: only a once-per-day rounding gets the total right.
    let lines = vec![
        line(DAY.0, 1, None, 1_080_000),
        line(DAY.0, 1, Some("acme"), 1_080_000_000_000),
        line(DAY.0, 2, Some("beta"), 1_080_000),
        line(DAY.0 + 1, 2, Some("beta"), 99),
    ];
    f.store.record_costs(lines).await.expect("record");
    let summary = f.publisher.publish_due(DAY.next()).await.expect("publish");
    assert_eq!(summary.published.len(), 1, "today is not over");
    let (day, totals) = summary.published[0];
    assert_eq!(day, DAY);
    // 1,080,002,160,000 units / 3,600,000 = 300,000.6 µ$ → 300,000 µ$.
    assert_eq!(totals.billed_micros, 300_000);
    assert_eq!(totals.list_micros, 900_001);
    assert_eq!(totals.jobs_served, 8);

    let objects = f.sink.objects.lock().expect("lock").clone();
    let keys: Vec<_> = objects.keys().cloned().collect();
    assert_eq!(
        keys,
        vec![
            "billing/ebbtide/daily/2026/11/ebbtide-cost-2026-11-28.csv",
            "billing/ebbtide/daily/2026/11/ebbtide-cost-2026-11-28.parquet",
        ]
    );
    let keep = ["PricingCategory", "x_Tenant", "ChargePeriodStart"];
    let csv = read_csv(&objects[&keys[0]], &keep).expect("csv");
    let parquet = read_parquet(objects[&keys[1]].clone(), &keep).expect("parquet");
    for read in [&csv, &parquet] {
        assert_eq!(read.rows, 3);
        assert_eq!(read.sums["BilledCost"], 300_000);
        assert_eq!(read.sums["EffectiveCost"], 300_000);
        assert_eq!(read.sums["ListCost"], 900_001);
        assert_eq!(read.sums["x_SavingsVsOnDemand"], 600_001);
        assert_eq!(read.sums["ConsumedQuantity"], 3_000_000, "3 instance-hours");
        assert_eq!(read.sums["x_IdleSeconds"], 600_000, "600 s, 3 places");
        assert_eq!(read.values["PricingCategory"], vec!["Dynamic", "Standard"]);
        assert_eq!(read.values["x_Tenant"], vec!["", "acme", "beta"]);
    }
    assert_eq!(
        csv.values["ChargePeriodStart"],
        vec!["2026-11-28T00:00:00Z"]
    );
    assert!(f.spool.join("ebbtide-cost-2026-11-28.csv").exists());
    assert!(f.spool.join("ebbtide-cost-2026-11-28.parquet").exists());

    let again = f.publisher.publish_due(DAY.next()).await.expect("publish");
    assert!(again.published.is_empty(), "nothing changed, nothing sent");
}

#[tokio::test]
async fn a_report_the_sink_refuses_is_kept_locally_and_sent_later_to_the_same_key() {
    let f = fixture().await;
    f.store
        .record_costs(vec![line(DAY.0, 1, Some("acme"), 36_000_000)])
        .await
        .expect("record");
    // More refusals than one pass retries (3 tries).
    f.sink.refuse.store(5, Ordering::SeqCst);
    let first = f.publisher.publish_due(DAY.next()).await.expect("pass");
    assert!(first.published.is_empty());
    assert_eq!(first.failed.len(), 1);
    assert!(
        first.failed[0].1.contains("503 Slow Down"),
        "{:?}",
        first.failed
    );
    assert_eq!(
        f.sink.puts.load(Ordering::SeqCst),
        3,
        "one try and two retries"
    );
    assert!(f.sink.objects.lock().expect("lock").is_empty());
    let kept = std::fs::read(f.spool.join("ebbtide-cost-2026-11-28.csv")).expect("kept locally");
    assert_eq!(read_csv(&kept, &[]).expect("csv").sums["BilledCost"], 10);

    // A late line for that day arrives; the next pass sends the day, whole.
    f.store
        .record_costs(vec![line(DAY.0, 2, Some("beta"), 72_000_000)])
        .await
        .expect("record");
    let second = f.publisher.publish_due(DAY.next()).await.expect("pass");
    assert_eq!(second.published.len(), 1, "{second:?}");
    assert_eq!(second.published[0].1.billed_micros, 30);
    let objects = f.sink.objects.lock().expect("lock").clone();
    assert_eq!(objects.len(), 2, "one key per format, rewritten in place");
    let csv_key = f.publisher.key(DAY, DAY, ReportFormat::Csv);
    assert_eq!(
        read_csv(&objects[&csv_key], &[]).expect("csv").sums["BilledCost"],
        30
    );
    assert!(
        f.publisher
            .publish_due(DAY.next())
            .await
            .expect("pass")
            .published
            .is_empty()
    );
}

#[tokio::test]
async fn a_range_report_adds_up_its_daily_reports() {
    let f = fixture().await;
    let lines: Vec<_> = (0..3)
        .flat_map(|d| {
            (1..=4).map(move |w| {
                line(
                    DAY.0 + d,
                    w,
                    Some("acme"),
                    1_000_000 + u128::from(w as u32 * 7),
                )
            })
        })
        .collect();
    f.store.record_costs(lines).await.expect("record");
    let range = f
        .publisher
        .publish_range(DAY, Day(DAY.0 + 2))
        .await
        .expect("range");
    let daily: i64 = f
        .publisher
        .publish_due(Day(DAY.0 + 3))
        .await
        .expect("daily")
        .published
        .iter()
        .map(|(_, t)| t.billed_micros)
        .sum();
    assert_eq!(range.billed_micros, daily);
    assert_eq!(daily, 3, "four 0.28 µ$ lines a day: 1 µ$ a day");
    let key = f.publisher.key(DAY, Day(DAY.0 + 2), ReportFormat::Parquet);
    assert_eq!(
        key,
        "billing/ebbtide/range/ebbtide-cost-2026-11-28_2026-11-30.parquet"
    );
    assert!(f.sink.objects.lock().expect("lock").contains_key(&key));
}

#[tokio::test]
async fn an_on_demand_local_report_does_not_stop_the_days_scheduled_upload() {
    let f = fixture().await;
    f.store
        .record_costs(vec![line(DAY.0, 1, Some("acme"), 36_000_000)])
        .await
        .expect("record");
    let local_only = Publisher::new(f.store.clone(), Spool::new(f.spool.join("adhoc")), None, "");
    let totals = local_only
        .publish_range(DAY, DAY)
        .await
        .expect("local report");
    assert_eq!(totals.billed_micros, 10);
    assert!(f.spool.join("adhoc/ebbtide-cost-2026-11-28.csv").exists());
    let scheduled = f.publisher.publish_due(DAY.next()).await.expect("pass");
    assert_eq!(
        scheduled.published.len(),
        1,
        "the day is still sent to the sink"
    );
    assert_eq!(f.sink.objects.lock().expect("lock").len(), 2);
}
