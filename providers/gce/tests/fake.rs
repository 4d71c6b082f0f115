//! The GCE provider through Google's own client against the project's
//! fake Compute Engine API: the conformance suite, then what only GCE
//! has — one bulk insert per batch, zones closed by stockouts, quotas and
//! rate limits told apart, retried calls launching nothing twice, paging,
//! preemption, operations that outlast their deadline.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ebbtide_core::{InstanceId, Market, Micros, PricePerHour};
use ebbtide_gce_fake::{FakeCompute, Provisioning, Timing};
use ebbtide_provider::conformance::{self, FailingLaunch};
use ebbtide_provider::{LaunchRequest, Provider};
use ebbtide_provider_gce::{
    Clients, GceConfig, GcePool, GceProvider, PoolSource, STARTUP_SCRIPT_KEY,
};
use serde_json::Value;
use tokio::sync::Mutex;

const PROJECT: &str = "ci-fleet";
const REGION: &str = "us-central1";
const ZONES: [&str; 3] = ["us-central1-a", "us-central1-b", "us-central1-f"];

fn price(d: f64) -> PricePerHour {
    PricePerHour(Micros::from_dollars_f64(d).expect("price"))
}

fn pool(machine_types: &[&str]) -> GcePool {
    GcePool {
        zones: ZONES.iter().map(|z| z.to_string()).collect(),
        machine_types: machine_types.iter().map(|t| t.to_string()).collect(),
        source: PoolSource::Image {
            image: "projects/debian-cloud/global/images/family/debian-12".into(),
            disk_size_gb: 50,
            disk_type: "pd-balanced".into(),
        },
        network: None,
        subnetwork: None,
        external_ip: true,
        service_account: None,
        scopes: Vec::new(),
        network_tags: vec!["ci-worker".into()],
        labels: BTreeMap::from([("team".to_string(), "build".to_string())]),
        agent_install: String::new(),
    }
}

fn config(fake: &FakeCompute, cluster: &str) -> GceConfig {
    GceConfig {
        cluster: cluster.into(),
        project: PROJECT.into(),
        region: REGION.into(),
        endpoint: Some(fake.endpoint()),
        pools: HashMap::from([
            (
                "linux".to_string(),
                pool(&["e2-standard-4", "n2d-standard-4"]),
            ),
            // A machine type Compute Engine refuses: a request it will never take.
            ("broken".to_string(), pool(&["bogus"])),
        ]),
        on_demand_prices: HashMap::from([
            ("e2-standard-4".to_string(), price(0.134)),
            ("n2d-standard-4".to_string(), price(0.169)),
        ]),
        spot_prices: HashMap::from([
            ("e2-standard-4".to_string(), price(0.040)),
            ("n2d-standard-4".to_string(), price(0.045)),
        ]),
        zone_block: Duration::from_secs(600),
        operation_deadline: Duration::from_secs(20),
        list_page_size: 500,
        anonymous: true,
    }
}

async fn provider(config: &GceConfig) -> Arc<GceProvider> {
    let clients = Clients::new(config).await.expect("clients");
    Arc::new(GceProvider::new(config.clone(), clients))
}

fn request(workers: &[u64], market: Market) -> LaunchRequest {
    LaunchRequest {
        cluster: "ebbtide-test".into(),
        pool: "linux".into(),
        shape: "e2-standard-4".into(),
        cpu_millis: 4000,
        memory_mib: 16384,
        market,
        zones: Vec::new(),
        scheduler_url: "https://scheduler.example:8081".into(),
        workers: conformance::launches(workers),
    }
}

async fn start() -> FakeCompute {
    FakeCompute::start(PROJECT, REGION, &ZONES)
        .await
        .expect("fake")
}

fn calls(map: &BTreeMap<&'static str, u64>, method: &str) -> u64 {
    map.get(method).copied().unwrap_or(0)
}

struct Harness {
    fake: FakeCompute,
    config: GceConfig,
    /// Fakes set up to fail, kept alive while the suite uses them.
    failing: Mutex<Vec<FakeCompute>>,
}

#[async_trait::async_trait]
impl conformance::Harness for Harness {
    async fn provider(&self) -> Arc<dyn Provider> {
        provider(&self.config).await
    }

    fn request(&self, workers: &[u64]) -> LaunchRequest {
        request(workers, Market::Spot)
    }

