//! # ebbtide-provider-gce
//!
//! Workers as Compute Engine instances. A launch batch is one
//! `regionInstances.bulkInsert` ([`bulk`]) over the pool's ranked machine
//! types and the zones still open, with a `requestId` derived from the
//! batch so a retried call never launches twice, and instance names
//! derived from worker ids ([`names`]). Spot instances are deleted, not
//! stopped, when preempted. The operation is waited on up to a deadline
//! ([`operations`]); a stockout closes the zones it names for a while
//! ([`zones`]) and the batch moves whole to the zones still open; a quota
//! or a rate limit goes to the engine as what it is ([`errors`]).
//!
//! `list` pages through `instances.aggregatedList` filtered by the
//! cluster label, and `terminate` deletes only instances carrying it (a
//! 404 is success). Prices come from a table of list prices
//! ([`prices`]), overridable per machine type.
//!
//! Credentials are Application Default Credentials (a service account on
//! the scheduler's VM, or `GOOGLE_APPLICATION_CREDENTIALS`); an endpoint
//! override and anonymous credentials exist for tests against a fake only.

mod bulk;
pub mod errors;
pub mod identity;
pub mod names;
pub mod operations;
mod plugin;
pub mod prices;
pub mod startup;
#[cfg(any(test, feature = "testkit"))]
pub mod testkeys;
pub mod zones;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ebbtide_core::{InstanceId, Market, PricePerHour};
use ebbtide_provider::{
    InstanceInfo, LaunchRequest, LaunchedInstance, Offering, Provider, ProviderError,
    RegistrationClaim, RegistrationRefused,
};
use google_cloud_compute_v1::client::{
    Instances, RegionInstances, RegionOperations, ZoneOperations,
};
use google_cloud_compute_v1::model::{Instance, instance};
use tokio::sync::Mutex;

pub use bulk::{BulkLaunch, STARTUP_SCRIPT_KEY, bulk_insert_body};
pub use plugin::{GcePlugin, GceSettings};

use crate::names::{CLUSTER_LABEL, MARKET_LABEL, POOL_LABEL};
use crate::operations::Scope;
use crate::zones::ZoneBlocklist;

/// What a pool's boot disk is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolSource {
    /// An image (`projects/debian-cloud/global/images/family/debian-12`),
    /// with the boot disk's size and type.
    Image {
        /// The image URL or family.
        image: String,
        /// Boot disk size, GB.
        disk_size_gb: u32,
        /// Boot disk type (`pd-balanced`, `pd-ssd`, `hyperdisk-balanced`).
        disk_type: String,
    },
    /// An instance template that carries disks and network; Ebbtide still
    /// sets labels, metadata and scheduling.
    Template(String),
}

/// How one pool launches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcePool {
    /// Zones in order of preference (without the region).
    pub zones: Vec<String>,
    /// Machine types in order of preference.
    pub machine_types: Vec<String>,
    /// Image or template.
    pub source: PoolSource,
    /// VPC network URL or name (`None`: the project's default).
    pub network: Option<String>,
    /// Subnetwork URL or name.
    pub subnetwork: Option<String>,
    /// Whether workers get an external IP (without one they need Cloud NAT
    /// to reach the internet).
    pub external_ip: bool,
    /// Service account the instances run as.
    pub service_account: Option<String>,
    /// Its OAuth scopes.
    pub scopes: Vec<String>,
    /// Network tags (firewall rules select on them).
    pub network_tags: Vec<String>,
    /// Extra labels (cost allocation).
    pub labels: BTreeMap<String, String>,
    /// Shell lines in the startup script that install the agent at
    /// `/usr/local/bin/ebbtide` (an image with it baked in leaves it
    /// empty).
    pub agent_install: String,
}

/// Settings of the GCE provider.
#[derive(Debug, Clone, PartialEq)]
pub struct GceConfig {
    /// Cluster id, the prefix of every instance name and a label.
    pub cluster: String,
    /// Project id.
    pub project: String,
    /// Region.
    pub region: String,
    /// Endpoint override, for a fake in tests only.
    pub endpoint: Option<String>,
    /// Per pool name.
    pub pools: HashMap<String, GcePool>,
    /// Standard price per machine type in the region.
    pub on_demand_prices: HashMap<String, PricePerHour>,
    /// Spot price per machine type in the region (regional on GCE).
    pub spot_prices: HashMap<String, PricePerHour>,
    /// How long a stockout closes a zone for that market.
    pub zone_block: Duration,
    /// How long a launch waits for its operation before it gives up (the
    /// instances may still come; the reconciler adopts or deletes them).
    pub operation_deadline: Duration,
    /// Instances per `aggregatedList` page (500, the API's largest; tests
    /// make it small to exercise paging).
    pub list_page_size: u32,
    /// Anonymous credentials, for a fake in tests only.
    #[cfg(feature = "testkit")]
    pub anonymous: bool,
}

