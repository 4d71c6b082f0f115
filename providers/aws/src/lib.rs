//! # ebbtide-provider-aws
//!
//! Workers as EC2 instances. A launch batch is one `RunInstances` call per
//! (instance type, subnet) it has to try: spot through
//! `InstanceMarketOptions`, falling back along the pool's instance types
//! and subnets (zones) when EC2 answers with a capacity error; when every
//! combination is out of capacity the engine sees a `Capacity` error and
//! falls back to on-demand itself (so its cost books always match the
//! market it asked for).
//!
//! Every instance and its volumes carry the ownership tags
//! ([`ebbtide_provider::labels`]) plus the batch's launch id and first
//! worker id: the engine gives a batch consecutive worker ids, so an
//! instance's worker is `first + AmiLaunchIndex`, and `list` rebuilds it
//! from tags alone, paging through `DescribeInstances` with a tag filter.
//!
//! A worker's registration is vouched for by its instance identity
//! document ([`identity`]) when the operator gives AWS's certificate.
//!
//! Credentials come from the standard chain (environment, profile,
//! instance role); an endpoint override exists for tests against an
//! emulator only.

#[cfg(feature = "testkit")]
pub mod emulator;
mod errors;
pub mod identity;
mod plugin;
mod userdata;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, InstanceMarketOptionsRequest, InstanceStateName,
    InstanceType, MarketType, ResourceType, ShutdownBehavior, SpotMarketOptions, Tag,
    TagSpecification,
};
use ebbtide_core::{InstanceId, Market, Micros, PricePerHour, WorkerId};
use ebbtide_provider::{
    InstanceInfo, LaunchRequest, LaunchedInstance, Offering, Provider, ProviderError,
    RegistrationClaim, RegistrationRefused, labels,
};
use tokio::sync::Mutex;

pub use errors::classify_code;
pub use plugin::{AwsPlugin, AwsSettings};
pub use userdata::{BatchFile, render_user_data};

/// Tag holding the id of the launch batch.
pub const LAUNCH_TAG: &str = "ebbtide.launch";
/// Tag holding the first worker id of the batch.
pub const FIRST_WORKER_TAG: &str = "ebbtide.first-worker";

/// One subnet a pool may launch into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetConfig {
    /// `subnet-…`.
    pub id: String,
    /// Its availability zone (for prices and reports).
    pub zone: String,
}

/// How one pool launches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLaunch {
    /// The AMI.
    pub ami: String,
    /// Instance types in order of preference (diversification).
    pub instance_types: Vec<String>,
    /// Subnets in order of preference; each is one zone.
    pub subnets: Vec<SubnetConfig>,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// IAM instance profile name.
    pub iam_instance_profile: Option<String>,
    /// Highest spot price to pay, $/h as EC2 writes it (`None`: up to the
    /// on-demand price, EC2's default).
    pub max_spot_price: Option<String>,
    /// Extra tags (cost allocation and the like).
    pub tags: Vec<(String, String)>,
    /// Shell lines in user-data that install the agent at
    /// `/usr/local/bin/ebbtide` (an AMI with it baked in leaves it empty).
    pub agent_install: String,
}

/// Settings of the EC2 provider.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    /// Cluster id, tagged on every instance.
    pub cluster: String,
    /// Region.
    pub region: String,
    /// Endpoint override, for an emulator in tests only.
    pub endpoint: Option<String>,
    /// Per pool name.
    pub pools: HashMap<String, PoolLaunch>,
    /// On-demand price per instance type (the Pricing API is not consulted).
    pub on_demand_prices: HashMap<String, PricePerHour>,
    /// How long spot prices are reused before asking again.
    pub spot_price_ttl: Duration,
    /// Static credentials, for an emulator in tests only; `None` uses the
    /// standard chain (environment, profile, instance role).
    #[cfg(feature = "testkit")]
    pub test_credentials: Option<(String, String)>,
}

