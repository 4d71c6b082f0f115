//! The Docker provider against the real Docker engine of this machine: the
//! shared conformance suite, resource limits and labels.
//!
//! The image is imported from local files with a stand-in agent (a shell
//! script that sleeps), so these tests need no `ebbtide` binary and no
//! registry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, RemoveContainerOptions, StartContainerOptions,
};
use ebbtide_core::{InstanceId, Market, PricePerHour};
use ebbtide_provider::{LaunchRequest, Provider, conformance, labels};
use ebbtide_provider_docker::{DockerConfig, DockerProvider, ImageSource};

/// A stand-in agent: sleeps, whatever its arguments.
fn stand_in_agent() -> PathBuf {
    let dir = std::env::temp_dir().join("ebbtide-docker-conformance");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("agent.sh");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 60\n").expect("script");
    path
}

fn config(cluster: &str) -> DockerConfig {
    DockerConfig {
        cluster: cluster.into(),
        socket: None,
        network: "none".into(),
        image: ImageSource::Import {
            agent: stand_in_agent(),
            tools: vec!["/bin/sh".into(), "/bin/sleep".into()],
        },
        prices: HashMap::from([(
            "small".to_string(),
            PricePerHour(ebbtide_core::Micros(12_000)),
        )]),
        stop_grace_secs: 1,
    }
}

fn request(cluster: &str, workers: &[u64]) -> LaunchRequest {
    LaunchRequest {
        cluster: cluster.into(),
        pool: "containers".into(),
        shape: "small".into(),
        cpu_millis: 500,
        memory_mib: 64,
        market: Market::OnDemand,
        zones: Vec::new(),
        scheduler_url: "http://127.0.0.1:1".into(),
        workers: conformance::launches(workers),
    }
}

struct Harness {
    cluster: String,
}

#[async_trait::async_trait]
impl conformance::Harness for Harness {
    async fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(
            DockerProvider::connect(config(&self.cluster))
                .await
                .expect("docker"),
        )
    }

    fn request(&self, workers: &[u64]) -> LaunchRequest {
        request(&self.cluster, workers)
    }

    async fn failing_launches(&self) -> Vec<conformance::FailingLaunch> {
        // The engine refuses a memory limit below its minimum (6 MiB).
        let mut r = request(&self.cluster, &[77]);
        r.memory_mib = 1;
        vec![conformance::FailingLaunch {
            provider: self.provider().await,
            request: r,
            kind: "permanent",
        }]
    }

    fn has_offerings(&self) -> bool {
        true
    }

    async fn create_foreign(&self) -> InstanceId {
        let docker = Docker::connect_with_local_defaults().expect("docker");
        let image = DockerProvider::connect(config(&self.cluster))
            .await
            .expect("docker")
            .image()
            .to_string();
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(format!("not-ebbtide-{}", self.cluster)),
                    ..Default::default()
                }),
                ContainerCreateBody {
                    image: Some(image),
                    cmd: Some(vec!["/bin/sleep".into(), "60".into()]),
                    // Another cluster's label: still not ours.
                    labels: Some(HashMap::from([(
                        labels::CLUSTER.to_string(),
                        format!("{}-other", self.cluster),
                    )])),
                    ..Default::default()
                },
            )
            .await
            .expect("create foreign");
        docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .expect("start foreign");
        InstanceId(created.id)
    }

    async fn foreign_alive(&self, instance: &InstanceId) -> bool {
        let docker = Docker::connect_with_local_defaults().expect("docker");
        docker
            .inspect_container(&instance.0, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.state?.running)
            .unwrap_or(false)
    }

    async fn remove_foreign(&self, instance: &InstanceId) {
        let docker = Docker::connect_with_local_defaults().expect("docker");
        let _ = docker
            .remove_container(
                &instance.0,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_provider_passes_the_conformance_suite() {
    let harness = Harness {
        cluster: "conformance".into(),
    };
    conformance::run(&harness).await.expect("conformance");
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_are_limited_to_the_shape_labelled_and_priced() {
    let p = DockerProvider::connect(config("limits"))
        .await
        .expect("docker");
    let launched = p.launch(request("limits", &[5])).await.expect("launch");
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let c = docker
        .inspect_container(&launched[0].instance.0, None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    let host = c.host_config.expect("host config");
    let labels_set = c.config.and_then(|c| c.labels).expect("labels");
    let offerings = p.offerings().await.expect("offerings");
    p.terminate(&[launched[0].instance.clone()])
        .await
        .expect("terminate");
    assert_eq!(host.nano_cpus, Some(500_000_000), "0.5 CPU");
    assert_eq!(host.memory, Some(64 * 1024 * 1024), "64 MiB");
    assert_eq!(
        labels_set.get(labels::CLUSTER).map(String::as_str),
        Some("limits")
    );
    assert_eq!(
        labels_set.get(labels::POOL).map(String::as_str),
        Some("containers")
    );
    assert_eq!(
        labels_set.get(labels::WORKER).map(String::as_str),
        Some("5")
    );
    assert_eq!(offerings.len(), 1);
    assert_eq!(
        offerings[0].market,
        Market::OnDemand,
        "Docker has no spot market"
    );
    assert_eq!(
        offerings[0].price,
        PricePerHour(ebbtide_core::Micros(12_000))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_exits_by_itself_is_listed_as_not_running() {
    let mut cfg = config("exits");
    let dir = std::env::temp_dir().join("ebbtide-docker-exits");
    std::fs::create_dir_all(&dir).expect("dir");
    let quick = dir.join("agent.sh");
    std::fs::write(&quick, "#!/bin/sh\nexit 3\n").expect("script");
    cfg.image = ImageSource::Import {
        agent: quick,
        tools: vec!["/bin/sh".into()],
    };
    let p = DockerProvider::connect(cfg).await.expect("docker");
    let launched = p.launch(request("exits", &[6])).await.expect("launch");
    let start = std::time::Instant::now();
    let info = loop {
        let listed = p.list().await.expect("list");
        let info = listed
            .into_iter()
            .find(|i| i.instance == launched[0].instance)
            .expect("still listed after exiting");
        if !info.running || start.elapsed() > std::time::Duration::from_secs(20) {
            break info;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    p.terminate(&[launched[0].instance.clone()])
        .await
        .expect("terminate");
    assert!(
        !info.running,
        "an exited container is reported, not running"
    );
    assert!(
        p.list().await.expect("list").is_empty(),
        "terminate removes it"
    );
}