/// The four Compute Engine clients the provider uses, built once: each
/// holds a connection pool.
#[derive(Clone, Debug)]
pub struct Clients {
    /// `instances.*`.
    pub instances: Instances,
    /// `regionInstances.bulkInsert`.
    pub region_instances: RegionInstances,
    /// `regionOperations.wait`.
    pub region_operations: RegionOperations,
    /// `zoneOperations.wait`.
    pub zone_operations: ZoneOperations,
}

/// A client could not be built (credentials missing, endpoint invalid).
#[derive(Debug, thiserror::Error)]
#[error("Compute Engine client: {0}")]
pub struct ClientError(String);

impl Clients {
    /// Clients for `config`: Application Default Credentials, or the test
    /// endpoint and anonymous credentials. Retries are off in the client:
    /// they are the `Governed` wrapper's one policy, counted once.
    pub async fn new(config: &GceConfig) -> Result<Clients, ClientError> {
        macro_rules! build {
            ($client:ty) => {{
                let mut b = <$client>::builder()
                    .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
                if let Some(endpoint) = &config.endpoint {
                    b = b.with_endpoint(endpoint.clone());
                }
                #[cfg(feature = "testkit")]
                if config.anonymous {
                    b = b.with_credentials(
                        google_cloud_auth::credentials::anonymous::Builder::new().build(),
                    );
                }
                b.build().await.map_err(|e| ClientError(e.to_string()))?
            }};
        }
        Ok(Clients {
            instances: build!(Instances),
            region_instances: build!(RegionInstances),
            region_operations: build!(RegionOperations),
            zone_operations: build!(ZoneOperations),
        })
    }
}

/// Workers as Compute Engine instances of the pools in its [`GceConfig`];
/// every call counted (see [`GceProvider::api_calls`]) so the benchmark
/// can report calls per scale-up.
pub struct GceProvider {
    config: GceConfig,
    clients: Clients,
    blocked: Mutex<ZoneBlocklist>,
    /// Per batch (its first worker), the attempt number of its next bulk
    /// insert: the `requestId` stays the same while an answer may have
    /// been lost (so Compute Engine dedupes the retry) and changes once an
    /// operation is known to have failed (or the retry would be handed the
    /// failed operation again).
    attempts: Mutex<HashMap<ebbtide_core::WorkerId, u32>>,
    calls: Arc<AtomicU64>,
    identity: Option<identity::GoogleKeys>,
}

/// Batches whose attempt numbers are remembered at most; past it the
/// memory is dropped (a retry then reuses attempt 1, which Compute Engine
/// answers with that attempt's operation: a stale answer, never a second
/// launch).
const MAX_REMEMBERED_BATCHES: usize = 4096;

impl GceProvider {
    /// A provider over `clients` (real ones, or stubs in unit tests).
    pub fn new(config: GceConfig, clients: Clients) -> GceProvider {
        GceProvider {
            config,
            clients,
            blocked: Mutex::new(ZoneBlocklist::default()),
            attempts: Mutex::new(HashMap::new()),
            calls: Arc::default(),
            identity: None,
        }
    }

    /// Requires every registering worker to present an identity token
    /// Google signed for the instance launched for it (`None`: the batch
    /// token alone).
    pub fn with_identity_check(mut self, keys: Option<identity::GoogleKeys>) -> Self {
        self.identity = keys;
        self
    }

    /// Compute Engine API calls made so far.
    pub fn api_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(crate) fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn pool(&self, name: &str) -> Result<&GcePool, ProviderError> {
        self.config.pools.get(name).ok_or_else(|| {
            ProviderError::Permanent(format!(
                "pool {name:?} has no [providers.gce.pools.{name}] launch settings"
            ))
        })
    }