/// The SDK settings every Ebbtide AWS client shares: the region, the
/// standard credential chain (or static credentials and an endpoint, for an
/// emulator in tests), and the SDK's own retries off — retries are the
/// caller's one policy (the `Governed` wrapper for EC2, the report
/// publisher for S3), so they are counted once and never multiplied.
pub async fn sdk_config(
    region: &str,
    endpoint: Option<&str>,
    #[cfg_attr(
        not(feature = "testkit"),
        expect(unused_variables, reason = "static credentials are for tests")
    )]
    test_credentials: Option<&(String, String)>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .retry_config(aws_config::retry::RetryConfig::disabled());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    #[cfg(feature = "testkit")]
    if let Some((key, secret)) = test_credentials {
        loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
            key,
            secret,
            None,
            None,
            "ebbtide-test",
        ));
    }
    loader.load().await
}

/// Workers as EC2 instances of the pools in its [`AwsConfig`]; every call
/// counted (see [`AwsProvider::api_calls`]) so the benchmark can report
/// calls per scale-up.
pub struct AwsProvider {
    client: Client,
    config: AwsConfig,
    identity: Option<identity::IdentityVerifier>,
    spot_prices: Mutex<Option<(Instant, Vec<Offering>)>>,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl AwsProvider {
    /// A provider using the standard credential chain.
    pub async fn new(config: AwsConfig) -> AwsProvider {
        // Retries are the Governed wrapper's (one policy, counted in the
        // metrics), so the SDK's own are off.
        #[cfg(feature = "testkit")]
        let credentials = config.test_credentials.as_ref();
        #[cfg(not(feature = "testkit"))]
        let credentials = None;
        let shared = sdk_config(&config.region, config.endpoint.as_deref(), credentials).await;
        AwsProvider {
            client: Client::new(&shared),
            config,
            identity: None,
            spot_prices: Mutex::new(None),
            calls: Arc::default(),
        }
    }

    /// Requires every registering worker to present an identity document
    /// AWS signed for the instance launched for it (`None`: the batch
    /// token alone, decision 0010).
    pub fn with_identity_check(mut self, verifier: Option<identity::IdentityVerifier>) -> Self {
        self.identity = verifier;
        self
    }

    /// EC2 API calls made so far (for the benchmark's calls-per-scale-up).
    pub fn api_calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_call(&self) {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn pool(&self, name: &str) -> Result<&PoolLaunch, ProviderError> {
        self.config.pools.get(name).ok_or_else(|| {
            ProviderError::Permanent(format!(
                "pool {name:?} has no [providers.aws.pools.{name}] launch settings"
            ))
        })
    }

    fn tags(
        &self,
        request: &LaunchRequest,
        launch: &str,
        first: WorkerId,
        extra: &[(String, String)],
    ) -> Vec<Tag> {
        let mut tags = vec![
            (labels::CLUSTER.to_string(), self.config.cluster.clone()),
            (labels::POOL.to_string(), request.pool.clone()),
            (
                labels::MARKET.to_string(),
                request.market.name().to_string(),
            ),
            (LAUNCH_TAG.to_string(), launch.to_string()),
            (FIRST_WORKER_TAG.to_string(), first.0.to_string()),
        ];
        tags.extend(extra.iter().cloned());
        tags.into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect()
    }

    /// One `RunInstances` for `workers` (consecutive ids) on one type and
    /// subnet; returns what EC2 started.
    async fn run(
        &self,
        request: &LaunchRequest,
        pool: &PoolLaunch,
        workers: &[ebbtide_provider::WorkerLaunch],
        instance_type: &str,
        subnet: &SubnetConfig,
        attempt: usize,
    ) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let Some(first) = workers.first().map(|w| w.worker) else {
            return Ok(Vec::new());
        };
        // Idempotency: a retried call with the same token returns the same
        // instances instead of launching more.
        let launch = format!("{}-w{}-a{attempt}", self.config.cluster, first.0);
        let tags = self.tags(request, &launch, first, &pool.tags);
        let user_data = render_user_data(
            &BatchFile {
                scheduler: request.scheduler_url.clone(),
                first_worker: first.0,
                tokens: workers
                    .iter()
                    .map(|w| w.bootstrap_token.expose().to_string())
                    .collect(),
            },
            &pool.agent_install,
        );
        let count = i32::try_from(workers.len()).unwrap_or(i32::MAX);
        let mut call = self
            .client
            .run_instances()
            .image_id(&pool.ami)
            .instance_type(InstanceType::from(instance_type))
            // All or nothing: a batch that does not fit moves whole to the
            // next type or zone, so instances stay consecutive by index.
            .min_count(count)
            .max_count(count)
            .subnet_id(&subnet.id)
            .set_security_group_ids(Some(pool.security_groups.clone()))
            .user_data(user_data)
            // An agent that no scheduler answers powers the instance off;
            // off must mean gone, or an abandoned instance bills its disks.
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .client_token(&launch)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            );
        if let Some(profile) = &pool.iam_instance_profile {
            call = call.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(profile)
                    .build(),
            );
        }
        if request.market == Market::Spot {
            let mut spot = SpotMarketOptions::builder();
            if let Some(max) = &pool.max_spot_price {
                spot = spot.max_price(max);
            }
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(spot.build())
                    .build(),
            );
        }
        self.count_call();
        let out = call.send().await.map_err(|e| errors::classify(&e))?;
        let mut launched = Vec::new();
        for i in out.instances() {
            let (Some(id), Some(index)) = (i.instance_id(), i.ami_launch_index()) else {
                continue;
            };
            let Some(w) = usize::try_from(index).ok().and_then(|ix| workers.get(ix)) else {
                continue;
            };
            launched.push(LaunchedInstance {
                worker: w.worker,
                instance: InstanceId(id.to_string()),
                zone: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .map(str::to_string)
                    .or_else(|| Some(subnet.zone.clone())),
            });
        }
        Ok(launched)
    }

    /// Every instance matching `filters`, paging through DescribeInstances.
    async fn describe(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<aws_sdk_ec2::types::Instance>, ProviderError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .max_results(500)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.count_call();
            let page = page.map_err(|e| errors::classify(&e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
        }
        Ok(out)
    }

    /// Our instances among `ids` (so nothing else is ever terminated).
    async fn ours_among(&self, ids: &[InstanceId]) -> Result<Vec<String>, ProviderError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(200) {
            let by_id = Filter::builder()
                .name("instance-id")
                .set_values(Some(chunk.iter().map(|i| i.0.clone()).collect()))
                .build();
            for i in self.describe(vec![by_id, self.cluster_filter()]).await? {
                let gone = matches!(
                    i.state().and_then(|s| s.name()),
                    Some(InstanceStateName::Terminated)
                );
                if let (Some(id), false) = (i.instance_id(), gone) {
                    out.push(id.to_string());
                }
            }
        }
        Ok(out)
    }

    fn cluster_filter(&self) -> Filter {
        Filter::builder()
            .name(format!("tag:{}", labels::CLUSTER))
            .values(&self.config.cluster)
            .build()
    }

    async fn spot_offerings(&self) -> Result<Vec<Offering>, ProviderError> {
        let mut cache = self.spot_prices.lock().await;
        if let Some((at, offerings)) = cache.as_ref()
            && at.elapsed() < self.config.spot_price_ttl
        {
            return Ok(offerings.clone());
        }
        let mut types: Vec<&String> = self
            .config
            .pools
            .values()
            .flat_map(|p| &p.instance_types)
            .collect();
        types.sort();
        types.dedup();
        let mut latest: HashMap<
            (String, String),
            (aws_sdk_ec2::primitives::DateTime, PricePerHour),
        > = HashMap::new();
        let mut pages = self
            .client
            .describe_spot_price_history()
            .set_instance_types(Some(
                types
                    .iter()
                    .map(|t| InstanceType::from(t.as_str()))
                    .collect(),
            ))
            .product_descriptions("Linux/UNIX")
            .start_time(aws_sdk_ec2::primitives::DateTime::from(
                std::time::SystemTime::now(),
            ))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.count_call();
            let page = page.map_err(|e| errors::classify(&e))?;
            for p in page.spot_price_history() {
                let (Some(t), Some(zone), Some(price), Some(at)) = (
                    p.instance_type(),
                    p.availability_zone(),
                    p.spot_price().and_then(parse_dollars),
                    p.timestamp(),
                ) else {
                    continue;
                };
                let key = (t.as_str().to_string(), zone.to_string());
                if latest
                    .get(&key)
                    .is_none_or(|(seen, _)| seen.secs() < at.secs())
                {
                    latest.insert(key, (*at, price));
                }
            }
        }
        let offerings: Vec<Offering> = latest
            .into_iter()
            .map(|((shape, zone), (_, price))| Offering {
                shape,
                zone: Some(zone),
                market: Market::Spot,
                price,
                available: true,
            })
            .collect();
        *cache = Some((Instant::now(), offerings.clone()));
        Ok(offerings)
    }
}

