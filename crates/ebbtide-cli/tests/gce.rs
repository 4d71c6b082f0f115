//! End to end with a GCE pool against the project's fake Compute Engine
//! API: the scheduler, with real Application Default Credentials (an
//! `authorized_user` file whose token endpoint is the fake's), launches
//! spot VMs with one bulk insert per batch; the test "boots" each VM by
//! running `ebbtide agent --gce-batch` with its startup script's batch and
//! a stand-in metadata server that mints its identity token. A full zone
//! is skipped; a forged identity token is refused; a preempted VM whose
//! agent reports it has its job requeued and finished elsewhere, and one
//! that vanishes silently is booked as reclaimed by the reconciler; idle
//! VMs are deleted at the end; no token reaches the scheduler's log.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ebbtide_agent::gce_metadata_stand_in::{self, StandIn};
use ebbtide_gce_fake::{FakeCompute, Provisioning};
use ebbtide_proto::bootstrap::BatchFile;
use ebbtide_provider_gce::testkeys::{TestSigner, claims};
use serde_json::{Value, json};

mod support;

const KEY: &str = "demo-key-0123456789abcdef";
const PROJECT: &str = "ci-fleet";
const REGION: &str = "us-central1";
const ZONES: [&str; 2] = ["us-central1-a", "us-central1-b"];

/// One booted VM: its agent and its metadata server.
struct Booted {
    agent: Child,
    metadata: StandIn,
    zone: String,
    worker: u64,
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// Registers as `worker` with `token` and an identity token; the refusal.
async fn impostor(grpc: &str, worker: u64, token: &str, identity: &str) -> String {
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
            identity: Some(InstanceIdentity {
                document: identity.as_bytes().to_vec(),
                signature: String::new(),
            }),
        })
        .await
        .expect_err("an impostor is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    refused.message().to_string()
}

struct World {
    fake: FakeCompute,
    google: TestSigner,
    cluster: String,
    dir: std::path::PathBuf,
    grpc: String,
    booted: HashMap<String, Booted>,
    secrets: Vec<String>,
}

impl World {
    /// Boots every VM the scheduler launched that has no agent yet.
    async fn boot_new(&mut self) {
        for vm in self.fake.instances().await {
            let name = vm["name"].as_str().unwrap_or_default().to_string();
            if vm["status"] == "STOPPING" || self.booted.contains_key(&name) {
                continue;
            }
            let zone = vm["zone"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let script = self
                .fake
                .metadata(&zone, &name, ebbtide_provider_gce::STARTUP_SCRIPT_KEY)
                .await
                .expect("startup script");
            let batch = BatchFile::from_boot_script(&script).expect("batch in the startup script");
            let worker: u64 = name
                .rsplit_once("-w")
                .and_then(|(_, w)| w.parse().ok())
                .expect("worker id in the name");
            let (_, token) = batch.for_index(worker - batch.first_worker).expect("token");
            let numeric = self
                .fake
                .instance_numeric_id(&zone, &name)
                .await
                .expect("id");
            let audience = format!("ebbtide://{}/workers/{worker}", self.cluster);
            let exp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                + 3600;
            let identity = self
                .google
                .sign(&claims(&audience, numeric, &name, &zone, PROJECT, exp));
            // A token Google did not sign, for this very instance, is refused
            // and the bootstrap token stays usable.
            let forged = TestSigner::new("google-1")
                .sign(&claims(&audience, numeric, &name, &zone, PROJECT, exp));
            let refusal = impostor(&self.grpc, worker, token, &forged).await;
            assert!(refusal.contains("does not verify"), "{refusal}");
            self.secrets.extend(batch.tokens.iter().cloned());
            self.secrets.push(identity.clone());
            let file = self.dir.join(format!("{name}.batch"));
            std::fs::write(&file, batch.render()).expect("batch file");
            let metadata = gce_metadata_stand_in::start(gce_metadata_stand_in::Instance {
                name: name.clone(),
                identity_token: Some((audience, identity)),
            })
            .await
            .expect("metadata stand-in");
            let agent = Command::new(env!("CARGO_BIN_EXE_ebbtide"))
                .args(["agent", "--gce-batch"])
                .arg(&file)
                .args(["--gce-metadata-endpoint", &metadata.url()])
                .arg("--work-dir")
                .arg(self.dir.join(format!("{name}.work")))
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(self.dir.join(format!("{name}.agent.log"))).expect("log"),
                )
                .spawn()
                .expect("agent");
            self.booted.insert(
                name,
                Booted {
                    agent,
                    metadata,
                    zone,
                    worker,
                },
            );
        }
    }

