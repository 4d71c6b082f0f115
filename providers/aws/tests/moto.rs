//! The EC2 provider with the real AWS SDK against moto, a local AWS
//! emulator (`moto_server` from PyPI `moto[server,ec2,s3]`; `.ci/run`
//! installs it). Each test starts its own moto on a free loopback port.
//! Errors moto cannot produce (capacity, throttling) are injected by a
//! small HTTP layer in front of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ebbtide_core::{InstanceId, Market};
use ebbtide_provider::{LaunchRequest, Provider, conformance};
use ebbtide_provider_aws::{AwsConfig, AwsProvider, PoolLaunch, SubnetConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start_moto() -> ebbtide_provider_aws::emulator::Moto {
    ebbtide_provider_aws::emulator::start().await.expect("moto")
}

/// An AMI and the default subnets moto offers.
async fn environment(endpoint: &str) -> (String, Vec<SubnetConfig>) {
    let ec2 = ebbtide_provider_aws::emulator::ec2_client(endpoint).await;
    let images = ec2.describe_images().send().await.expect("images");
    let ami = images
        .images()
        .iter()
        .find_map(|i| i.image_id())
        .expect("moto offers AMIs")
        .to_string();
    let subnets = ec2.describe_subnets().send().await.expect("subnets");
    let mut subnets: Vec<SubnetConfig> = subnets
        .subnets()
        .iter()
        .filter_map(|s| {
            Some(SubnetConfig {
                id: s.subnet_id()?.to_string(),
                zone: s.availability_zone()?.to_string(),
            })
        })
        .collect();
    subnets.sort_by(|a, b| a.zone.cmp(&b.zone));
    subnets.truncate(2);
    (ami, subnets)
}

fn config(
    cluster: &str,
    endpoint: &str,
    ami: &str,
    subnets: Vec<SubnetConfig>,
    types: &[&str],
) -> AwsConfig {
    AwsConfig {
        cluster: cluster.into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.into()),
        pools: HashMap::from([(
            "ci".to_string(),
            PoolLaunch {
                ami: ami.into(),
                instance_types: types.iter().map(|t| t.to_string()).collect(),
                subnets,
                security_groups: vec![],
                iam_instance_profile: None,
                max_spot_price: None,
                tags: vec![("team".into(), "ci".into())],
                agent_install: String::new(),
            },
        )]),
        on_demand_prices: HashMap::from([
            (
                "m5.large".to_string(),
                ebbtide_core::PricePerHour(ebbtide_core::Micros(96_000)),
            ),
            (
                "c5.large".to_string(),
                ebbtide_core::PricePerHour(ebbtide_core::Micros(85_000)),
            ),
        ]),
        spot_price_ttl: Duration::from_secs(300),
        test_credentials: Some(("test".into(), "test".into())),
    }
}

fn request(cluster: &str, workers: &[u64], market: Market) -> LaunchRequest {
    LaunchRequest {
        cluster: cluster.into(),
        pool: "ci".into(),
        shape: "m5.large".into(),
        cpu_millis: 2000,
        memory_mib: 8192,
        market,
        zones: Vec::new(),
        scheduler_url: "https://scheduler.example:8081".into(),
        workers: conformance::launches(workers),
    }
}

struct Harness {
    cfg: AwsConfig,
}

#[async_trait::async_trait]
impl conformance::Harness for Harness {
    async fn provider(&self) -> Arc<dyn Provider> {
        Arc::new(AwsProvider::new(self.cfg.clone()).await)
    }

    fn request(&self, workers: &[u64]) -> LaunchRequest {
        request(&self.cfg.cluster, workers, Market::OnDemand)
    }

    async fn failing_launches(&self) -> Vec<conformance::FailingLaunch> {
        let mut cfg = self.cfg.clone();
        // A subnet that does not exist: configuration, not capacity.
        if let Some(p) = cfg.pools.get_mut("ci") {
            for s in &mut p.subnets {
                s.id = "subnet-0doesnotexist".into();
            }
        }
        let mut out = vec![conformance::FailingLaunch {
            provider: Arc::new(AwsProvider::new(cfg).await),
            request: self.request(&[1]),
            kind: "permanent",
        }];
        // What moto never answers, injected in front of it for the one
        // type and zone the pool may use, so no fallback can succeed.
        let moto = self.cfg.endpoint.clone().unwrap_or_default();
        for (code, kind) in [
            ("InsufficientInstanceCapacity", "capacity"),
            ("VcpuLimitExceeded", "quota"),
            ("RequestLimitExceeded", "throttled"),
        ] {
            let (front, _) = interposer(&moto, "m5.large", code, usize::MAX).await;
            let mut cfg = self.cfg.clone();
            cfg.endpoint = Some(front);
            if let Some(p) = cfg.pools.get_mut("ci") {
                p.instance_types = vec!["m5.large".into()];
                p.subnets.truncate(1);
            }
            out.push(conformance::FailingLaunch {
                provider: Arc::new(AwsProvider::new(cfg).await),
                request: self.request(&[1]),
                kind,
            });
        }
        out
    }