    /// The zones a launch may use now, in order: the engine's (its open
    /// offerings, cheapest first) among the pool's, else the pool's; minus
    /// those a stockout closed.
    async fn open_zones<'a>(&self, pool: &'a GcePool, request: &LaunchRequest) -> Vec<&'a str> {
        let mut wanted: Vec<&str> = request
            .zones
            .iter()
            .filter_map(|z| pool.zones.iter().find(|p| *p == z).map(String::as_str))
            .collect();
        if wanted.is_empty() {
            wanted = pool.zones.iter().map(String::as_str).collect();
        }
        let blocked = self.blocked.lock().await;
        blocked.open(&wanted, request.market, std::time::Instant::now())
    }

    /// One bulk insert of `workers` into `zones`, waited on; the zone it
    /// landed in, or why not.
    async fn bulk_insert(
        &self,
        request: &LaunchRequest,
        pool: &GcePool,
        zones: &[&str],
        deadline: tokio::time::Instant,
    ) -> Result<String, ProviderError> {
        let first = request
            .workers
            .first()
            .map_or(ebbtide_core::WorkerId(0), |w| w.worker);
        let attempt = *self.attempts.lock().await.get(&first).unwrap_or(&1);
        let body = bulk_insert_body(&BulkLaunch {
            cluster: &self.config.cluster,
            pool_name: &request.pool,
            pool,
            market: request.market,
            open_zones: zones,
            workers: &request.workers,
            scheduler_url: &request.scheduler_url,
        });
        self.count_call();
        let op = self
            .clients
            .region_instances
            .bulk_insert()
            .set_project(&self.config.project)
            .set_region(&self.config.region)
            .set_request_id(names::request_id(&self.config.cluster, first, attempt))
            .set_body(body)
            .send()
            .await
            .map_err(|e| errors::classify(&e))?;
        let op = operations::wait(self, Scope::Region(&self.config.region), op, deadline).await?;
        let failures = operations::errors_of(&op);
        {
            let mut attempts = self.attempts.lock().await;
            if failures.is_empty() {
                attempts.remove(&first);
            } else {
                if attempts.len() >= MAX_REMEMBERED_BATCHES {
                    attempts.clear();
                }
                attempts.insert(first, attempt + 1);
            }
        }
        let statuses = op
            .instances_bulk_insert_operation_metadata
            .as_ref()
            .map(|m| m.per_location_status.clone())
            .unwrap_or_default();
        if failures.is_empty() {
            let landed = statuses
                .iter()
                .find(|(_, s)| s.created_vm_count.unwrap_or(0) > 0)
                .map(|(zone, _)| names::last_segment(zone).to_string());
            return landed.ok_or_else(|| {
                ProviderError::Transient(format!(
                    "bulk insert {} finished without saying which zone it created instances in",
                    op.name.clone().unwrap_or_default()
                ))
            });
        }
        let error = errors::classify_operation(&failures);
        if matches!(error, ProviderError::Capacity(_)) {
            // Close the zones Compute Engine says were out; if it names
            // none, every zone this call allowed was.
            let mut out: Vec<String> = failures
                .iter()
                .filter(|f| f.is_stockout())
                .filter_map(|f| {
                    f.location
                        .as_deref()
                        .map(|l| names::last_segment(l).to_string())
                })
                .filter(|z| zones.contains(&z.as_str()))
                .collect();
            out.extend(
                statuses
                    .iter()
                    .filter(|(_, s)| s.failed_to_create_vm_count.unwrap_or(0) > 0)
                    .map(|(z, _)| names::last_segment(z).to_string()),
            );
            if out.is_empty() {
                out = zones.iter().map(|z| z.to_string()).collect();
            }
            let mut blocked = self.blocked.lock().await;
            let now = std::time::Instant::now();
            for zone in &out {
                blocked.close(zone, request.market, now, self.config.zone_block);
            }
            tracing::info!(pool = %request.pool, market = request.market.name(), zones = ?out, closed_for = ?self.config.zone_block, "stockout; zones closed for this market");
        }
        Err(error)
    }

    /// Every instance of this cluster, paging through the aggregated list.
    async fn cluster_instances(&self) -> Result<Vec<Instance>, ProviderError> {
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            self.count_call();
            let page = self
                .clients
                .instances
                .aggregated_list()
                .set_project(&self.config.project)
                .set_filter(format!("labels.{CLUSTER_LABEL} = {}", self.config.cluster))
                .set_max_results(self.config.list_page_size)
                .set_or_clear_page_token(page_token.take())
                .send()
                .await
                .map_err(|e| errors::classify(&e))?;
            for scoped in page.items.into_values() {
                out.extend(
                    scoped
                        .instances
                        .into_iter()
                        .filter(|i| i.labels.get(CLUSTER_LABEL) == Some(&self.config.cluster)),
                );
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => page_token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }
}

