//! The one `regionInstances.bulkInsert` body a launch batch becomes.
//!
//! Why one regional call and not one per zone: Compute Engine places the
//! whole batch itself among the zones we allow and the machine types we
//! rank, so a zone's stockout costs no extra round trip (GitLab.com moved
//! from zonal groups to exactly this after a zonal stockout). The batch is
//! all or nothing (`minCount = count`) and kept in one zone
//! (`ANY_SINGLE_ZONE`): the operation's per-zone status then says where
//! every instance went, so the launch needs no listing afterwards, and a
//! failed batch moves whole to the zones still open.

use std::collections::HashMap;

use ebbtide_core::Market;
use ebbtide_provider::WorkerLaunch;
use google_cloud_compute_v1::model::{
    AccessConfig, AttachedDisk, AttachedDiskInitializeParams, BulkInsertInstanceResource,
    BulkInsertInstanceResourcePerInstanceProperties, InstanceFlexibilityPolicy,
    InstanceFlexibilityPolicyInstanceSelection, InstanceProperties, LocationPolicy,
    LocationPolicyLocation, Metadata, NetworkInterface, Scheduling, ServiceAccount, Tags,
    access_config, location_policy, location_policy_location, metadata, scheduling,
};

use crate::names::{self, CLUSTER_LABEL, LAUNCH_LABEL, MARKET_LABEL, POOL_LABEL};
use crate::startup::startup_script;
use crate::{GcePool, PoolSource};

/// The metadata key Compute Engine runs at boot.
pub const STARTUP_SCRIPT_KEY: &str = "startup-script";

/// What one bulk insert is for.
pub struct BulkLaunch<'a> {
    /// Cluster id (names and labels).
    pub cluster: &'a str,
    /// Pool name (label).
    pub pool_name: &'a str,
    /// The pool's launch settings.
    pub pool: &'a GcePool,
    /// Spot or standard.
    pub market: Market,
    /// Zones allowed this time; the pool's other zones are denied.
    pub open_zones: &'a [&'a str],
    /// The workers, consecutive ids.
    pub workers: &'a [WorkerLaunch],
    /// Where the agents reach the scheduler.
    pub scheduler_url: &'a str,
}

/// The request body.
pub fn bulk_insert_body(l: &BulkLaunch<'_>) -> BulkInsertInstanceResource {
    let first = l
        .workers
        .first()
        .map(|w| w.worker)
        .unwrap_or(ebbtide_core::WorkerId(0));
    let count = i64::try_from(l.workers.len()).unwrap_or(i64::MAX);
    let mut body = BulkInsertInstanceResource::default();
    body.count = Some(count);
    body.min_count = Some(count);
    body.per_instance_properties = l
        .workers
        .iter()
        .map(|w| {
            let mut p = BulkInsertInstanceResourcePerInstanceProperties::default();
            p.name = Some(names::instance_name(l.cluster, w.worker));
            (names::instance_name(l.cluster, w.worker), p)
        })
        .collect();
    let mut locations = HashMap::new();
    for zone in &l.pool.zones {
        let mut location = LocationPolicyLocation::default();
        location.preference = Some(if l.open_zones.contains(&zone.as_str()) {
            location_policy_location::Preference::Allow
        } else {
            location_policy_location::Preference::Deny
        });
        locations.insert(format!("zones/{zone}"), location);
    }
    let mut policy = LocationPolicy::default();
    policy.locations = locations;
    policy.target_shape = Some(location_policy::TargetShape::AnySingleZone);
    body.location_policy = Some(policy);
    if l.pool.machine_types.len() > 1 {
        let mut flexibility = InstanceFlexibilityPolicy::default();
        flexibility.instance_selections = l
            .pool
            .machine_types
            .iter()
            .enumerate()
            .map(|(rank, t)| {
                let mut s = InstanceFlexibilityPolicyInstanceSelection::default();
                s.machine_types = vec![t.clone()];
                s.rank = Some(i64::try_from(rank).unwrap_or(i64::MAX));
                (format!("rank-{rank}"), s)
            })
            .collect();
        body.instance_flexibility_policy = Some(flexibility);
    }
    let mut props = InstanceProperties::default();
    props.machine_type = l.pool.machine_types.first().cloned();
    let mut labels: HashMap<String, String> = l.pool.labels.clone().into_iter().collect();
    labels.insert(CLUSTER_LABEL.into(), l.cluster.into());
    labels.insert(POOL_LABEL.into(), l.pool_name.into());
    labels.insert(MARKET_LABEL.into(), l.market.name().into());
    labels.insert(LAUNCH_LABEL.into(), names::launch_label(l.cluster, first));
    props.labels = labels;
    let mut item = metadata::Items::default();
    item.key = Some(STARTUP_SCRIPT_KEY.into());
    item.value = Some(startup_script(
        l.scheduler_url,
        l.workers,
        &l.pool.agent_install,
    ));
    let mut md = Metadata::default();
    md.items = vec![item];
    props.metadata = Some(md);
    let mut sched = Scheduling::default();
    // A worker is cattle: a host event ends it, the engine replaces it.
    sched.automatic_restart = Some(false);
    sched.on_host_maintenance = Some(scheduling::OnHostMaintenance::Terminate);
    match l.market {
        Market::Spot => {
            sched.provisioning_model = Some(scheduling::ProvisioningModel::Spot);
            // STOP would leave a preempted VM billing its disk.
            sched.instance_termination_action = Some(scheduling::InstanceTerminationAction::Delete);
        }
        Market::OnDemand => {
            sched.provisioning_model = Some(scheduling::ProvisioningModel::Standard);
        }
    }
    props.scheduling = Some(sched);
    match &l.pool.source {
        PoolSource::Template(template) => {
            body.source_instance_template = Some(template.clone());
        }
        PoolSource::Image {
            image,
            disk_size_gb,
            disk_type,
        } => {
            let mut init = AttachedDiskInitializeParams::default();
            init.source_image = Some(image.clone());
            init.disk_size_gb = Some(i64::from(*disk_size_gb));
            init.disk_type = Some(disk_type.clone());
            let mut disk = AttachedDisk::default();
            disk.boot = Some(true);
            disk.auto_delete = Some(true);
            disk.initialize_params = Some(init);
            props.disks = vec![disk];
            let mut nic = NetworkInterface::default();
            nic.network = l.pool.network.clone();
            nic.subnetwork = l.pool.subnetwork.clone();
            if l.pool.external_ip {
                let mut access = AccessConfig::default();
                access.name = Some("external-nat".into());
                access.r#type = Some(access_config::Type::OneToOneNat);
                nic.access_configs = vec![access];
            }
            props.network_interfaces = vec![nic];
        }
    }
    if let Some(email) = &l.pool.service_account {
        let mut sa = ServiceAccount::default();
        sa.email = Some(email.clone());
        sa.scopes = l.pool.scopes.clone();
        props.service_accounts = vec![sa];
    }
    if !l.pool.network_tags.is_empty() {
        let mut tags = Tags::default();
        tags.items = l.pool.network_tags.clone();
        props.tags = Some(tags);
    }
    body.instance_properties = Some(props);
    body
}