/// `"0.0832"` dollars to micro-dollars.
/// The subnets a launch tries, in order: those in `zones` (the engine's
/// open spot offerings, cheapest first), in that order, or all of them in
/// the configured order when the engine named no zone. A list that matches
/// no subnet (prices from zones this pool does not use) falls back to all
/// of them rather than launching nowhere.
fn subnets_in_order<'a>(subnets: &'a [SubnetConfig], zones: &[String]) -> Vec<&'a SubnetConfig> {
    let mut chosen: Vec<&SubnetConfig> = zones
        .iter()
        .flat_map(|z| subnets.iter().filter(move |s| &s.zone == z))
        .collect();
    if chosen.is_empty() {
        chosen = subnets.iter().collect();
    }
    chosen
}

fn parse_dollars(text: &str) -> Option<PricePerHour> {
    let dollars: f64 = text.parse().ok()?;
    (dollars.is_finite() && dollars >= 0.0)
        .then(|| Micros::from_dollars_f64(dollars).map(PricePerHour))
        .flatten()
}

#[async_trait::async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &str {
        "aws"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let pool = self.pool(&request.pool)?.clone();
        let mut launched: Vec<LaunchedInstance> = Vec::new();
        let mut last_capacity = None;
        let mut attempt = 0;
        let subnets = subnets_in_order(&pool.subnets, &request.zones);
        'types: for instance_type in &pool.instance_types {
            for subnet in &subnets {
                // The workers still without an instance: a suffix of the
                // batch, so still consecutive.
                let remaining: Vec<ebbtide_provider::WorkerLaunch> = request
                    .workers
                    .iter()
                    .filter(|w| !launched.iter().any(|l| l.worker == w.worker))
                    .cloned()
                    .collect();
                if remaining.is_empty() {
                    break 'types;
                }
                attempt += 1;
                match self
                    .run(&request, &pool, &remaining, instance_type, subnet, attempt)
                    .await
                {
                    Ok(more) => launched.extend(more),
                    Err(ProviderError::Capacity(why)) => {
                        tracing::info!(instance_type, subnet = %subnet.id, market = ?request.market, reason = %why, "no capacity; trying the next type/zone");
                        last_capacity = Some(why);
                    }
                    Err(e) if launched.is_empty() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "launch stopped after a partial batch");
                        break 'types;
                    }
                }
            }
        }
        if launched.is_empty()
            && let Some(why) = last_capacity
        {
            return Err(ProviderError::Capacity(format!(
                "every instance type and zone of pool {} is out of {} capacity: {why}",
                request.pool,
                request.market.name()
            )));
        }
        Ok(launched)
    }

    async fn terminate(&self, instances: &[InstanceId]) -> Result<(), ProviderError> {
        let ours = self.ours_among(instances).await?;
        for chunk in ours.chunks(1000) {
            self.count_call();
            match self
                .client
                .terminate_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if errors::code(&e).as_deref() == Some("InvalidInstanceID.NotFound") => {}
                Err(e) => return Err(errors::classify(&e)),
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        let alive = Filter::builder()
            .name("instance-state-name")
            .set_values(Some(
                ["pending", "running", "stopping", "stopped", "shutting-down"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ))
            .build();
        let mut out = Vec::new();
        for i in self.describe(vec![self.cluster_filter(), alive]).await? {
            let tag = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .map(str::to_string)
            };
            if tag(labels::CLUSTER).as_deref() != Some(self.config.cluster.as_str()) {
                continue;
            }
            let (Some(id), Some(first), Some(index), Some(pool)) = (
                i.instance_id(),
                tag(FIRST_WORKER_TAG).and_then(|f| f.parse::<u64>().ok()),
                i.ami_launch_index().and_then(|x| u64::try_from(x).ok()),
                tag(labels::POOL),
            ) else {
                continue;
            };
            out.push(InstanceInfo {
                instance: InstanceId(id.to_string()),
                worker: WorkerId(first + index),
                pool,
                market: labels::parse_market(tag(labels::MARKET).as_deref()),
                zone: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .map(str::to_string),
                running: matches!(
                    i.state().and_then(|s| s.name()),
                    Some(InstanceStateName::Pending | InstanceStateName::Running)
                ),
            });
        }
        Ok(out)
    }

    async fn offerings(&self) -> Result<Vec<Offering>, ProviderError> {
        let mut out: Vec<Offering> = Vec::new();
        for pool in self.config.pools.values() {
            for t in &pool.instance_types {
                if let Some(price) = self.config.on_demand_prices.get(t) {
                    for s in &pool.subnets {
                        let o = Offering {
                            shape: t.clone(),
                            zone: Some(s.zone.clone()),
                            market: Market::OnDemand,
                            price: *price,
                            available: true,
                        };
                        if !out.contains(&o) {
                            out.push(o);
                        }
                    }
                }
            }
        }
        out.extend(self.spot_offerings().await?);
        Ok(out)
    }

    /// With AWS's certificate configured, a worker must present the
    /// identity document AWS signed for the very instance launched for it
    /// (checked before its token is redeemed, so a neighbour in its launch
    /// batch can neither register as it nor burn its token).
    async fn verify_registration(
        &self,
        claim: RegistrationClaim<'_>,
    ) -> Result<(), RegistrationRefused> {
        let Some(verifier) = &self.identity else {
            return Ok(());
        };
        let worker = claim.worker.0;
        let Some(evidence) = claim.evidence else {
            return Err(RegistrationRefused::Refused(format!(
                "worker {worker} is an EC2 instance: its instance identity document and signature are required"
            )));
        };
        let verified = verifier
            .verify(&evidence.document, &evidence.signature)
            .map_err(|e| RegistrationRefused::Refused(e.to_string()))?;
        if verified.region != self.config.region {
            return Err(RegistrationRefused::Refused(format!(
                "instance identity is from region {}, the scheduler launches in {}",
                verified.region, self.config.region
            )));
        }
        match claim.launched {
            Some(instance) if instance.0 == verified.instance_id => Ok(()),
            Some(instance) => Err(RegistrationRefused::Refused(format!(
                "instance {} presented worker {worker}'s credentials, which were issued to instance {}",
                verified.instance_id, instance.0
            ))),
            None => Err(RegistrationRefused::NotYet(format!(
                "worker {worker}'s launch is not confirmed yet; retry"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SubnetConfig, subnets_in_order};

    fn subnet(id: &str, zone: &str) -> SubnetConfig {
        SubnetConfig {
            id: id.into(),
            zone: zone.into(),
        }
    }

    #[test]
    fn a_launch_tries_the_engines_zones_in_its_order_and_skips_locked_ones() {
        let all = [
            subnet("s-a", "az-a"),
            subnet("s-b", "az-b"),
            subnet("s-c", "az-c"),
        ];
        let ids = |zones: &[&str]| -> Vec<String> {
            let zones: Vec<String> = zones.iter().map(|z| z.to_string()).collect();
            subnets_in_order(&all, &zones)
                .iter()
                .map(|s| s.id.clone())
                .collect()
        };
        assert_eq!(ids(&["az-c", "az-a"]), ["s-c", "s-a"], "az-b is locked");
        assert_eq!(
            ids(&[]),
            ["s-a", "s-b", "s-c"],
            "no zones: configured order"
        );
        assert_eq!(ids(&["az-x"]), ["s-a", "s-b", "s-c"], "unknown zones: all");
    }
}
