//! The cost ledger and report bookkeeping, on a real database file.

use ebbtide_store::*;

fn line(day: u64, worker: u64, tenant: Option<&str>, cost: u128) -> CostLine {
    CostLine {
        day,
        worker: WorkerId(worker),
        tenant: tenant.map(str::to_string),
        instance: None,
        pool: "linux".into(),
        provider: "aws".into(),
        region: Some("eu-west-1".into()),
        shape: "m5.large".into(),
        market: "spot".into(),
        zone: None,
        capacity: 1,
        cost,
        on_demand_cost: cost * 3,
        slot_millis: 1_000,
        idle_millis: if tenant.is_none() { 1_000 } else { 0 },
        jobs_started: u32::from(tenant.is_some()),
    }
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("ebbtide.db"))
        .await
        .expect("store opens")
}

#[tokio::test]
async fn lines_of_the_same_key_add_up_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir).await;
        let mut first = line(20_000, 7, Some("acme"), 1_000);
        first.instance = Some("i-7".into());
        store
            .record_costs(vec![first, line(20_000, 7, None, 5)])
            .await
            .expect("record");
        let mut second = line(20_000, 7, Some("acme"), 2_500);
        second.zone = Some("eu-west-1a".into());
        store
            .record_costs(vec![second, line(20_001, 7, Some("acme"), 9)])
            .await
            .expect("record");
    }
    let store = open(&dir).await;
    let lines = store.cost_lines(20_000, 20_000).await.expect("lines");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].tenant, None, "the idle line comes first");
    assert_eq!(lines[0].idle_millis, 1_000);
    let acme = &lines[1];
    assert_eq!(acme.cost, 3_500);
    assert_eq!(acme.on_demand_cost, 10_500);
    assert_eq!(acme.slot_millis, 2_000);
    assert_eq!(acme.jobs_started, 2);
    assert_eq!(
        acme.instance.as_deref(),
        Some("i-7"),
        "a later line without an instance keeps it"
    );
    assert_eq!(acme.zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(
        store.cost_lines(20_000, 20_001).await.expect("lines").len(),
        3
    );
}

#[tokio::test]
async fn a_day_is_due_until_its_latest_revision_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    store
        .record_costs(vec![line(30, 1, Some("a"), 1), line(31, 1, Some("a"), 1)])
        .await
        .expect("record");
    let due = store.reports_due(31).await.expect("due");
    assert_eq!(
        due,
        vec![ReportDue {
            day: 30,
            revision: 1
        }],
        "today is never due"
    );
    // A late line for day 30 arrives while its report is being published.
    store
        .record_costs(vec![line(30, 2, None, 1)])
        .await
        .expect("record");
    store.mark_reported(due[0]).await.expect("mark");
    assert_eq!(
        store.reports_due(31).await.expect("due"),
        vec![ReportDue {
            day: 30,
            revision: 2
        }],
        "the late line makes the day due again"
    );
    store
        .mark_reported(ReportDue {
            day: 30,
            revision: 2,
        })
        .await
        .expect("mark");
    assert!(store.reports_due(31).await.expect("due").is_empty());
    assert_eq!(
        store.reports_due(32).await.expect("due").len(),
        1,
        "day 31 once it is over"
    );
}

#[tokio::test]
async fn a_cost_too_large_for_a_line_is_refused_with_its_amount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let err = store
        .record_costs(vec![
            line(1, 1, Some("a"), 1),
            line(1, 1, None, u128::from(u64::MAX)),
        ])
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("18446744073709551615 units"),
        "{err}"
    );
    assert!(
        store.cost_lines(0, 10).await.expect("lines").is_empty(),
        "a refused batch writes nothing, so its retry counts nothing twice"
    );
}

#[tokio::test]
async fn an_adopted_worker_is_unbooked_from_the_later_of_the_last_mark_and_its_launch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    assert_eq!(store.accrued_until(WorkerId(5)).await.expect("query"), None);
    store
        .issue_token("token-five-0123456789", WorkerId(5), "linux", 1_000, 9_000)
        .await
        .expect("token");
    store
        .issue_token("token-six-0123456789", WorkerId(6), "linux", 7_000, 9_000)
        .await
        .expect("token");
    assert_eq!(
        store.accrued_until(WorkerId(5)).await.expect("query"),
        Some(1_000)
    );
    store
        .record_costs_until(vec![line(0, 5, None, 10)], Some(5_000))
        .await
        .expect("record");
    assert_eq!(
        store.accrued_until(WorkerId(5)).await.expect("query"),
        Some(5_000)
    );
    assert_eq!(
        store.accrued_until(WorkerId(6)).await.expect("query"),
        Some(7_000),
        "launched after the mark: from its launch"
    );
    store
        .record_costs_until(vec![], Some(3_000))
        .await
        .expect("record");
    assert_eq!(
        store.accrued_until(WorkerId(5)).await.expect("query"),
        Some(5_000),
        "the mark never moves back"
    );
}
