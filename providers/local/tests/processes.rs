//! The local provider with real processes (a shell that sleeps stands in
//! for the agent).

use ebbtide_core::{InstanceId, Market};
use std::sync::Arc;

use ebbtide_provider::{LaunchRequest, Provider, conformance};
use ebbtide_provider_local::{LocalConfig, LocalProvider};

fn provider(dir: &std::path::Path, cluster: &str) -> LocalProvider {
    LocalProvider::new(LocalConfig {
        cluster: cluster.into(),
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "sleep 30".into()],
        state_dir: dir.to_path_buf(),
        work_root: dir.join("work"),
        job_user: None,
        orphan_timeout: std::time::Duration::from_secs(60),
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
        zones: Vec::new(),
        scheduler_url: "http://127.0.0.1:1".into(),
        workers: conformance::launches(workers),
    }
}

/// The shared conformance suite over real processes; the foreign
/// instance is another cluster's process in the same state directory.
struct Local {
    dir: tempfile::TempDir,
}

#[async_trait::async_trait]
impl conformance::Harness for Local {
    async fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(provider(self.dir.path(), "c1"))
    }

    fn request(&self, workers: &[u64]) -> LaunchRequest {
        request(workers)
    }

    async fn failing_launches(&self) -> Vec<conformance::FailingLaunch> {
        let missing = LocalProvider::new(LocalConfig {
            cluster: "c1".into(),
            program: "/nonexistent/ebbtide".into(),
            args: vec![],
            state_dir: self.dir.path().join("missing"),
            work_root: self.dir.path().join("missing-work"),
            job_user: None,
            orphan_timeout: std::time::Duration::from_secs(60),
        })
        .expect("provider");
        vec![conformance::FailingLaunch {
            provider: Arc::new(missing),
            request: request(&[1]),
            kind: "permanent",
        }]
    }

    async fn create_foreign(&self) -> InstanceId {
        let mut req = request(&[1]);
        req.cluster = "c2".into();
        provider(self.dir.path(), "c2")
            .launch(req)
            .await
            .expect("foreign launch")[0]
            .instance
            .clone()
    }

    async fn foreign_alive(&self, instance: &InstanceId) -> bool {
        provider(self.dir.path(), "c2")
            .list()
            .await
            .expect("list")
            .iter()
            .any(|i| &i.instance == instance && i.running)
    }

    async fn remove_foreign(&self, instance: &InstanceId) {
        let _ = provider(self.dir.path(), "c2")
            .terminate(std::slice::from_ref(instance))
            .await;
    }
}

#[tokio::test]
async fn the_local_provider_passes_the_conformance_suite() {
    let harness = Local {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    conformance::run(&harness).await.expect("conformance");
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
    assert!(!String::from_utf8_lossy(&cmdline).contains("token-7"));
    assert!(String::from_utf8_lossy(&environ).contains("EBBTIDE_BOOTSTRAP_TOKEN=token-7"));
    p.terminate(&[launched[0].instance.clone()])
        .await
        .expect("cleanup");
}
