//! The local provider with real processes (a shell that sleeps stands in
//! for the agent).

use ebbtide_core::{InstanceId, Market, WorkerId};
use ebbtide_provider::{LaunchRequest, Provider, Secret, WorkerLaunch};
use ebbtide_provider_local::{LocalConfig, LocalProvider};

fn provider(dir: &std::path::Path, cluster: &str) -> LocalProvider {
    LocalProvider::new(LocalConfig {
        cluster: cluster.into(),
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "sleep 30".into()],
        state_dir: dir.to_path_buf(),
    })
    .expect("provider")
}

fn request(workers: &[u64]) -> LaunchRequest {
    LaunchRequest {
        cluster: "c1".into(),
        pool: "local".into(),
        shape: "process".into(),
        cpu_millis: 1000,
        memory_mib: 512,
        market: Market::OnDemand,
        scheduler_url: "http://127.0.0.1:1".into(),
        workers: workers
            .iter()
            .map(|w| WorkerLaunch {
                worker: WorkerId(*w),
                bootstrap_token: Secret::new(format!("token-for-{w}")),
            })
            .collect(),
    }
}

#[tokio::test]
async fn launched_processes_are_listed_survive_a_provider_restart_and_terminate_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = provider(dir.path(), "c1");
    let launched = p.launch(request(&[1, 2, 3])).await.expect("launch");
    assert_eq!(launched.len(), 3);
    let listed = p.list().await.expect("list");
    assert_eq!(listed.iter().filter(|i| i.running).count(), 3);

    let restarted = provider(dir.path(), "c1");
    let again = restarted.list().await.expect("list after restart");
    assert_eq!(again.len(), 3, "found from the state directory");
    assert!(again.iter().all(|i| i.pool == "local"));

    let ids: Vec<InstanceId> = launched.iter().map(|l| l.instance.clone()).collect();
    restarted.terminate(&ids).await.expect("terminate");
    restarted
        .terminate(&ids)
        .await
        .expect("terminate twice is fine");
    restarted
        .terminate(&[InstanceId("local-999-1".into())])
        .await
        .expect("unknown id is fine");
    assert!(restarted.list().await.expect("list").is_empty());
}

#[tokio::test]
async fn another_clusters_instances_are_never_listed_or_touched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = provider(dir.path(), "c1");
    let theirs = provider(dir.path(), "c2");
    let mut req = request(&[1]);
    req.cluster = "c2".into();
    let launched = theirs.launch(req).await.expect("launch");
    assert!(ours.list().await.expect("list").is_empty());
    ours.terminate(&[launched[0].instance.clone()])
        .await
        .expect("terminate");
    assert!(
        theirs.list().await.expect("list")[0].running,
        "c1 must not stop c2's process"
    );
    theirs
        .terminate(&[launched[0].instance.clone()])
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn the_bootstrap_token_is_in_the_environment_not_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = provider(dir.path(), "c1");
    let launched = p.launch(request(&[7])).await.expect("launch");
    let pid = launched[0]
        .instance
        .0
        .rsplit('-')
        .next()
        .expect("pid")
        .to_string();
    // Until the child has exec'd, /proc shows the parent's image: wait for
    // the agent program's own environment.
    let start = std::time::Instant::now();
    let environ = loop {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        if String::from_utf8_lossy(&environ).contains("EBBTIDE_CLUSTER=")
            || start.elapsed() > std::time::Duration::from_secs(5)
        {
            break environ;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("sleep"),
        "the agent program is running"
    );
    assert!(!String::from_utf8_lossy(&cmdline).contains("token-for-7"));
    assert!(String::from_utf8_lossy(&environ).contains("EBBTIDE_BOOTSTRAP_TOKEN=token-for-7"));
    p.terminate(&[launched[0].instance.clone()])
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn a_missing_program_is_a_permanent_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = LocalProvider::new(LocalConfig {
        cluster: "c1".into(),
        program: "/nonexistent/ebbtide".into(),
        args: vec![],
        state_dir: dir.path().to_path_buf(),
    })
    .expect("provider");
    let err = p.launch(request(&[1])).await.expect_err("no program");
    assert!(
        matches!(err, ebbtide_provider::ProviderError::Permanent(_)),
        "{err}"
    );
}