    async fn failing_launches(&self) -> Vec<FailingLaunch> {
        let mut out = Vec::new();
        let mut keep = self.failing.lock().await;
        for kind in ["capacity", "quota", "throttled", "transient", "permanent"] {
            let fake = start().await;
            let mut req = request(&[9_100, 9_101], Market::Spot);
            match kind {
                "capacity" => {
                    for z in ZONES {
                        fake.set_capacity(z, Provisioning::Spot, Some(0)).await;
                    }
                }
                "quota" => fake.set_quota(Some(1)).await,
                "throttled" => {
                    fake.fail_calls(Some("bulkInsert"), 429, "rateLimitExceeded", 1)
                        .await
                }
                "transient" => {
                    fake.fail_calls(Some("bulkInsert"), 503, "backendError", 1)
                        .await
                }
                _ => req.pool = "broken".into(),
            }
            out.push(FailingLaunch {
                provider: provider(&config(&fake, "ebbtide-test")).await,
                request: req,
                kind,
            });
            keep.push(fake);
        }
        out
    }

    fn has_offerings(&self) -> bool {
        true
    }

    async fn create_foreign(&self) -> InstanceId {
        let clients = Clients::new(&self.config).await.expect("clients");
        let mut instance = google_cloud_compute_v1::model::Instance::default();
        instance.name = Some("someone-elses-vm".into());
        instance.machine_type = Some(format!("zones/{}/machineTypes/e2-small", ZONES[0]));
        clients
            .instances
            .insert()
            .set_project(PROJECT)
            .set_zone(ZONES[0])
            .set_body(instance)
            .send()
            .await
            .expect("insert a foreign instance");
        InstanceId(format!("{}/someone-elses-vm", ZONES[0]))
    }

    async fn foreign_alive(&self, _instance: &InstanceId) -> bool {
        self.fake
            .instances()
            .await
            .iter()
            .any(|i| i["name"] == "someone-elses-vm" && i["status"] != "STOPPING")
    }

