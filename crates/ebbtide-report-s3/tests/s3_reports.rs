//! A simulated day's cost report published to S3 — the real AWS SDK
//! against moto (path-style) — read back in both formats, and checked
//! against the engine's books to the micro-dollar. Also: a bucket that
//! refuses keeps the day local and due, and a re-sent day lands on the
//! same keys.

use std::sync::Arc;
use std::time::Duration;

use ebbtide_core::testkit::{self, Harness};
use ebbtide_core::{Event, JobId, JobOutcome, Market, Micros, PricePerHour, Timestamp};
use ebbtide_cost_report::{
    Day, Publisher, ReportFormat, Spool, name_lines, read_csv, read_parquet,
};
use ebbtide_provider_aws::emulator;
use ebbtide_report_s3::{S3Sink, S3SinkConfig};
use ebbtide_store::{SqliteStore, Store};

const BUCKET: &str = "ebbtide-costs";
const DAY: u64 = 20_785; // 2026-11-28

/// A day of CI traffic through the real engine: two tenants, a spot and an
/// on-demand share, a job every 7 minutes running 5 to 25 minutes, from
/// 00:00 to 23:50 UTC. Returns the engine's books and its ledger lines.
fn simulate_a_day() -> (Harness, Vec<ebbtide_core::LedgerLine>) {
    let mut cfg = testkit::config();
    cfg.tenants.push(testkit::tenant("beta"));
    cfg.pools[0].provider = "aws".into();
    cfg.pools[0].market.on_demand_base = 1;
    cfg.pools[0].market.spot_percent = 60;
    cfg.pools[0].max = 20;
    let mut h = Harness::new(cfg);
    h.now = Timestamp::from_secs(DAY * 86_400);
    h.send(Event::PriceUpdate {
        shape: "m5.large".into(),
        market: Market::Spot,
        zone: None,
        price: PricePerHour(Micros(31_337)),
    });
    let step = Duration::from_secs(10);
    let mut running: Vec<(JobId, Timestamp)> = Vec::new();
    let end = Timestamp::from_secs(DAY * 86_400 + 23 * 3600 + 50 * 60);
    let mut id = 0u64;
    while h.now < end {
        if h.now.as_millis().is_multiple_of(420_000) {
            id += 1;
            h.submit(testkit::job(id, (id % 2) as u32, 1));
            running.push((
                JobId(id),
                h.now + Duration::from_secs(300 + (id * 97) % 1200),
            ));
        }
        let (done, rest): (Vec<_>, Vec<_>) = running.into_iter().partition(|(j, at)| {
            *at <= h.now && h.engine.job_state(*j).and_then(|s| s.worker()).is_some()
        });
        running = rest;
        for (job, _) in done {
            h.finish(job, JobOutcome::Succeeded);
        }
        h.run_for(step, step);
    }
    let lines = h.engine.take_ledger(h.now);
    (h, lines)
}

async fn create_bucket(endpoint: &str) -> aws_sdk_s3::Client {
    let s3 = ebbtide_report_s3::testkit::s3_client(endpoint).await;
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    s3
}

async fn get(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    let object = s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect(key);
    object
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

/// Every key in the bucket, sorted.
async fn keys(s3: &aws_sdk_s3::Client) -> Vec<String> {
    let listed = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list");
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .map(str::to_string)
        .collect();
    keys.sort();
    keys
}

fn sink_config(endpoint: &str, bucket: &str) -> S3SinkConfig {
    S3SinkConfig {
        bucket: bucket.into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.into()),
        path_style: true,
        test_credentials: Some(emulator::test_credentials()),
    }
}

