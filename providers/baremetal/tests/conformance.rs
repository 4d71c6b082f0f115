//! The bare-metal provider passes the shared conformance suite against
//! three real OpenSSH hosts in network namespaces, with a stand-in agent
//! (a process that stays up) so the suite sees workers start, run and stop
//! without a scheduler.

use std::sync::Arc;

use ebbtide_core::{InstanceId, Market};
use ebbtide_provider::conformance::{self, FailingLaunch, PartialLaunch};
use ebbtide_provider::{LaunchRequest, Provider};
use ebbtide_provider_baremetal::{BaremetalConfig, BaremetalProvider, Host};

mod support;

struct Harness {
    hosts: support::TestHosts,
    agent: std::path::PathBuf,
    foreign: std::sync::Mutex<Option<std::process::Child>>,
}

impl Harness {
    fn host(&self, i: usize, slots: u32) -> Host {
        self.hosts.inventory(i, slots)
    }

    fn config(&self, hosts: Vec<Host>, pools: &[(&str, &[&str])]) -> BaremetalConfig {
        support::provider_config(
            "conformance",
            hosts,
            pools,
            &self.agent.display().to_string(),
        )
    }

    fn standard(&self) -> BaremetalConfig {
        self.config(
            (0..3).map(|i| self.host(i, 2)).collect(),
            &[("metal", &["host0", "host1", "host2"])],
        )
    }
}

fn request(pool: &str, workers: &[u64]) -> LaunchRequest {
    LaunchRequest {
        cluster: "conformance".into(),
        pool: pool.into(),
        shape: "metal".into(),
        cpu_millis: 2000,
        memory_mib: 4096,
        market: Market::OnDemand,
        zones: Vec::new(),
        scheduler_url: "http://10.0.0.1:8081".into(),
        workers: conformance::launches(workers),
    }
}

#[async_trait::async_trait]
impl conformance::Harness for Harness {
    async fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(BaremetalProvider::new(self.standard()))
    }

    fn request(&self, workers: &[u64]) -> LaunchRequest {
        request("metal", workers)
    }

    async fn failing_launches(&self) -> Vec<FailingLaunch> {
        let mut unreachable = self.host(0, 2);
        unreachable.target.name = "gone".into();
        unreachable.target.address = self.hosts.hosts[0].address.replace(".2", ".99");
        vec![
            FailingLaunch {
                provider: Arc::new(BaremetalProvider::new(self.standard())),
                request: request("no-such-pool", &[9_100]),
                kind: "permanent",
            },
            FailingLaunch {
                provider: Arc::new(BaremetalProvider::new(
                    self.config(vec![self.host(0, 0)], &[("full", &["host0"])]),
                )),
                request: request("full", &[9_101]),
                kind: "capacity",
            },
            FailingLaunch {
                provider: Arc::new(BaremetalProvider::new(
                    self.config(vec![unreachable], &[("far", &["gone"])]),
                )),
                request: request("far", &[9_102]),
                kind: "transient",
            },
        ]
    }

    async fn partial_launch(&self) -> Option<PartialLaunch> {
        Some(PartialLaunch {
            provider: Arc::new(BaremetalProvider::new(
                self.config(vec![self.host(2, 1)], &[("one", &["host2"])]),
            )),
            request: request("one", &[9_200, 9_201, 9_202]),
            starts: 1,
        })
    }

    async fn create_foreign(&self) -> InstanceId {
        // Another cluster's worker on host0: a directory and a process.
        let dir = self.hosts.hosts[0].dir().join("work/othercluster-w77");
        std::fs::create_dir_all(&dir).expect("dir");
        let child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("sleep");
        std::fs::write(dir.join("pid"), child.id().to_string()).expect("pid");
        std::fs::write(dir.join("supervisor"), "process").expect("supervisor");
        std::fs::write(dir.join("pool"), "metal").expect("pool");
        *self.foreign.lock().expect("lock") = Some(child);
        InstanceId("host0/w77".into())
    }

    async fn foreign_alive(&self, _instance: &InstanceId) -> bool {
        let mut guard = self.foreign.lock().expect("lock");
        guard
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
            && self.hosts.hosts[0]
                .dir()
                .join("work/othercluster-w77")
                .exists()
    }

    async fn remove_foreign(&self, _instance: &InstanceId) {
        if let Some(mut c) = self.foreign.lock().expect("lock").take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baremetal_provider_passes_the_conformance_suite_on_real_ssh_hosts() {
    let hosts = support::TestHosts::start(3);
    let agent = support::stand_in_agent(&hosts).into();
    let h = Harness {
        hosts,
        agent,
        foreign: std::sync::Mutex::new(None),
    };
    if let Err(e) = conformance::run(&h).await {
        panic!("{e}");
    }
    // Nothing of the cluster is left on any host.
    for host in &h.hosts.hosts {
        let left: Vec<String> = std::fs::read_dir(host.dir().join("work"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.iter().all(|n| !n.starts_with("conformance-")),
            "{}: {left:?}",
            host.name
        );
    }
}
