//! Health gates on real SSH hosts: a host cut off, low on disk, or on
//! which the agent does not start is quarantined (no new workers, its
//! workers no longer listed, so the reconciler requeues their jobs) and
//! re-admitted by the first check it passes.

use ebbtide_core::Market;
use ebbtide_provider::{LaunchRequest, Provider, conformance};
use ebbtide_provider_baremetal::{BaremetalConfig, BaremetalProvider};

mod support;

fn config(hosts: &support::TestHosts, agent: &str, min_free_disk_mib: u64) -> BaremetalConfig {
    let names: Vec<&str> = hosts.hosts.iter().map(|h| h.name.as_str()).collect();
    BaremetalConfig {
        min_free_disk_mib,
        ..support::provider_config(
            "health",
            (0..hosts.hosts.len())
                .map(|i| hosts.inventory(i, 2))
                .collect(),
            &[("metal", &names)],
            agent,
        )
    }
}

fn request(workers: &[u64]) -> LaunchRequest {
    LaunchRequest {
        cluster: "health".into(),
        pool: "metal".into(),
        shape: "metal".into(),
        cpu_millis: 1000,
        memory_mib: 1024,
        market: Market::OnDemand,
        zones: Vec::new(),
        scheduler_url: "http://10.0.0.1:8081".into(),
        workers: conformance::launches(workers),
    }
}

use support::stand_in_agent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_host_is_quarantined_its_workers_unlisted_and_it_is_readmitted_when_back() {
    let hosts = support::TestHosts::start(2);
    let p = BaremetalProvider::new(config(&hosts, &stand_in_agent(&hosts), 1));
    let first = p.launch(request(&[1, 2])).await.expect("launch");
    let on: Vec<&str> = first
        .iter()
        .map(|l| l.instance.0.split('/').next().unwrap_or(""))
        .collect();
    assert!(
        on.contains(&"host0") && on.contains(&"host1"),
        "spread over both: {on:?}"
    );
    assert_eq!(p.list().await.expect("list").len(), 2);
    assert!(p.quarantined().await.is_empty());

    hosts.hosts[1].cut();
    let listed = p.list().await.expect("host0 answers");
    assert!(
        listed.iter().all(|i| i.instance.0.starts_with("host0/")),
        "{listed:?}"
    );
    let q = p.quarantined().await;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0, "host1");
    assert!(q[0].1.starts_with("unreachable"), "{q:?}");
    // New workers go to the healthy host only, up to its slots.
    let more = p.launch(request(&[3, 4])).await.expect("launch");
    assert_eq!(more.len(), 1, "host0 has one slot left: {more:?}");
    assert!(more[0].instance.0.starts_with("host0/"));
    let e = p.launch(request(&[5])).await.expect_err("no healthy slot");
    assert_eq!(e.kind(), "capacity");
    assert!(e.to_string().contains("1 host(s) quarantined"), "{e}");

    hosts.hosts[1].restore();
    let listed = p.list().await.expect("list");
    assert!(p.quarantined().await.is_empty(), "re-admitted");
    assert!(
        listed
            .iter()
            .any(|i| i.instance.0.starts_with("host1/") && i.running),
        "its agent lived on: {listed:?}"
    );
    let ids: Vec<_> = listed.into_iter().map(|i| i.instance).collect();
    p.terminate(&ids).await.expect("terminate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_low_on_disk_or_whose_agent_does_not_start_is_quarantined() {
    let hosts = support::TestHosts::start(2);
    // More free space than any disk has.
    let p = BaremetalProvider::new(config(&hosts, &stand_in_agent(&hosts), u64::MAX / 2048));
    p.list().await.expect("list");
    let q = p.quarantined().await;
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(
        q.iter()
            .all(|(_, why)| why.starts_with("disk:") && why.contains("MiB free under")),
        "{q:?}"
    );
    let e = p.launch(request(&[1])).await.expect_err("no healthy host");
    assert_eq!(e.kind(), "capacity");

    // An agent binary that is not there.
    let broken = BaremetalProvider::new(config(&hosts, "/nonexistent/ebbtide", 1));
    let launched = broken.launch(request(&[2])).await;
    assert!(
        launched.as_ref().map_or(true, |l| l.is_empty()),
        "{launched:?}"
    );
    let q = broken.quarantined().await;
    assert!(!q.is_empty(), "the host the agent failed on is quarantined");
    assert!(q[0].1.starts_with("the agent did not start"), "{q:?}");
}
