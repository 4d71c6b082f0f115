//! The SQLite store, on a real database file.

use std::collections::BTreeSet;
use std::time::Duration;

use ebbtide_store::*;

fn new_job(tenant: &str, n: u64) -> NewJob {
    NewJob {
        tenant: tenant.into(),
        class: "high".into(),
        requirements: RequirementsRecord {
            labels: vec!["linux".into()],
            cpu_millis: 500,
            ..Default::default()
        },
        command: format!("echo {n}"),
        timeout: Duration::from_secs(60),
        max_attempts: 3,
        submitted_at_ms: 1_000 + n,
    }
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("ebbtide.db"))
        .await
        .expect("store opens")
}

#[tokio::test]
async fn a_submitted_job_is_durable_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let store = open(&dir).await;
        let job = store.submit(new_job("acme", 1)).await.expect("submit");
        assert_eq!(job.status, JobStatus::Queued);
        job.id
    };
    let store = open(&dir).await;
    let back = store.get(id).await.expect("get").expect("still there");
    assert_eq!(back.command, "echo 1");
    assert_eq!(back.requirements.labels, vec!["linux".to_string()]);
    assert_eq!(store.live_jobs().await.expect("live").len(), 1);
}

#[tokio::test]
async fn concurrent_submissions_get_distinct_ids_and_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let mut tasks = Vec::new();
    for n in 0..1000 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.submit(new_job("acme", n)).await.map(|j| j.id)
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.expect("task").expect("submit"));
    }
    assert_eq!(ids.len(), 1000);
    assert_eq!(store.live_jobs().await.expect("live").len(), 1000);
}

#[tokio::test]
async fn updates_move_a_job_through_its_life_and_finished_jobs_are_not_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let a = store.submit(new_job("acme", 1)).await.expect("submit").id;
    let b = store.submit(new_job("acme", 2)).await.expect("submit").id;
    store
        .update(
            a,
            JobUpdate::Assigned {
                worker: WorkerId(7),
                attempts: 1,
            },
        )
        .await
        .expect("assigned");
    store.update(a, JobUpdate::Running).await.expect("running");
    store
        .update(
            a,
            JobUpdate::Finished {
                status: JobStatus::Succeeded,
                exit_code: Some(0),
                reason: None,
                cost_micros: 42,
                at_ms: 9_000,
            },
        )
        .await
        .expect("finished");
    let done = store.get(a).await.expect("get").expect("present");
    assert_eq!(
        (done.status, done.exit_code, done.worker, done.cost_micros),
        (JobStatus::Succeeded, Some(0), Some(WorkerId(7)), 42)
    );
    let live: Vec<JobId> = store
        .live_jobs()
        .await
        .expect("live")
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(live, vec![b]);
}

#[tokio::test]
async fn updating_an_unknown_job_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let err = store
        .update(JobId(999), JobUpdate::Running)
        .await
        .expect_err("no such job");
    assert!(matches!(err, StoreError::NoSuchJob(JobId(999))), "{err}");
}

#[tokio::test]
async fn listing_is_per_tenant_filtered_and_paged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    for n in 0..5 {
        store.submit(new_job("acme", n)).await.expect("submit");
        store.submit(new_job("globex", n)).await.expect("submit");
    }
    let page1 = store
        .list(&JobFilter {
            tenant: Some("acme".into()),
            limit: 3,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page1.len(), 3);
    assert!(page1.iter().all(|j| j.tenant == "acme"));
    let page2 = store
        .list(&JobFilter {
            tenant: Some("acme".into()),
            after: Some(page1[2].id),
            limit: 3,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page2.len(), 2);
    let running = store
        .list(&JobFilter {
            tenant: Some("acme".into()),
            status: Some(JobStatus::Running),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(running.is_empty());
}

#[tokio::test]
async fn logs_come_back_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let id = store.submit(new_job("acme", 1)).await.expect("submit").id;
    for part in ["hello ", "from ", "a job\n"] {
        store
            .append_log(id, part.as_bytes().to_vec())
            .await
            .expect("append");
    }
    assert_eq!(store.logs(id).await.expect("logs"), b"hello from a job\n");
    assert!(matches!(
        store.append_log(JobId(404), b"x".to_vec()).await,
        Err(StoreError::NoSuchJob(_))
    ));
}

#[tokio::test]
async fn the_log_size_of_an_attempt_counts_only_that_attempts_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    let id = store.submit(new_job("acme", 1)).await.expect("submit").id;
    let log = |attempt: u32, text: &str| JobWrite::Log {
        job: id,
        attempt,
        chunk: text.as_bytes().to_vec(),
    };
    let writes = [
        log(1, "first try\n"),
        log(0, "[scheduler's note]\n"),
        log(2, "again"),
        log(2, "!\n"),
    ];
    let missing = store.apply(writes.into()).await.expect("apply");
    assert!(missing.is_empty());
    assert_eq!(store.attempt_log_size(id, 1).await.expect("size"), 10);
    assert_eq!(store.attempt_log_size(id, 2).await.expect("size"), 7);
    assert_eq!(store.attempt_log_size(id, 3).await.expect("size"), 0);
    assert_eq!(store.log_size(id).await.expect("size"), 10 + 19 + 7);
}

#[tokio::test]
async fn a_bootstrap_token_is_valid_once_for_its_worker_before_it_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir).await;
    store
        .issue_token("s3cr3t-token-a", WorkerId(1), "cloud", 1_000, 10_000)
        .await
        .expect("issue");
    store
        .issue_token("s3cr3t-token-b", WorkerId(2), "cloud", 1_000, 10_000)
        .await
        .expect("issue");
    assert_eq!(
        store
            .redeem_token("s3cr3t-token-a", WorkerId(9), 1)
            .await
            .expect("redeem"),
        TokenCheck::WrongWorker
    );
    assert_eq!(
        store
            .redeem_token("s3cr3t-token-a", WorkerId(1), 1)
            .await
            .expect("redeem"),
        TokenCheck::Valid {
            pool: "cloud".into()
        }
    );
    assert_eq!(
        store
            .redeem_token("s3cr3t-token-a", WorkerId(1), 2)
            .await
            .expect("redeem"),
        TokenCheck::Reused
    );
    assert_eq!(
        store
            .redeem_token("s3cr3t-token-b", WorkerId(2), 10_000)
            .await
            .expect("redeem"),
        TokenCheck::Expired
    );
    assert_eq!(
        store
            .redeem_token("forged", WorkerId(1), 1)
            .await
            .expect("redeem"),
        TokenCheck::Unknown
    );
}

#[tokio::test]
async fn the_database_never_holds_a_token_in_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir).await;
        store
            .issue_token(
                "plaintext-credential-xyz",
                WorkerId(1),
                "cloud",
                1_000,
                10_000,
            )
            .await
            .expect("issue");
    }
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("plaintext-credential-xyz"));
    }
}