/// `zone/name`, the provider's id of an instance: what a delete needs, and
/// unique in a project at any time.
pub fn instance_id(zone: &str, name: &str) -> InstanceId {
    InstanceId(format!("{zone}/{name}"))
}

/// The zone and name of an instance id.
pub fn split_instance_id(id: &InstanceId) -> Option<(&str, &str)> {
    id.0.split_once('/')
}

/// Whether an instance in this status is, or will be, running.
fn is_alive(status: Option<&instance::Status>) -> bool {
    matches!(
        status,
        Some(
            instance::Status::Provisioning
                | instance::Status::Staging
                | instance::Status::Running
                | instance::Status::Repairing
        )
    )
}

#[async_trait::async_trait]
impl Provider for GceProvider {
    fn name(&self) -> &str {
        "gce"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let pool = self.pool(&request.pool)?;
        if request.workers.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + self.config.operation_deadline;
        let mut last = None;
        // Each failed try closes at least one zone, so this ends.
        for _ in 0..pool.zones.len() {
            let zones = self.open_zones(pool, &request).await;
            if zones.is_empty() {
                break;
            }
            match self.bulk_insert(&request, pool, &zones, deadline).await {
                Ok(zone) => {
                    return Ok(request
                        .workers
                        .iter()
                        .map(|w| LaunchedInstance {
                            worker: w.worker,
                            instance: instance_id(
                                &zone,
                                &names::instance_name(&self.config.cluster, w.worker),
                            ),
                            zone: Some(zone.clone()),
                        })
                        .collect());
                }
                Err(ProviderError::Capacity(why)) => {
                    tracing::info!(pool = %request.pool, reason = %why, "no capacity in the zones tried; trying the zones still open");
                    last = Some(why);
                }
                Err(e) => return Err(e),
            }
        }
        let all: Vec<&str> = pool.zones.iter().map(String::as_str).collect();
        let reopens =
            self.blocked
                .lock()
                .await
                .reopens_in(&all, request.market, std::time::Instant::now());
        Err(ProviderError::Capacity(format!(
            "every zone of pool {} is out of {} capacity{}{}",
            request.pool,
            request.market.name(),
            last.map(|w| format!(" ({w})")).unwrap_or_default(),
            reopens
                .map(|d| format!("; the first zone reopens in {}s", d.as_secs()))
                .unwrap_or_default()
        )))
    }

