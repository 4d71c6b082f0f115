//! Release-mode benchmark of the GCE provider against the project's fake
//! Compute Engine API (the real client library over HTTP): API calls per
//! scale-up of 50 spot instances, and the time to launch 100 instances and
//! see them listed.
//!
//! `cargo bench -p ebbtide-provider-gce --bench launch`
//!
//! The fake runs in this process and answers at once, so the times are
//! Ebbtide's side (client, serialization, the wait loop) plus the fake's
//! operation timing, which is set here; Compute Engine's own latency (a
//! bulk insert takes tens of seconds) is not in them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ebbtide_core::{InstanceId, Market, Micros, PricePerHour};
use ebbtide_gce_fake::{FakeCompute, Timing};
use ebbtide_provider::{LaunchRequest, Provider, conformance};
use ebbtide_provider_gce::{Clients, GceConfig, GcePool, GceProvider, PoolSource};

const ZONES: [&str; 3] = ["us-central1-a", "us-central1-b", "us-central1-f"];

fn config(fake: &FakeCompute) -> GceConfig {
    let price = |d: f64| PricePerHour(Micros::from_dollars_f64(d).expect("price"));
    GceConfig {
        cluster: "bench".into(),
        project: "bench-project".into(),
        region: "us-central1".into(),
        endpoint: Some(fake.endpoint()),
        pools: HashMap::from([(
            "ci".to_string(),
            GcePool {
                zones: ZONES.iter().map(|z| z.to_string()).collect(),
                machine_types: vec!["e2-standard-4".into(), "n2d-standard-4".into()],
                source: PoolSource::Image {
                    image: "projects/debian-cloud/global/images/family/debian-12".into(),
                    disk_size_gb: 50,
                    disk_type: "pd-balanced".into(),
                },
                network: None,
                subnetwork: None,
                external_ip: true,
                service_account: None,
                scopes: vec![],
                network_tags: vec![],
                labels: BTreeMap::new(),
                agent_install: String::new(),
            },
        )]),
        on_demand_prices: HashMap::from([("e2-standard-4".into(), price(0.134))]),
        spot_prices: HashMap::from([("e2-standard-4".into(), price(0.04))]),
        zone_block: Duration::from_secs(900),
        operation_deadline: Duration::from_secs(300),
        list_page_size: 500,
        anonymous: true,
    }
}

fn request(first: u64, n: u64, market: Market) -> LaunchRequest {
    LaunchRequest {
        cluster: "bench".into(),
        pool: "ci".into(),
        shape: "e2-standard-4".into(),
        cpu_millis: 4000,
        memory_mib: 16384,
        market,
        zones: Vec::new(),
        scheduler_url: "https://scheduler.example:8081".into(),
        workers: conformance::launches(&(first..first + n).collect::<Vec<_>>()),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let fake = FakeCompute::start("bench-project", "us-central1", &ZONES)
            .await
            .expect("fake");
        let cfg = config(&fake);
        let provider = GceProvider::new(cfg.clone(), Clients::new(&cfg).await.expect("clients"));

        // Operations as Compute Engine runs them, scaled down: done after
        // 3 s, each wait answering after at most 1 s (Google's answers
        // after at most 2 min, often sooner).
        for (label, timing) in [
            ("operation done in 0.3 s, waits of up to 120 ms", Timing::default()),
            (
                "operation done in 3 s, waits of up to 1 s",
                Timing {
                    running_after: Duration::from_millis(100),
                    done_after: Duration::from_secs(3),
                    wait_at_most: Duration::from_secs(1),
                },
            ),
        ] {
            fake.set_timing(timing).await;
            let first = if label.starts_with("operation done in 0.3") { 1 } else { 101 };
            let before = fake.calls().await;
            let calls_before = provider.api_calls();
            let began = Instant::now();
            let fifty = provider.launch(request(first, 50, Market::Spot)).await.expect("50");
            let elapsed = began.elapsed();
            let after = fake.calls().await;
            let delta = |m: &str| after.get(m).copied().unwrap_or(0) - before.get(m).copied().unwrap_or(0);
            println!(
                "scale-up of {} spot instances ({label}): {} API calls = {} bulkInsert + {} regionOperations.wait, {} aggregatedList; {:.0} ms",
                fifty.len(),
                provider.api_calls() - calls_before,
                delta("bulkInsert"),
                delta("regionOperations.wait"),
                delta("aggregatedList"),
                elapsed.as_secs_f64() * 1e3
            );
        }

        fake.set_timing(Timing::default()).await;
        let mut launched: Vec<InstanceId> = provider
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.instance)
            .collect();
        let mut runs = Vec::new();
        for round in 0..5u64 {
            let began = Instant::now();
            let hundred = provider
                .launch(request(1_000 + round * 100, 100, Market::OnDemand))
                .await
                .expect("100");
            let listed = provider.list().await.expect("list");
            let elapsed = began.elapsed();
            assert!(hundred.iter().all(|l| listed.iter().any(|i| i.instance == l.instance)));
            launched.extend(hundred.into_iter().map(|l| l.instance));
            runs.push(elapsed.as_secs_f64() * 1e3);
        }
        runs.sort_by(f64::total_cmp);
        println!(
            "launch 100 instances and see them listed (5 runs, operation done in 0.3 s): median {:.0} ms, min {:.0} ms, max {:.0} ms",
            runs[runs.len() / 2],
            runs[0],
            runs[runs.len() - 1]
        );
        const LISTS: u32 = 20;
        let began = Instant::now();
        let before = fake.calls().await.get("aggregatedList").copied().unwrap_or(0);
        for _ in 0..LISTS {
            let listed = provider.list().await.expect("list");
            assert_eq!(listed.len(), launched.len());
        }
        let pages = fake.calls().await.get("aggregatedList").copied().unwrap_or(0) - before;
        println!(
            "list {} instances {LISTS} times: {:.1} ms per list, {} aggregatedList page(s) per list",
            launched.len(),
            began.elapsed().as_secs_f64() * 1e3 / f64::from(LISTS),
            pages / u64::from(LISTS)
        );
        let before = provider.api_calls();
        let began = Instant::now();
        provider.terminate(&launched).await.expect("terminate");
        println!(
            "terminate {} instances: {} API calls (list to filter ours + one delete each), {:.0} ms",
            launched.len(),
            provider.api_calls() - before,
            began.elapsed().as_secs_f64() * 1e3
        );
    });
}
