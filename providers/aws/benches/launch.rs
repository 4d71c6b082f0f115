//! Release-mode benchmark of the EC2 provider against moto (the real AWS
//! SDK, a local emulator): API calls per scale-up of 50 instances, and the
//! time to launch 100 instances (provider call to instances listed).
//!
//! `cargo bench -p ebbtide-provider-aws --bench launch` (moto_server on
//! PATH, or named by MOTO_SERVER).
//!
//! Emulator figures measure Ebbtide's side (SDK, signing, batching); EC2's
//! own latency is not in them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ebbtide_core::{InstanceId, Market, Micros, PricePerHour};
use ebbtide_provider::{LaunchRequest, Provider, conformance};
use ebbtide_provider_aws::{AwsConfig, AwsProvider, PoolLaunch, SubnetConfig};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let moto = ebbtide_provider_aws::emulator::start().await.expect("moto");
        let endpoint = moto.url.clone();
        let ec2 = ebbtide_provider_aws::emulator::ec2_client(&endpoint).await;
        let ami = ec2.describe_images().send().await.expect("images").images()[0]
            .image_id()
            .expect("ami")
            .to_string();
        let subnets = ec2.describe_subnets().send().await.expect("subnets");
        let s = &subnets.subnets()[0];
        let config = AwsConfig {
            cluster: "bench".into(),
            region: "us-east-1".into(),
            endpoint: Some(endpoint.clone()),
            pools: HashMap::from([(
                "ci".to_string(),
                PoolLaunch {
                    ami,
                    instance_types: vec!["m5.large".into()],
                    subnets: vec![SubnetConfig {
                        id: s.subnet_id().expect("subnet").into(),
                        zone: s.availability_zone().expect("zone").into(),
                    }],
                    security_groups: vec![],
                    iam_instance_profile: None,
                    max_spot_price: None,
                    tags: vec![],
                    agent_install: String::new(),
                },
            )]),
            on_demand_prices: HashMap::from([("m5.large".into(), PricePerHour(Micros(96_000)))]),
            spot_price_ttl: Duration::from_secs(300),
            test_credentials: Some(("t".into(), "t".into())),
        };
        let provider = AwsProvider::new(config).await;
        let request = |first: u64, n: u64, market: Market| LaunchRequest {
            cluster: "bench".into(),
            pool: "ci".into(),
            shape: "m5.large".into(),
            cpu_millis: 2000,
            memory_mib: 8192,
            market,
            zones: Vec::new(),
            scheduler_url: "https://scheduler.example:8081".into(),
            workers: conformance::launches(&(first..first + n).collect::<Vec<_>>()),
        };

        let before = provider.api_calls();
        let fifty = provider.launch(request(1, 50, Market::Spot)).await.expect("50");
        let calls = provider.api_calls() - before;
        println!("scale-up of {} spot instances: {calls} EC2 API call(s) (RunInstances)", fifty.len());

        let mut runs = Vec::new();
        let mut launched: Vec<InstanceId> = fifty.iter().map(|l| l.instance.clone()).collect();
        for round in 0..5u64 {
            let began = Instant::now();
            let hundred = provider
                .launch(request(1_000 + round * 100, 100, Market::OnDemand))
                .await
                .expect("100");
            let listed = provider.list().await.expect("list");
            let elapsed = began.elapsed();
            assert!(hundred.iter().all(|l| listed.iter().any(|i| i.instance == l.instance && i.running)));
            launched.extend(hundred.into_iter().map(|l| l.instance));
            runs.push(elapsed.as_secs_f64() * 1e3);
        }
        runs.sort_by(f64::total_cmp);
        println!(
            "launch 100 instances and see them listed (5 runs): median {:.0} ms, min {:.0} ms, max {:.0} ms",
            runs[runs.len() / 2],
            runs[0],
            runs[runs.len() - 1]
        );
        // The SDK's own cost (signing, request building, XML parsing) is the
        // client's CPU time: moto runs in another process, so its time is
        // not in this process's counters.
        const LISTS: u32 = 100;
        let (cpu_before, began) = (process_cpu_ms(), Instant::now());
        for _ in 0..LISTS {
            let listed = provider.list().await.expect("list");
            assert_eq!(listed.len(), launched.len());
        }
        let cpu = process_cpu_ms() - cpu_before;
        println!(
            "list {} instances {LISTS} times (DescribeInstances, paged): {:.0} ms wall, client CPU {:.1} ms per list",
            launched.len(),
            began.elapsed().as_secs_f64() * 1e3,
            cpu / f64::from(LISTS)
        );
        let before = provider.api_calls();
        let began = Instant::now();
        provider.terminate(&launched).await.expect("terminate");
        println!(
            "terminate {} instances: {} API calls (describe to filter ours + batched TerminateInstances), {:.0} ms",
            launched.len(),
            provider.api_calls() - before,
            began.elapsed().as_secs_f64() * 1e3
        );
        drop(moto);
    });
}

/// User plus system CPU time of this process, all threads, in ms
/// (`/proc/self/stat` fields 14 and 15, in clock ticks of 10 ms).
fn process_cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let (_, rest) = stat.rsplit_once(')').expect("stat format");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("ticks");
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    (ticks(14 - 3) + ticks(15 - 3)) * 10.0
}