    async fn terminate(&self, instances: &[InstanceId]) -> Result<(), ProviderError> {
        if instances.is_empty() {
            return Ok(());
        }
        let ours: Vec<InstanceId> = self
            .cluster_instances()
            .await?
            .iter()
            .filter_map(|i| {
                let zone = names::last_segment(i.zone.as_deref()?);
                Some(instance_id(zone, i.name.as_deref()?))
            })
            .collect();
        for id in instances.iter().filter(|id| ours.contains(id)) {
            let Some((zone, name)) = split_instance_id(id) else {
                continue;
            };
            self.count_call();
            match self
                .clients
                .instances
                .delete()
                .set_project(&self.config.project)
                .set_zone(zone)
                .set_instance(name)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if errors::is_not_found(&e) => {}
                Err(e) => return Err(errors::classify(&e)),
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        let mut out = Vec::new();
        for i in self.cluster_instances().await? {
            let (Some(name), Some(zone)) = (i.name.as_deref(), i.zone.as_deref()) else {
                continue;
            };
            let Some(worker) = names::worker_of_name(&self.config.cluster, name) else {
                continue;
            };
            let Some(pool) = i.labels.get(POOL_LABEL) else {
                continue;
            };
            let zone = names::last_segment(zone);
            out.push(InstanceInfo {
                instance: instance_id(zone, name),
                worker,
                pool: pool.clone(),
                market: ebbtide_provider::labels::parse_market(
                    i.labels.get(MARKET_LABEL).map(String::as_str),
                ),
                zone: Some(zone.to_string()),
                running: is_alive(i.status.as_ref()),
            });
        }
        Ok(out)
    }

    /// Preemptions Compute Engine recorded (`compute.instances.preempted`
    /// operations) of this cluster's instances, one list call per zone the
    /// pools use. With `instanceTerminationAction = DELETE` a preempted VM
    /// vanishes, and without this the reconciler could not tell it from a
    /// crash.
    async fn reclaimed(&self) -> Result<Vec<InstanceId>, ProviderError> {
        let mut zones: Vec<&String> = self.config.pools.values().flat_map(|p| &p.zones).collect();
        zones.sort();
        zones.dedup();
        let mut out = Vec::new();
        for zone in zones {
            self.count_call();
            let ops = self
                .clients
                .zone_operations
                .list()
                .set_project(&self.config.project)
                .set_zone(zone)
                .set_filter("operationType = \"compute.instances.preempted\"")
                .set_max_results(500_u32)
                .send()
                .await
                .map_err(|e| errors::classify(&e))?;
            for op in ops.items {
                let Some(link) = op.target_link.as_deref() else {
                    continue;
                };
                let name = names::last_segment(link);
                if names::worker_of_name(&self.config.cluster, name).is_some() {
                    out.push(instance_id(zone, name));
                }
            }
        }
        Ok(out)
    }

    /// With Google's keys configured, a worker must present the identity
    /// token its metadata server minted for this worker's audience, naming
    /// the project, zone, name and numeric id of the instance launched for
    /// it (the id read from Compute Engine, so an instance recreated under
    /// the same name is not taken for the one launched).
    async fn verify_registration(
        &self,
        claim: RegistrationClaim<'_>,
    ) -> Result<(), RegistrationRefused> {
        let Some(keys) = &self.identity else {
            return Ok(());
        };
        let worker = claim.worker.0;
        let refused = RegistrationRefused::Refused;
        let Some(evidence) = claim.evidence else {
            return Err(refused(format!(
                "worker {worker} is a Compute Engine instance: its identity token is required"
            )));
        };
        let token = std::str::from_utf8(&evidence.document)
            .map_err(|_| refused("the identity token is not text".into()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = keys
            .verify(token, now)
            .map_err(|e| refused(e.to_string()))?;
        let expected = identity::audience(&self.config.cluster, claim.worker);
        if id.audience != expected {
            return Err(refused(format!(
                "the identity token was minted for {:?}, not for worker {worker} ({expected:?})",
                id.audience
            )));
        }
        if id.project_id != self.config.project {
            return Err(refused(format!(
                "the identity token is from project {}, the scheduler launches in {}",
                id.project_id, self.config.project
            )));
        }
        let Some(launched) = claim.launched else {
            return Err(RegistrationRefused::NotYet(format!(
                "worker {worker}'s launch is not confirmed yet; retry"
            )));
        };
        let presented = instance_id(&id.zone, &id.instance_name);
        if &presented != launched {
            return Err(refused(format!(
                "instance {} presented worker {worker}'s credentials, which were issued to instance {}",
                presented.0, launched.0
            )));
        }
        self.count_call();
        let instance = self
            .clients
            .instances
            .get()
            .set_project(&self.config.project)
            .set_zone(&id.zone)
            .set_instance(&id.instance_name)
            .send()
            .await
            .map_err(|e| {
                RegistrationRefused::NotYet(format!(
                    "cannot read instance {} to check its id ({}); retry",
                    presented.0,
                    errors::classify(&e)
                ))
            })?;
        let ours = instance.labels.get(CLUSTER_LABEL) == Some(&self.config.cluster);
        if !ours || instance.id != Some(id.instance_id) {
            return Err(refused(format!(
                "instance id {} in the identity token is not the instance {} Ebbtide launched",
                id.instance_id, presented.0
            )));
        }
        Ok(())
    }

    async fn offerings(&self) -> Result<Vec<Offering>, ProviderError> {
        let blocked = self.blocked.lock().await;
        let now = std::time::Instant::now();
        let mut out: Vec<Offering> = Vec::new();
        for pool in self.config.pools.values() {
            for t in &pool.machine_types {
                for zone in &pool.zones {
                    for (market, prices) in [
                        (Market::OnDemand, &self.config.on_demand_prices),
                        (Market::Spot, &self.config.spot_prices),
                    ] {
                        let Some(price) = prices.get(t) else {
                            continue;
                        };
                        let o = Offering {
                            shape: t.clone(),
                            zone: Some(zone.clone()),
                            market,
                            price: *price,
                            available: !blocked.is_closed(zone, market, now),
                        };
                        if !out.contains(&o) {
                            out.push(o);
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
