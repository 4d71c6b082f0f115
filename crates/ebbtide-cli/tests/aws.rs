//! End to end with an AWS pool against moto (the real AWS SDK on both
//! sides): the scheduler launches EC2 instances tagged as ours with
//! user-data holding valid one-time tokens; the test "boots" each instance
//! by running `ebbtide agent --ec2-batch` with that user-data and a
//! stand-in for the instance metadata service; jobs run; idle instances
//! are terminated; an orphan left by a simulated crash is found and
//! terminated by the reconciler. Registration is bound to the instance:
//! a neighbour holding another instance's token is refused by the signed
//! instance identity document (AWS's key stood in for by an openssl one).

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, InstanceStateName, ResourceType, Tag, TagSpecification};
use base64::Engine;
use serde_json::{Value, json};

mod support;

const KEY: &str = "demo-key-0123456789abcdef";

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The test's stand-in for AWS's signing key: an RSA key and a
/// self-signed certificate (`key.pem`, `cert.pem` in `dir`), made with the
/// openssl command AWS's documentation verifies identity documents with.
fn make_signing_key(dir: &std::path::Path) {
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
        ])
        .args([
            "-out",
            "cert.pem",
            "-subj",
            "/CN=ebbtide-test-aws",
            "-days",
            "1",
        ])
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success(), "openssl req");
}

/// An instance identity document for `instance` and its base64 RSA-SHA256
/// signature, as IMDS serves them.
fn identity(dir: &std::path::Path, instance: &str, index: i32) -> (String, String) {
    let doc = json!({
        "accountId": "123456789012",
        "instanceId": instance,
        "region": "us-east-1",
        "amiLaunchIndex": index,
        "instanceType": "m5.large",
    })
    .to_string();
    let file = dir.join(format!("{instance}.identity"));
    std::fs::write(&file, &doc).expect("document");
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", "key.pem"])
        .arg(&file)
        .current_dir(dir)
        .output()
        .expect("openssl dgst");
    assert!(out.status.success(), "openssl dgst");
    (
        doc,
        base64::engine::general_purpose::STANDARD.encode(out.stdout),
    )
}

fn cluster_filter(cluster: &str) -> Filter {
    Filter::builder()
        .name("tag:ebbtide.cluster")
        .values(cluster)
        .build()
}

/// Our instances that are pending or running.
async fn live_instances(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = ec2
        .describe_instances()
        .filters(cluster_filter(cluster))
        .send()
        .await
        .expect("describe");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .filter(|i| {
            matches!(
                i.state().and_then(|s| s.name()),
                Some(InstanceStateName::Pending | InstanceStateName::Running)
            )
        })
        .collect()
}

/// The batch file inside an instance's user-data.
async fn batch_file(ec2: &aws_sdk_ec2::Client, instance: &str) -> String {
    let script = ebbtide_provider_aws::emulator::user_data(ec2, instance)
        .await
        .expect("user-data");
    script
        .split("<<'EBBTIDE_BATCH'\n")
        .nth(1)
        .and_then(|s| s.split("EBBTIDE_BATCH").next())
        .expect("batch file in user-data")
        .to_string()
}