    async fn remove_foreign(&self, _instance: &InstanceId) {
        let clients = Clients::new(&self.config).await.expect("clients");
        let _ = clients
            .instances
            .delete()
            .set_project(PROJECT)
            .set_zone(ZONES[0])
            .set_instance("someone-elses-vm")
            .send()
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gce_provider_passes_the_conformance_suite_against_the_fake() {
    let fake = start().await;
    let config = config(&fake, "ebbtide-test");
    let h = Harness {
        fake,
        config,
        failing: Mutex::new(Vec::new()),
    };
    if let Err(e) = conformance::run(&h).await {
        panic!("{e}\nfake: {}", h.fake.describe().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_bulk_insert_of_spot_instances_deleted_on_preemption() {
    let fake = start().await;
    let p = provider(&config(&fake, "ebbtide-test")).await;
    let launched = p
        .launch(request(&[10, 11, 12, 13, 14], Market::Spot))
        .await
        .expect("launch");
    assert_eq!(launched.len(), 5);
    let c = fake.calls().await;
    assert_eq!(calls(&c, "bulkInsert"), 1, "{c:?}");
    assert_eq!(
        calls(&c, "aggregatedList"),
        0,
        "the operation says where they went: {c:?}"
    );
    assert!(calls(&c, "regionOperations.wait") >= 1, "{c:?}");
    assert_eq!(
        p.api_calls(),
        calls(&c, "bulkInsert") + calls(&c, "regionOperations.wait")
    );
    let instances = fake.instances().await;
    assert_eq!(instances.len(), 5);
    for i in &instances {
        let name = i["name"].as_str().expect("name");
        assert!(name.starts_with("ebbtide-test-w1"), "{name}");
        assert!(
            i["zone"].as_str().expect("zone").ends_with(ZONES[0]),
            "first open zone: {i}"
        );
        assert!(
            i["machineType"]
                .as_str()
                .expect("type")
                .ends_with("/e2-standard-4"),
            "rank 0 first: {i}"
        );
        assert_eq!(i["labels"]["ebbtide-cluster"], "ebbtide-test");
        assert_eq!(i["labels"]["ebbtide-pool"], "linux");
        assert_eq!(i["labels"]["ebbtide-market"], "spot");
        assert_eq!(i["labels"]["ebbtide-launch"], "ebbtide-test-w10");
        assert_eq!(i["labels"]["team"], "build");
        assert_eq!(i["scheduling"]["provisioningModel"], "SPOT");
        assert_eq!(i["scheduling"]["instanceTerminationAction"], "DELETE");
        let labels = i["labels"].to_string();
        assert!(!labels.contains("token-"), "a token in a label: {labels}");
    }
    let script = fake
        .metadata(ZONES[0], "ebbtide-test-w12", STARTUP_SCRIPT_KEY)
        .await
        .expect("startup script");
    let batch = ebbtide_provider_gce::startup::BatchFile::from_boot_script(&script)
        .expect("batch in the script");
    assert_eq!(batch.first_worker, 10);
    assert_eq!(batch.tokens.len(), 5);
    assert_eq!(batch.tokens[2], "token-12");

    // On-demand is standard provisioning.
    p.launch(request(&[20], Market::OnDemand))
        .await
        .expect("on-demand");
    let od = fake.instances().await;
    let w20 = od
        .iter()
        .find(|i| i["name"] == "ebbtide-test-w20")
        .expect("w20");
    assert_eq!(w20["scheduling"]["provisioningModel"], "STANDARD");
    assert_eq!(w20["labels"]["ebbtide-market"], "on-demand");

    // Preempted: stopping (not running) at once, then gone.
    assert!(fake.preempt(ZONES[0], "ebbtide-test-w11").await);
    let listed = p.list().await.expect("list");
    let w11 = listed
        .iter()
        .find(|i| i.worker.0 == 11)
        .expect("w11 listed while it stops");
    assert!(!w11.running, "{w11:?}");
    assert_eq!(w11.market, Market::Spot);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let listed = p.list().await.expect("list");
    assert!(
        !listed.iter().any(|i| i.worker.0 == 11),
        "a preempted spot VM is deleted, not stopped"
    );
    // Gone, but Compute Engine's record says why.
    let reclaimed = p.reclaimed().await.expect("reclaimed");
    assert_eq!(
        reclaimed,
        [ebbtide_provider_gce::instance_id(
            ZONES[0],
            "ebbtide-test-w11"
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_zone_is_skipped_and_a_stockout_everywhere_closes_the_zones_for_that_market() {
    let fake = start().await;
    let p = provider(&config(&fake, "ebbtide-test")).await;
    // The first zone has room for two: a batch of three goes whole to the next.
    fake.set_capacity(ZONES[0], Provisioning::Spot, Some(2))
        .await;
    let launched = p
        .launch(request(&[1, 2, 3], Market::Spot))
        .await
        .expect("launch");
    assert!(
        launched.iter().all(|l| l.zone.as_deref() == Some(ZONES[1])),
        "{launched:?}"
    );
    // The engine's zone order is followed: only the zones it names are allowed.
    let mut only_f = request(&[4], Market::Spot);
    only_f.zones = vec![ZONES[2].into()];
    let l = p.launch(only_f).await.expect("launch in f");
    assert_eq!(l[0].zone.as_deref(), Some(ZONES[2]));

    // Spot is out everywhere: a capacity error, and the zones close for spot.
    for z in ZONES {
        fake.set_capacity(z, Provisioning::Spot, Some(0)).await;
    }
    let e = p
        .launch(request(&[5], Market::Spot))
        .await
        .expect_err("stockout");
    assert_eq!(e.kind(), "capacity", "{e}");
    assert!(e.to_string().contains("reopens in"), "{e}");
    let offered = p.offerings().await.expect("offerings");
    assert!(
        offered
            .iter()
            .filter(|o| o.market == Market::Spot)
            .all(|o| !o.available),
        "{offered:?}"
    );
    assert!(
        offered
            .iter()
            .filter(|o| o.market == Market::OnDemand)
            .all(|o| o.available)
    );
    // Capacity is back, but the zones stay closed until their time is up:
    // no call is spent on them.
    for z in ZONES {
        fake.set_capacity(z, Provisioning::Spot, None).await;
    }
    let before = calls(&fake.calls().await, "bulkInsert");
    let e = p
        .launch(request(&[6], Market::Spot))
        .await
        .expect_err("still closed");
    assert_eq!(e.kind(), "capacity");
    assert_eq!(
        calls(&fake.calls().await, "bulkInsert"),
        before,
        "a closed zone costs no call"
    );
    // Standard capacity is another market: open.
    p.launch(request(&[7], Market::OnDemand))
        .await
        .expect("on-demand is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_rate_limits_and_server_errors_are_told_apart_and_close_no_zone() {
    let fake = start().await;
    let p = provider(&config(&fake, "ebbtide-test")).await;
    fake.set_quota(Some(2)).await;
    let e = p
        .launch(request(&[1, 2, 3], Market::Spot))
        .await
        .expect_err("quota");
    assert_eq!(e.kind(), "quota", "{e}");
    assert!(e.to_string().contains("QUOTA_EXCEEDED"), "{e}");
    fake.set_quota(None).await;
    fake.fail_calls(Some("bulkInsert"), 403, "rateLimitExceeded", 1)
        .await;
    let e = p
        .launch(request(&[1], Market::Spot))
        .await
        .expect_err("403");
    assert_eq!(e.kind(), "throttled", "{e}");
    fake.fail_calls(Some("bulkInsert"), 500, "backendError", 1)
        .await;
    assert_eq!(
        p.launch(request(&[1], Market::Spot))
            .await
            .expect_err("500")
            .kind(),
        "transient"
    );
    fake.fail_next_operation("INTERNAL_ERROR").await;
    assert_eq!(
        p.launch(request(&[1], Market::Spot))
            .await
            .expect_err("op")
            .kind(),
        "transient"
    );
    // Worker 1's batch has failed operations behind it (the quota, the
    // internal error): its next try is a new request, not handed the old
    // failed operation again.
    // None of that closed a zone.
    let l = p.launch(request(&[1], Market::Spot)).await.expect("launch");
    assert_eq!(l[0].zone.as_deref(), Some(ZONES[0]));
    // A request Compute Engine will never take names its field.
    let mut broken = request(&[2], Market::Spot);
    broken.pool = "broken".into();
    let e = p.launch(broken).await.expect_err("invalid");
    assert_eq!(e.kind(), "permanent");
    assert!(e.to_string().contains("machineType"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_retried_after_a_lost_answer_creates_nothing_twice() {
    let fake = start().await;
    let p = provider(&config(&fake, "ebbtide-test")).await;
    let first = p
        .launch(request(&[30, 31, 32], Market::Spot))
        .await
        .expect("launch");
    // The same batch again, as the retry wrapper sends it when an answer
    // was lost: the same requestId, so the same operation.
    let again = p
        .launch(request(&[30, 31, 32], Market::Spot))
        .await
        .expect("retry");
    assert_eq!(first, again);
    assert_eq!(fake.instances().await.len(), 3, "{}", fake.describe().await);
    assert_eq!(calls(&fake.calls().await, "bulkInsert"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_every_instance_and_terminate_deletes_only_ours() {
    let fake = start().await;
    let mut cfg = config(&fake, "ebbtide-test");
    cfg.list_page_size = 2;
    let p = provider(&cfg).await;
    let other = provider(&config(&fake, "other-cluster")).await;
    let ours = p
        .launch(request(&[1, 2, 3, 4, 5, 6, 7], Market::Spot))
        .await
        .expect("launch");
    let theirs = other
        .launch(request(&[1], Market::Spot))
        .await
        .expect("other cluster");
    let before = calls(&fake.calls().await, "aggregatedList");
    let listed = p.list().await.expect("list");
    assert_eq!(listed.len(), 7, "{listed:?}");
    let pages = calls(&fake.calls().await, "aggregatedList") - before;
    assert_eq!(pages, 4, "7 instances, 2 a page");
    // The other cluster's instance is not ours to delete, even by id.
    let mut ids: Vec<InstanceId> = ours.iter().map(|l| l.instance.clone()).collect();
    ids.push(theirs[0].instance.clone());
    p.terminate(&ids).await.expect("terminate");
    let remaining = fake.instances().await;
    let alive: Vec<&Value> = remaining
        .iter()
        .filter(|i| i["status"] != "STOPPING")
        .collect();
    assert_eq!(alive.len(), 1, "{alive:?}");
    assert_eq!(alive[0]["labels"]["ebbtide-cluster"], "other-cluster");
    assert_eq!(calls(&fake.calls().await, "delete"), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_that_outlasts_the_deadline_is_waited_on_repeatedly_then_transient() {
    let fake = start().await;
    fake.set_timing(Timing {
        running_after: Duration::from_millis(10),
        done_after: Duration::from_secs(30),
        wait_at_most: Duration::from_millis(100),
    })
    .await;
    let mut cfg = config(&fake, "ebbtide-test");
    cfg.operation_deadline = Duration::from_millis(700);
    let p = provider(&cfg).await;
    let e = p
        .launch(request(&[1], Market::Spot))
        .await
        .expect_err("deadline");
    assert_eq!(e.kind(), "transient", "{e}");
    assert!(
        e.to_string().contains("not done by the launch deadline"),
        "{e}"
    );
    let waits = calls(&fake.calls().await, "regionOperations.wait");
    assert!(
        (4..=9).contains(&waits),
        "a wait returns after 100 ms, the deadline is 700 ms: {waits} waits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_bound_to_the_instance_launched_for_the_worker_by_its_identity_token() {
    use ebbtide_core::WorkerId;
    use ebbtide_provider::{RegistrationClaim, RegistrationEvidence, RegistrationRefused};
    use ebbtide_provider_gce::identity::{GoogleKeys, audience};
    use ebbtide_provider_gce::testkeys::{TestSigner, claims};

    let fake = start().await;
    let signer = TestSigner::new("google-1");
    let keys = GoogleKeys::from_jwks(&signer.jwks(), "test").expect("keys");
    let cfg = config(&fake, "ebbtide-test");
    let clients = Clients::new(&cfg).await.expect("clients");
    let p = GceProvider::new(cfg, clients).with_identity_check(Some(keys));
    let launched = p
        .launch(request(&[1, 2], Market::Spot))
        .await
        .expect("launch");
    let zone = ZONES[0];
    let id_of = |name: &'static str| {
        let fake = &fake;
        async move {
            fake.instance_numeric_id(zone, name)
                .await
                .expect("numeric id")
        }
    };
    let (id1, id2) = (
        id_of("ebbtide-test-w1").await,
        id_of("ebbtide-test-w2").await,
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let evidence = |aud: &str, id: u64, name: &str| RegistrationEvidence {
        document: signer
            .sign(&claims(aud, id, name, zone, PROJECT, exp))
            .into_bytes(),
        signature: String::new(),
    };
    fn claim<'a>(
        worker: u64,
        evidence: Option<&'a RegistrationEvidence>,
        launched: Option<&'a InstanceId>,
    ) -> RegistrationClaim<'a> {
        RegistrationClaim {
            worker: WorkerId(worker),
            launched,
            evidence,
        }
    }
    let w1 = &launched[0].instance;
    let own = evidence(
        &audience("ebbtide-test", WorkerId(1)),
        id1,
        "ebbtide-test-w1",
    );
    p.verify_registration(claim(1, Some(&own), Some(w1)))
        .await
        .expect("its own token");

    // Instance w2 read worker 1's token from the shared startup script and
    // mints a token for worker 1's audience: its name gives it away.
    let neighbour = evidence(
        &audience("ebbtide-test", WorkerId(1)),
        id2,
        "ebbtide-test-w2",
    );
    let refused = |r: Result<(), RegistrationRefused>| match r {
        Err(RegistrationRefused::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let why = refused(
        p.verify_registration(claim(1, Some(&neighbour), Some(w1)))
            .await,
    );
    assert!(why.contains("presented worker 1's credentials"), "{why}");
    // A token minted for another audience is not replayed here.
    let other_aud = evidence("https://some-other-service.example", id1, "ebbtide-test-w1");
    let why = refused(
        p.verify_registration(claim(1, Some(&other_aud), Some(w1)))
            .await,
    );
    assert!(why.contains("minted for"), "{why}");
    // The right name with the wrong numeric id: another instance of that name.
    let wrong_id = evidence(
        &audience("ebbtide-test", WorkerId(1)),
        id1 + 1000,
        "ebbtide-test-w1",
    );
    let why = refused(
        p.verify_registration(claim(1, Some(&wrong_id), Some(w1)))
            .await,
    );
    assert!(why.contains("is not the instance"), "{why}");
    // A token not signed by Google.
    let forger = TestSigner::new("google-1");
    let forged = RegistrationEvidence {
        document: forger
            .sign(&claims(
                &audience("ebbtide-test", WorkerId(1)),
                id1,
                "ebbtide-test-w1",
                zone,
                PROJECT,
                exp,
            ))
            .into_bytes(),
        signature: String::new(),
    };
    let why = refused(
        p.verify_registration(claim(1, Some(&forged), Some(w1)))
            .await,
    );
    assert!(why.contains("does not verify"), "{why}");
    let why = refused(p.verify_registration(claim(1, None, Some(w1))).await);
    assert!(why.contains("identity token is required"), "{why}");
    // Before the launch is confirmed the agent is told to retry.
    assert!(matches!(
        p.verify_registration(claim(1, Some(&own), None)).await,
        Err(RegistrationRefused::NotYet(_))
    ));
}
