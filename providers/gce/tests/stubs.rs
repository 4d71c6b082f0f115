//! The provider through the client library's `stub` traits: what it puts
//! in a bulk insert, and the path the fake never takes — a stockout that
//! names only some of the zones a call allowed, which closes those and
//! retries the batch in the others with a new request id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ebbtide_core::{Market, Micros, PricePerHour};
use ebbtide_provider::{LaunchRequest, Provider, conformance};
use ebbtide_provider_gce::{Clients, GceConfig, GcePool, GceProvider, PoolSource};
use google_cloud_compute_v1::client::{
    Instances, RegionInstances, RegionOperations, ZoneOperations,
};
use google_cloud_compute_v1::model::operation::error::Errors;
use google_cloud_compute_v1::model::{
    BulkInsertInstanceResource, BulkInsertOperationStatus, InstancesBulkInsertOperationMetadata,
    Operation, location_policy_location, operation, region_instances, scheduling,
};
use google_cloud_compute_v1::{Result, stub};
use google_cloud_gax::options::RequestOptions;
use google_cloud_gax::response::Response;

const ZONES: [&str; 3] = ["us-central1-a", "us-central1-b", "us-central1-c"];

/// Records every bulk insert and answers: a stockout naming zone a while
/// zone a is allowed, else success in the first allowed zone.
#[derive(Debug, Default)]
struct RecordingBulkInsert {
    seen: Mutex<Vec<(Option<String>, BulkInsertInstanceResource)>>,
}

fn allowed_zones(body: &BulkInsertInstanceResource) -> Vec<String> {
    let locations = body
        .location_policy
        .as_ref()
        .map(|p| p.locations.clone())
        .unwrap_or_default();
    ZONES
        .iter()
        .filter(|z| {
            locations
                .get(&format!("zones/{z}"))
                .is_some_and(|l| l.preference == Some(location_policy_location::Preference::Allow))
        })
        .map(|z| z.to_string())
        .collect()
}

impl stub::RegionInstances for RecordingBulkInsert {
    async fn bulk_insert(
        &self,
        req: region_instances::BulkInsertRequest,
        _options: RequestOptions,
    ) -> Result<Response<Operation>> {
        let body = req.body.clone().unwrap_or_default();
        self.seen
            .lock()
            .expect("lock")
            .push((req.request_id.clone(), body.clone()));
        let allowed = allowed_zones(&body);
        let mut op = Operation::default();
        op.name = Some(format!(
            "operation-{}",
            self.seen.lock().expect("lock").len()
        ));
        op.status = Some(operation::Status::Done);
        let mut status = BulkInsertOperationStatus::default();
        let mut metadata = InstancesBulkInsertOperationMetadata::default();
        if allowed.iter().any(|z| z == ZONES[0]) {
            let mut e = Errors::default();
            e.code = Some("ZONE_RESOURCE_POOL_EXHAUSTED".into());
            e.location = Some(format!("zones/{}", ZONES[0]));
            e.message = Some("The zone does not have enough resources".into());
            let mut error = operation::Error::default();
            error.errors = vec![e];
            op.error = Some(error);
            status.failed_to_create_vm_count =
                Some(i32::try_from(body.count.unwrap_or(0)).unwrap_or(0));
            metadata
                .per_location_status
                .insert(format!("zones/{}", ZONES[0]), status);
        } else if let Some(zone) = allowed.first() {
            status.created_vm_count = Some(i32::try_from(body.count.unwrap_or(0)).unwrap_or(0));
            metadata
                .per_location_status
                .insert(format!("zones/{zone}"), status);
        }
        op.instances_bulk_insert_operation_metadata = Some(metadata);
        Ok(Response::from(op))
    }
}

/// Stubs for the clients a launch whose operation is already done never
/// calls: any call is a test failure (the library's unimplemented stub).
#[derive(Debug, Default)]
struct Unused;
impl stub::Instances for Unused {}
impl stub::RegionOperations for Unused {}
impl stub::ZoneOperations for Unused {}