/// Registers as `worker` with its token and `identity`; the refusal.
async fn impostor(
    grpc: &str,
    worker: u64,
    token: &str,
    identity: Option<(String, String)>,
) -> String {
    use ebbtide_proto::worker::v1::worker_api_client::WorkerApiClient;
    use ebbtide_proto::worker::v1::{InstanceIdentity, RegisterRequest};
    let mut client = WorkerApiClient::connect(grpc.to_string())
        .await
        .expect("connect");
    let refused = client
        .register(RegisterRequest {
            worker_id: worker,
            bootstrap_token: token.to_string(),
            agent_version: "impostor".into(),
            identity: identity.map(|(document, signature)| InstanceIdentity {
                document: document.into_bytes(),
                signature,
            }),
        })
        .await
        .expect_err("an impostor is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    refused.message().to_string()
}

async fn job(http: &str, id: u64) -> Value {
    support::job(http, KEY, id).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aws_pool_launches_tagged_instances_whose_agents_register_run_jobs_and_are_terminated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = ebbtide_provider_aws::emulator::start().await.expect("moto");
    let endpoint = moto.url.clone();
    let mut children = Kill(vec![]);
    let ec2 = ebbtide_provider_aws::emulator::ec2_client(&endpoint).await;
    let ami = ec2.describe_images().send().await.expect("images").images()[0]
        .image_id()
        .expect("ami")
        .to_string();
    let subnets = ec2.describe_subnets().send().await.expect("subnets");
    let subnet = &subnets.subnets()[0];
    let (subnet_id, zone) = (
        subnet.subnet_id().expect("id").to_string(),
        subnet.availability_zone().expect("zone").to_string(),
    );
    let cluster = format!("e2e-aws-{}", std::process::id());
    let config = format!(
        r#"
[server]
cluster = "{cluster}"
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
data_dir = "{data}"
tick = "200ms"
reconcile_interval = "1s"
orphan_grace = "2s"

[engine]
heartbeat_timeout = "10s"

[[classes]]
name = "high"
sla_target = "20s"

[[tenants]]
name = "demo"
api_key = "{KEY}"

[[pools]]
name = "ec2"
provider = "aws"
kind = "dynamic"
min = 0
max = 3
idle_timeout = "2s"
boot_estimate = "1s"
on_demand_price = 0.096
[pools.shape]
name = "m5.large"
cpu_millis = 2000
memory_mib = 8192
[pools.market]
spot_percent = 50
[pools.scaling]
scale_up_cooldown = "0s"
scale_down_cooldown = "1s"
down_stabilization = "1s"

[providers.aws]
region = "us-east-1"
endpoint = "{endpoint}"
identity_certificate = "{cert}"
[providers.aws.on_demand_prices]
"m5.large" = 0.096
[providers.aws.pools.ec2]
ami = "{ami}"
instance_types = ["m5.large"]
subnets = [{{ id = "{subnet_id}", zone = "{zone}" }}]
[providers.aws.pools.ec2.tags]
team = "e2e"
"#,
        data = dir.path().join("data").display(),
        cert = dir.path().join("cert.pem").display(),
    );
    make_signing_key(dir.path());
    let path = dir.path().join("aws.toml");
    std::fs::write(&path, config).expect("config");
    let log = dir.path().join("serve.log");
    // The standard credential chain, from the environment as on a host.
    let serve = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("serve");
    children.0.push(serve);
    let (http, grpc) = {
        use std::io::BufRead;
        let mut line = String::new();
        let out = children.0[0].stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("line");
        let field = |name: &str| {
            let value = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| {
                    panic!(
                        "{line}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                });
            format!("http://{value}")
        };
        (field("http="), field("grpc="))
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = json!({ "class": "high", "command": format!("sleep 1; echo hello-ec2-{i}") });
        ids.push(support::submit(&http, KEY, body).await);
    }

    // "Boot" every instance the scheduler launches: its agent starts with
    // the user-data's batch file and its own launch index.
    let mut booted: HashSet<String> = HashSet::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut tags_seen: Vec<HashMap<String, String>> = Vec::new();
    let start = Instant::now();
    loop {
        for i in live_instances(&ec2, &cluster).await {
            let id = i.instance_id().expect("id").to_string();
            if !booted.insert(id.clone()) {
                continue;
            }
            tags_seen.push(
                i.tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect(),
            );
            let batch = dir.path().join(format!("{id}.batch"));
            let text = batch_file(&ec2, &id).await;
            let parsed = ebbtide_proto::bootstrap::BatchFile::parse(&text).expect("batch file");
            let index = i.ami_launch_index().expect("launch index");
            let (worker, token) = parsed
                .for_index(u64::try_from(index).expect("index"))
                .map(|(w, t)| (w, t.to_string()))
                .expect("this instance's token");
            tokens.extend(parsed.tokens.clone());
            std::fs::write(&batch, text).expect("batch");
            // A neighbour that read this instance's token from the shared
            // user-data is refused — with its own genuine identity, and with
            // none — and the token stays usable by its instance.
            let neighbour = identity(dir.path(), "i-0neighbour000000", index + 1);
            let refusal = impostor(&grpc, worker, &token, Some(neighbour)).await;
            assert!(
                refusal.contains(&format!(
                    "presented worker {worker}'s credentials, which were issued to instance {id}"
                )),
                "{refusal}"
            );
            let refusal = impostor(&grpc, worker, &token, None).await;
            assert!(
                refusal.contains("instance identity document and signature are required"),
                "{refusal}"
            );
            let meta =
                ebbtide_agent::imds_stand_in::start(ebbtide_agent::imds_stand_in::Metadata {
                    launch_index: u64::try_from(index).expect("index"),
                    interruption: None,
                    identity: Some(identity(dir.path(), &id, index)),
                })
                .await
                .expect("stand-in IMDS");
            let agent = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
                .args(["agent", "--ec2-batch"])
                .arg(&batch)
                .args(["--imds-endpoint", &meta])
                // Inside the test's directory, so it goes with the test.
                .arg("--work-dir")
                .arg(dir.path().join(format!("{id}.work")))
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(dir.path().join(format!("{id}.agent.log"))).expect("log"),
                )
                .spawn()
                .expect("agent");
            children.0.push(agent);
        }
        let mut open = 0;
        for id in &ids {
            let j = job(&http, *id).await;
            if ["queued", "assigned", "running"].contains(&j["status"].as_str().unwrap_or("")) {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{open} jobs unfinished:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        let j = job(&http, *id).await;
        assert_eq!(j["status"], "succeeded", "{j}");
    }
    assert!(!booted.is_empty(), "instances were launched");
    for tags in &tags_seen {
        assert_eq!(tags.get("ebbtide.cluster"), Some(&cluster));
        assert_eq!(tags.get("ebbtide.pool").map(String::as_str), Some("ec2"));
        assert_eq!(tags.get("team").map(String::as_str), Some("e2e"));
        assert!(tags.contains_key("ebbtide.launch") && tags.contains_key("ebbtide.first-worker"));
    }

    // An orphan: tagged as ours, with a worker id this scheduler never
    // issued, as a crash between launch and record would leave.
    let orphan_tags = vec![
        Tag::builder()
            .key("ebbtide.cluster")
            .value(&cluster)
            .build(),
        Tag::builder().key("ebbtide.pool").value("ec2").build(),
        Tag::builder()
            .key("ebbtide.first-worker")
            .value("999999")
            .build(),
    ];
    let orphan = ec2
        .run_instances()
        .image_id(&ami)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(orphan_tags))
                .build(),
        )
        .send()
        .await
        .expect("orphan");
    let orphan_id = orphan.instances()[0].instance_id().expect("id").to_string();

    // Idle instances retire and the orphan is removed: nothing of ours runs.
    let start = Instant::now();
    loop {
        let live: Vec<String> = live_instances(&ec2, &cluster)
            .await
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        if live.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still running: {live:?} (orphan {orphan_id})\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("terminating instances no worker owns"),
        "{log_text}"
    );
    assert!(!tokens.is_empty());
    for t in &tokens {
        assert!(
            !log_text.contains(t.as_str()),
            "a bootstrap token leaked into the scheduler's log"
        );
    }
}