    /// Boots VMs until every job in `ids` is final.
    async fn run_until_final(&mut self, http: &str, ids: &[u64], log: &dyn Fn() -> String) {
        let start = Instant::now();
        loop {
            self.boot_new().await;
            let mut open = 0;
            for id in ids {
                let j = support::job(http, KEY, *id).await;
                if ["queued", "assigned", "running"].contains(&j["status"].as_str().unwrap_or("")) {
                    open += 1;
                }
            }
            if open == 0 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{open} jobs unfinished:\n{}\nfake: {}",
                log(),
                self.fake.describe().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gce_pool_runs_jobs_on_spot_vms_survives_preemption_and_deletes_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeCompute::start(PROJECT, REGION, &ZONES)
        .await
        .expect("fake");
    // The first zone has no spot capacity: launches land in the second.
    fake.set_capacity(ZONES[0], Provisioning::Spot, Some(0))
        .await;
    let google = TestSigner::new("google-1");
    std::fs::write(dir.path().join("google-keys.json"), google.jwks()).expect("keys");
    let credentials = dir.path().join("adc.json");
    std::fs::write(&credentials, fake.authorized_user_credentials()).expect("credentials");
    let cluster = format!("e2e-gce-{}", std::process::id());
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
name = "gce"
provider = "gce"
kind = "dynamic"
min = 0
max = 3
idle_timeout = "2s"
boot_estimate = "1s"
on_demand_price = 0.134
[pools.shape]
name = "e2-standard-4"
cpu_millis = 4000
memory_mib = 16384
[pools.market]
spot_percent = 100
[pools.scaling]
scale_up_cooldown = "0s"
scale_down_cooldown = "1s"
down_stabilization = "1s"

[providers.gce]
project = "{PROJECT}"
region = "{REGION}"
zones = ["{za}", "{zb}"]
endpoint = "{endpoint}"
identity_keys = "{keys}"
operation_deadline = "30s"
[providers.gce.pools.gce]
machine_types = ["e2-standard-4"]
image = "projects/debian-cloud/global/images/family/debian-12"
[providers.gce.pools.gce.labels]
team = "e2e"
"#,
        data = dir.path().join("data").display(),
        za = ZONES[0],
        zb = ZONES[1],
        endpoint = fake.endpoint(),
        keys = dir.path().join("google-keys.json").display(),
    );
    let adc = credentials.display().to_string();
    let scheduler = support::Scheduler::start_with_env(
        dir.path(),
        &config,
        &[("GOOGLE_APPLICATION_CREDENTIALS", &adc)],
    );
    let log = || scheduler.log();
    let http = scheduler.http.clone();
    let mut world = World {
        fake,
        google,
        cluster: cluster.clone(),
        dir: dir.path().to_path_buf(),
        grpc: scheduler.grpc.clone(),
        booted: HashMap::new(),
        secrets: Vec::new(),
    };

    // 1. A long job on a spot VM whose agent hears the preemption notice.
    let long = support::submit(
        &http,
        KEY,
        json!({"class": "high", "command": "sleep 4; echo survived"}),
    )
    .await;
    let start = Instant::now();
    while support::job(&http, KEY, long).await["status"] != "running" {
        world.boot_new().await;
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the long job never ran:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(world.booted.len(), 1);
    let (victim, _) = world
        .booted
        .iter()
        .next()
        .map(|(n, b)| (n.clone(), b.worker))
        .expect("one VM");
    let victim_zone = world.booted[&victim].zone.clone();
    assert_eq!(victim_zone, ZONES[1], "the full zone was skipped");
    assert!(world.fake.preempt(&victim_zone, &victim).await);
    world.booted[&victim].metadata.preempt();
    // The VM is gone a moment later, and its agent with it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    world.booted.remove(&victim);
    world.run_until_final(&http, &[long], &log).await;
    let j = support::job(&http, KEY, long).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{}", log());
    assert_eq!(j["attempts"], 1, "a reclamation spends no attempt: {j}");
    let agent_log =
        std::fs::read_to_string(dir.path().join(format!("{victim}.agent.log"))).unwrap_or_default();
    assert!(agent_log.contains("spot preemption notice"), "{agent_log}");
    assert!(
        support::job_log(&http, KEY, long)
            .await
            .contains("survived")
    );
    assert!(!world.booted.is_empty(), "a replacement VM ran it");

    // 2. A VM that vanishes without a word (its agent dies first): the
    // reconciler finds Compute Engine's preemption record.
    let quiet = support::submit(
        &http,
        KEY,
        json!({"class": "high", "command": "sleep 3; echo second-life"}),
    )
    .await;
    let start = Instant::now();
    let silent = loop {
        world.boot_new().await;
        let j = support::job(&http, KEY, quiet).await;
        if j["status"] == "running" {
            // Which VM runs it: the one whose agent's work directory has it.
            let holder = world
                .booted
                .keys()
                .find(|n| {
                    std::fs::read_dir(dir.path().join(format!("{n}.work")))
                        .is_ok_and(|mut d| d.next().is_some())
                })
                .cloned();
            if let Some(h) = holder {
                break h;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the second job never ran:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let zone = world.booted[&silent].zone.clone();
    world.booted.remove(&silent);
    assert!(world.fake.preempt(&zone, &silent).await);
    world.run_until_final(&http, &[quiet], &log).await;
    let j = support::job(&http, KEY, quiet).await;
    assert_eq!(j["status"], "succeeded", "{j}\n{}", log());
    assert_eq!(
        j["attempts"], 1,
        "booked as reclaimed, not as a failure: {j}"
    );

    // 3. A burst of short jobs.
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            support::submit(
                &http,
                KEY,
                json!({"class": "high", "command": format!("sleep 1; echo hello-gce-{i}")}),
            )
            .await,
        );
    }
    world.run_until_final(&http, &ids, &log).await;
    for id in &ids {
        let j = support::job(&http, KEY, *id).await;
        assert_eq!(j["status"], "succeeded", "{j}");
    }

    // Every VM carried the ownership labels and went to the open zone.
    for vm in world.fake.instances().await {
        assert_eq!(
            vm["labels"]["ebbtide-cluster"],
            Value::String(cluster.clone())
        );
        assert_eq!(vm["labels"]["team"], "e2e");
        assert!(
            vm["zone"].as_str().unwrap_or_default().ends_with(ZONES[1]),
            "{vm}"
        );
    }
    // Idle VMs are deleted: nothing is left.
    let start = Instant::now();
    loop {
        let left = world.fake.instances().await;
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still there: {left:?}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let text = log();
    assert!(
        text.contains("reason=Reclamation"),
        "the agent's notice drained its worker:\n{text}"
    );
    assert!(
        text.contains("reclaimed this worker's instance"),
        "the reconciler booked the silent preemption:\n{text}"
    );
    let metrics = support::metrics(&http).await;
    assert!(metrics.contains("ebbtide_reclamations_total"), "{metrics}");
    assert!(
        world.fake.calls().await.get("token").copied().unwrap_or(0) >= 1,
        "real credentials were used"
    );
    assert!(!world.secrets.is_empty());
    for secret in &world.secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a token leaked into the scheduler's log"
        );
    }
}