    fn has_offerings(&self) -> bool {
        true
    }

    async fn create_foreign(&self) -> InstanceId {
        let mut cfg = self.cfg.clone();
        cfg.cluster = format!("{}-other", cfg.cluster);
        let other = AwsProvider::new(cfg.clone()).await;
        other
            .launch(request(&cfg.cluster, &[1], Market::OnDemand))
            .await
            .expect("foreign launch")[0]
            .instance
            .clone()
    }

    async fn foreign_alive(&self, instance: &InstanceId) -> bool {
        let mut cfg = self.cfg.clone();
        cfg.cluster = format!("{}-other", cfg.cluster);
        AwsProvider::new(cfg)
            .await
            .list()
            .await
            .expect("list")
            .iter()
            .any(|i| &i.instance == instance && i.running)
    }

    async fn remove_foreign(&self, instance: &InstanceId) {
        let mut cfg = self.cfg.clone();
        cfg.cluster = format!("{}-other", cfg.cluster);
        let _ = AwsProvider::new(cfg)
            .await
            .terminate(std::slice::from_ref(instance))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ec2_provider_passes_the_conformance_suite_against_moto() {
    let moto = start_moto().await;
    let (ami, subnets) = environment(&moto.url).await;
    let harness = Harness {
        cfg: config("conformance", &moto.url, &ami, subnets, &["m5.large"]),
    };
    conformance::run(&harness).await.expect("conformance");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_carry_tags_user_data_and_workers_from_their_launch_index() {
    let moto = start_moto().await;
    let (ami, subnets) = environment(&moto.url).await;
    let cfg = config("tags", &moto.url, &ami, subnets, &["m5.large"]);
    let p = AwsProvider::new(cfg).await;
    let launched = p
        .launch(request("tags", &[100, 101, 102, 103, 104], Market::Spot))
        .await
        .expect("launch");
    assert_eq!(launched.len(), 5);
    assert_eq!(p.api_calls(), 1, "one RunInstances for the whole batch");
    let listed = p.list().await.expect("list");
    let mut workers: Vec<u64> = listed.iter().map(|i| i.worker.0).collect();
    workers.sort_unstable();
    assert_eq!(
        workers,
        vec![100, 101, 102, 103, 104],
        "worker = first + launch index"
    );
    assert!(
        listed
            .iter()
            .all(|i| i.market == Market::Spot && i.pool == "ci")
    );
    // The user-data holds the batch's tokens for the agent to pick from.
    let ec2 = ebbtide_provider_aws::emulator::ec2_client(&moto.url).await;
    let script = ebbtide_provider_aws::emulator::user_data(&ec2, &launched[0].instance.0)
        .await
        .expect("user-data");
    assert!(
        script.contains("tokens=token-100,token-101,token-102,token-103,token-104"),
        "{script}"
    );
    assert!(script.contains("first_worker=100"));
    let described = ec2
        .describe_instances()
        .instance_ids(&launched[0].instance.0)
        .send()
        .await
        .expect("describe");
    let tags: HashMap<String, String> = described.reservations()[0].instances()[0]
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect();
    assert_eq!(
        tags.get("ebbtide.cluster").map(String::as_str),
        Some("tags")
    );
    assert_eq!(tags.get("ebbtide.pool").map(String::as_str), Some("ci"));
    assert_eq!(tags.get("team").map(String::as_str), Some("ci"));
    assert!(tags.contains_key("ebbtide.launch"));
    // An orphaned agent powers its instance off: that must terminate it.
    let behaviour = ec2
        .describe_instance_attribute()
        .instance_id(&launched[0].instance.0)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .expect("attribute");
    assert_eq!(
        behaviour
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value()),
        Some("terminate")
    );
    let ids: Vec<InstanceId> = launched.iter().map(|l| l.instance.clone()).collect();
    p.terminate(&ids).await.expect("terminate");
}

/// A proxy in front of moto that answers the first `fail` RunInstances
/// calls for `instance_type` with `code`, as EC2 would.
async fn interposer(
    moto: &str,
    instance_type: &'static str,
    code: &'static str,
    fail: usize,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let backend = moto.trim_start_matches("http://").to_string();
    let injected = Arc::new(AtomicUsize::new(0));
    let count = injected.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let backend = backend.clone();
            let count = count.clone();
            tokio::spawn(async move {
                // One request per connection is enough for the SDK here:
                // read it whole, decide, answer or forward.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                loop {
                    let Ok(n) = inbound.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            let body =
                                String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                            let targeted = body.contains("Action=RunInstances")
                                && body.contains(&format!("InstanceType={instance_type}"));
                            if targeted && count.fetch_add(1, Ordering::SeqCst) < fail {
                                let xml = format!(
                                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>injected by the test</Message></Error></Errors><RequestID>x</RequestID></Response>"
                                );
                                let status = if code == "RequestLimitExceeded" {
                                    "503 Service Unavailable"
                                } else {
                                    "400 Bad Request"
                                };
                                let reply = format!(
                                    "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{xml}",
                                    xml.len()
                                );
                                let _ = inbound.write_all(reply.as_bytes()).await;
                                return;
                            }
                            // Forward to moto with the connection closed after.
                            let Ok(mut out) = tokio::net::TcpStream::connect(&backend).await else {
                                return;
                            };
                            let text = String::from_utf8_lossy(&buf[..end]).to_string();
                            let mut head_lines: Vec<&str> = text
                                .lines()
                                .filter(|l| !l.to_lowercase().starts_with("connection:"))
                                .collect();
                            head_lines.push("connection: close");
                            let mut request = head_lines.join("\r\n").into_bytes();
                            request.extend_from_slice(b"\r\n\r\n");
                            request.extend_from_slice(&buf[end + 4..]);
                            if out.write_all(&request).await.is_err() {
                                return;
                            }
                            let mut response = Vec::new();
                            let _ = out.read_to_end(&mut response).await;
                            let _ = inbound.write_all(&response).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), injected)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn spot_capacity_errors_fall_back_along_instance_types() {
    let moto = start_moto().await;
    let (ami, subnets) = environment(&moto.url).await;
    let zones = subnets.len();
    let (front, injected) =
        interposer(&moto.url, "m5.large", "InsufficientInstanceCapacity", 100).await;
    let cfg = config("fallback", &front, &ami, subnets, &["m5.large", "c5.large"]);
    let p = AwsProvider::new(cfg).await;
    let launched = p
        .launch(request("fallback", &[7, 8, 9], Market::Spot))
        .await
        .expect("falls back to c5.large");
    assert_eq!(launched.len(), 3);
    assert_eq!(
        injected.load(Ordering::SeqCst),
        zones,
        "m5.large tried in every zone first"
    );
    assert_eq!(
        p.api_calls() as usize,
        zones + 1,
        "then one call on c5.large"
    );
    let ids: Vec<InstanceId> = launched.iter().map(|l| l.instance.clone()).collect();
    p.terminate(&ids).await.expect("terminate");

    // Every type and zone out of capacity: a Capacity error, so the engine
    // falls back to on-demand.
    let (front, _) = interposer(&moto.url, "m5.large", "InsufficientInstanceCapacity", 100).await;
    let (ami, subnets) = environment(&moto.url).await;
    let p = AwsProvider::new(config("fallback", &front, &ami, subnets, &["m5.large"])).await;
    let err = p
        .launch(request("fallback", &[10], Market::Spot))
        .await
        .expect_err("no capacity anywhere");
    assert_eq!(err.kind(), "capacity", "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_calls_are_retried_with_backoff_by_the_governor() {
    let moto = start_moto().await;
    let (ami, subnets) = environment(&moto.url).await;
    let (front, injected) = interposer(&moto.url, "m5.large", "RequestLimitExceeded", 2).await;
    let inner: Arc<dyn Provider> =
        Arc::new(AwsProvider::new(config("throttle", &front, &ami, subnets, &["m5.large"])).await);
    let governed = ebbtide_provider::Governed::new(
        inner,
        ebbtide_provider::GovernorConfig {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let launched = governed
        .launch(request("throttle", &[1, 2], Market::OnDemand))
        .await
        .expect("succeeds after the throttling");
    assert_eq!(launched.len(), 2);
    assert_eq!(
        injected.load(Ordering::SeqCst),
        3,
        "two throttled, the third passed through"
    );
    let listed = governed.list().await.expect("list");
    assert_eq!(listed.len(), 2, "the retries launched nothing twice");
}