#[tokio::test]
async fn a_simulated_days_report_lands_in_s3_and_matches_the_books_to_the_micro_dollar() {
    let moto = emulator::start().await.expect("moto");
    let s3 = create_bucket(&moto.url).await;
    let (h, lines) = simulate_a_day();
    let books = h.engine.costs().clone();
    assert!(
        lines.iter().all(|l| l.key.day == DAY),
        "the day was simulated inside one UTC day"
    );
    assert!(
        lines.iter().any(|l| l.market == Market::Spot)
            && lines.iter().any(|l| l.market == Market::OnDemand)
    );
    let fleet = books.fleet.to_micros();
    let savings = books.savings();
    assert!(
        fleet > Micros(100_000) && savings > Micros::ZERO,
        "a real day: {fleet}, saved {savings}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("ebbtide.db"))
            .await
            .expect("store"),
    );
    let config = h.engine.config().clone();
    store
        .record_costs(name_lines(lines, &config, &|p| {
            (p == "aws").then(|| "us-east-1".to_string())
        }))
        .await
        .expect("ledger");
    let sink = Arc::new(S3Sink::new(&sink_config(&moto.url, BUCKET)).await);
    let publisher = Publisher::new(
        store.clone(),
        Spool::new(dir.path().join("spool")),
        Some(sink),
        "reports/",
    );
    let summary = publisher.publish_due(Day(DAY + 1)).await.expect("publish");
    assert_eq!(summary.failed, vec![]);
    assert_eq!(summary.published.len(), 1);

    let keys = keys(&s3).await;
    assert_eq!(
        keys,
        vec![
            "reports/daily/2026/11/ebbtide-cost-2026-11-28.csv",
            "reports/daily/2026/11/ebbtide-cost-2026-11-28.parquet",
        ]
    );
    let keep = ["x_Tenant", "PricingCategory", "ServiceName", "RegionId"];
    let csv = read_csv(&get(&s3, &keys[0]).await, &keep).expect("csv reads back");
    let parquet = read_parquet(get(&s3, &keys[1]).await, &keep).expect("parquet reads back");
    let assignments = h.engine.stats().assignments;
    for read in [&csv, &parquet] {
        assert_eq!(
            read.sums["BilledCost"], fleet.0,
            "billed = the engine's fleet cost"
        );
        assert_eq!(read.sums["EffectiveCost"], fleet.0);
        assert_eq!(
            read.sums["ListCost"],
            books.on_demand_equivalent.to_micros().0
        );
        assert_eq!(
            read.sums["x_SavingsVsOnDemand"],
            books.on_demand_equivalent.to_micros().0 - fleet.0
        );
        assert!(
            (savings.0 - read.sums["x_SavingsVsOnDemand"]).abs() <= 1,
            "savings within the one rounding"
        );
        // Row order follows the ledger's lines, which follow when each
        // tenant's jobs happened to run; the set of tenants is the point.
        let mut tenants = read.values["x_Tenant"].clone();
        tenants.sort();
        assert_eq!(tenants, vec!["", "acme", "beta"]);
        assert_eq!(read.values["PricingCategory"].len(), 2);
        assert_eq!(
            read.values["ServiceName"],
            vec!["Amazon Elastic Compute Cloud"]
        );
        assert_eq!(read.values["RegionId"], vec!["us-east-1"]);
        assert_eq!(read.rows, csv.rows);
    }
    println!(
        "simulated day: {assignments} jobs, {} rows, billed {fleet}, list {}, saved {savings}",
        csv.rows,
        books.on_demand_equivalent.to_micros()
    );
    let jobs: u64 = summary.published[0].1.jobs_served;
    assert_eq!(
        jobs, assignments,
        "every job the day ran is served in the report"
    );
}

#[tokio::test]
async fn a_day_s3_refuses_stays_local_and_due_then_lands_on_the_same_keys() {
    let moto = emulator::start().await.expect("moto");
    let (h, lines) = simulate_a_day();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("ebbtide.db"))
            .await
            .expect("store"),
    );
    let config = h.engine.config().clone();
    let named = name_lines(lines, &config, &|_| None);
    let (first_half, second_half) = named.split_at(named.len() / 2);
    store
        .record_costs(first_half.to_vec())
        .await
        .expect("ledger");
    let spool = dir.path().join("spool");
    // The bucket does not exist yet: S3 answers NoSuchBucket (not retried).
    let sink = Arc::new(S3Sink::new(&sink_config(&moto.url, BUCKET)).await);
    let publisher = Publisher::new(store.clone(), Spool::new(&spool), Some(sink), "");
    let refused = publisher.publish_due(Day(DAY + 1)).await.expect("pass");
    assert!(refused.published.is_empty());
    assert_eq!(refused.failed.len(), 1);
    assert!(
        refused.failed[0].1.contains("NoSuchBucket"),
        "{:?}",
        refused.failed
    );
    assert!(
        spool.join("ebbtide-cost-2026-11-28.csv").exists(),
        "kept locally"
    );
    assert!(spool.join("ebbtide-cost-2026-11-28.parquet").exists());

    let s3 = create_bucket(&moto.url).await;
    let sent = publisher.publish_due(Day(DAY + 1)).await.expect("pass");
    assert_eq!(sent.published.len(), 1, "sent later: {sent:?}");
    // The rest of the day's lines arrive late (a flush after a restart).
    store
        .record_costs(second_half.to_vec())
        .await
        .expect("ledger");
    let resent = publisher.publish_due(Day(DAY + 1)).await.expect("pass");
    assert_eq!(resent.published.len(), 1);
    assert_eq!(keys(&s3).await.len(), 2, "the same two keys, rewritten");
    let key = publisher.key(Day(DAY), Day(DAY), ReportFormat::Csv);
    let csv = read_csv(&get(&s3, &key).await, &[]).expect("csv");
    assert_eq!(
        csv.sums["BilledCost"],
        h.engine.costs().fleet.to_micros().0,
        "the whole day"
    );
    assert!(
        publisher
            .publish_due(Day(DAY + 1))
            .await
            .expect("pass")
            .published
            .is_empty()
    );
}