fn config() -> GceConfig {
    let price = |d: f64| PricePerHour(Micros::from_dollars_f64(d).expect("price"));
    GceConfig {
        cluster: "ci".into(),
        project: "p".into(),
        region: "us-central1".into(),
        endpoint: None,
        pools: HashMap::from([(
            "linux".to_string(),
            GcePool {
                zones: ZONES.iter().map(|z| z.to_string()).collect(),
                machine_types: vec!["e2-standard-4".into(), "n2d-standard-4".into()],
                source: PoolSource::Template("global/instanceTemplates/ci".into()),
                network: None,
                subnetwork: None,
                external_ip: false,
                service_account: Some("w@p.iam.gserviceaccount.com".into()),
                scopes: vec!["https://www.googleapis.com/auth/logging.write".into()],
                network_tags: vec![],
                labels: Default::default(),
                agent_install: String::new(),
            },
        )]),
        on_demand_prices: HashMap::from([("e2-standard-4".to_string(), price(0.134))]),
        spot_prices: HashMap::from([("e2-standard-4".to_string(), price(0.04))]),
        zone_block: Duration::from_secs(600),
        operation_deadline: Duration::from_secs(5),
        list_page_size: 500,
        anonymous: false,
    }
}

#[tokio::test]
async fn a_stockout_naming_one_zone_closes_it_and_the_batch_retries_whole_in_the_others() {
    let recorder = Arc::new(RecordingBulkInsert::default());
    let clients = Clients {
        instances: Instances::from_stub(Unused),
        region_instances: RegionInstances::from_stub::<RecordingBulkInsert>(recorder.clone()),
        region_operations: RegionOperations::from_stub(Unused),
        zone_operations: ZoneOperations::from_stub(Unused),
    };
    let p = GceProvider::new(config(), clients);
    let request = LaunchRequest {
        cluster: "ci".into(),
        pool: "linux".into(),
        shape: "e2-standard-4".into(),
        cpu_millis: 4000,
        memory_mib: 16384,
        market: Market::Spot,
        zones: Vec::new(),
        scheduler_url: "https://s:8081".into(),
        workers: conformance::launches(&[7, 8]),
    };
    let launched = p
        .launch(request.clone())
        .await
        .expect("launch lands in zone b");
    assert!(
        launched.iter().all(|l| l.zone.as_deref() == Some(ZONES[1])),
        "{launched:?}"
    );
    assert_eq!(launched[0].instance.0, "us-central1-b/ci-w7");

    let seen = recorder.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "one try, one retry");
    let (first_id, first) = &seen[0];
    let (second_id, second) = &seen[1];
    assert_ne!(
        first_id, second_id,
        "a failed operation's retry is a new request"
    );
    assert_eq!(allowed_zones(first), ZONES);
    assert_eq!(
        allowed_zones(second),
        [ZONES[1], ZONES[2]],
        "zone a is denied after its stockout"
    );

    // What every bulk insert carries.
    assert_eq!(first.count, Some(2));
    assert_eq!(first.min_count, Some(2), "all or nothing");
    assert_eq!(
        first.source_instance_template.as_deref(),
        Some("global/instanceTemplates/ci")
    );
    let mut names: Vec<&String> = first.per_instance_properties.keys().collect();
    names.sort();
    assert_eq!(names, ["ci-w7", "ci-w8"]);
    let ranks: Vec<(i64, Vec<String>)> = {
        let mut r: Vec<(i64, Vec<String>)> = first
            .instance_flexibility_policy
            .as_ref()
            .expect("ranked machine types")
            .instance_selections
            .values()
            .map(|s| (s.rank.unwrap_or(-1), s.machine_types.clone()))
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        ranks,
        [
            (0, vec!["e2-standard-4".to_string()]),
            (1, vec!["n2d-standard-4".to_string()])
        ]
    );
    let props = first.instance_properties.as_ref().expect("properties");
    let sched = props.scheduling.as_ref().expect("scheduling");
    assert_eq!(
        sched.provisioning_model,
        Some(scheduling::ProvisioningModel::Spot)
    );
    assert_eq!(
        sched.instance_termination_action,
        Some(scheduling::InstanceTerminationAction::Delete)
    );
    assert_eq!(sched.automatic_restart, Some(false));
    assert_eq!(
        props.service_accounts[0].email.as_deref(),
        Some("w@p.iam.gserviceaccount.com")
    );
    assert!(props.disks.is_empty(), "the template carries the disks");
    assert_eq!(props.labels["ebbtide-cluster"], "ci");

    // Zone a stays closed for spot: the next batch is not offered it.
    let mut next = request.clone();
    next.workers = conformance::launches(&[9]);
    p.launch(next).await.expect("second launch");
    let seen = recorder.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3, "no try in the closed zone");
    assert_eq!(allowed_zones(&seen[2].1), [ZONES[1], ZONES[2]]);
}
