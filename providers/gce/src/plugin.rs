//! `[providers.gce]` and the constructor the binary lists.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ebbtide_config::{Issue, ProviderSchema, ProviderSection, ProviderSettings};
use ebbtide_core::PricePerHour;
use ebbtide_provider::{BuildContext, BuildError, Provider, ProviderPlugin, settings_of};
use serde::Deserialize;

use crate::{Clients, GceConfig, GcePool, GceProvider, PoolSource, names, prices};

/// `[providers.gce]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GceSection {
    project: String,
    region: String,
    /// Zones in order of preference, for pools that list none.
    #[serde(default)]
    zones: Vec<String>,
    network: Option<String>,
    subnetwork: Option<String>,
    service_account: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(with = "humantime_serde", default = "default_zone_block")]
    zone_block: Duration,
    #[serde(with = "humantime_serde", default = "default_operation_deadline")]
    operation_deadline: Duration,
    /// Google's token signing keys (a JSON Web Key Set file).
    identity_keys: Option<std::path::PathBuf>,
    /// For a fake in tests only.
    endpoint: Option<String>,
    #[serde(default)]
    prices: PricesSection,
    #[serde(default)]
    pools: BTreeMap<String, GcePoolSection>,
}

fn default_zone_block() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_operation_deadline() -> Duration {
    Duration::from_secs(5 * 60)
}

/// `[providers.gce.prices]`: $/h per machine type, over the built-in list
/// prices.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesSection {
    #[serde(default)]
    on_demand: BTreeMap<String, f64>,
    #[serde(default)]
    spot: BTreeMap<String, f64>,
}

/// `[providers.gce.pools.NAME]`: how one pool launches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcePoolSection {
    machine_types: Vec<String>,
    image: Option<String>,
    instance_template: Option<String>,
    disk_size_gb: Option<u32>,
    disk_type: Option<String>,
    zones: Option<Vec<String>>,
    #[serde(default = "yes")]
    external_ip: bool,
    #[serde(default)]
    network_tags: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    agent_install: String,
}

fn yes() -> bool {
    true
}

/// Smallest boot disk Compute Engine creates, GB.
const MIN_DISK_GB: u32 = 10;
/// Largest boot disk Compute Engine creates, GB.
const MAX_DISK_GB: u32 = 65_536;

/// `[providers.gce]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GceSettings {
    /// Project id.
    pub project: String,
    /// Region.
    pub region: String,
    /// Endpoint override, for a fake in tests only.
    pub endpoint: Option<String>,
    /// Standard price per machine type.
    pub on_demand_prices: BTreeMap<String, PricePerHour>,
    /// Spot price per machine type.
    pub spot_prices: BTreeMap<String, PricePerHour>,
    /// How long a stockout closes a zone.
    pub zone_block: Duration,
    /// How long a launch waits for its operation.
    pub operation_deadline: Duration,
    /// Google's signing keys (a JWKS file), to verify identity tokens at
    /// registration; `None` accepts a batch token alone.
    pub identity_keys: Option<std::path::PathBuf>,
    /// Launch settings per pool name.
    pub pools: BTreeMap<String, GcePool>,
}

/// The GCE provider's plugin.
pub struct GcePlugin;

impl ProviderSchema for GcePlugin {
    fn name(&self) -> &'static str {
        "gce"
    }

    fn check(
        &self,
        section: &ProviderSection<'_>,
        issues: &mut Vec<Issue>,
    ) -> Option<ProviderSettings> {
        let g: GceSection = section.deserialize_required(
            "its project, region, zones and [providers.gce.pools.NAME] launch settings",
            issues,
        )?;
        let before = issues.len();
        if let Err(e) = names::check_cluster(section.cluster()) {
            issues.push(Issue::at("server.cluster", e));
        }
        for (key, value) in [("project", &g.project), ("region", &g.region)] {
            if value.trim().is_empty() {
                issues.push(Issue::at(section.key(key), "must not be empty"));
            }
        }
        check_zones(section, "zones", &g.zones, &g.region, issues);
        let overrides_od = section.prices("prices.on_demand", &g.prices.on_demand, issues);
        let overrides_spot = section.prices("prices.spot", &g.prices.spot, issues);
        let mut on_demand = BTreeMap::new();
        let mut spot = BTreeMap::new();
        let mut pools = BTreeMap::new();
        for (name, p) in g.pools {
            let at = |k: &str| section.key(&format!("pools.{name}.{k}"));
            if let Err(e) = names::check_label_value(&name) {
                issues.push(Issue::at(
                    section.key(&format!("pools.{name}")),
                    format!("the pool name labels its instances: {e}"),
                ));
            }
            if p.machine_types.is_empty() {
                issues.push(Issue::at(
                    at("machine_types"),
                    "list at least one machine type",
                ));
            }
            let zones = p.zones.clone().unwrap_or_else(|| g.zones.clone());
            if zones.is_empty() {
                issues.push(Issue::at(
                    at("zones"),
                    "list at least one zone here or in [providers.gce] zones",
                ));
            }
            if p.zones.is_some() {
                check_zones(
                    section,
                    &format!("pools.{name}.zones"),
                    &zones,
                    &g.region,
                    issues,
                );
            }
            let source = match (&p.image, &p.instance_template) {
                (Some(image), None) => {
                    let disk_size_gb = p.disk_size_gb.unwrap_or(50);
                    if !(MIN_DISK_GB..=MAX_DISK_GB).contains(&disk_size_gb) {
                        issues.push(Issue::at(
                            at("disk_size_gb"),
                            format!("{disk_size_gb} GB: a boot disk is {MIN_DISK_GB} to {MAX_DISK_GB} GB"),
                        ));
                    }
                    PoolSource::Image {
                        image: image.clone(),
                        disk_size_gb,
                        disk_type: p.disk_type.clone().unwrap_or_else(|| "pd-balanced".into()),
                    }
                }
                (None, Some(template)) => {
                    for (key, set) in [
                        ("disk_size_gb", p.disk_size_gb.is_some()),
                        ("disk_type", p.disk_type.is_some()),
                    ] {
                        if set {
                            issues.push(Issue::at(
                                at(key),
                                "comes from the instance template; remove it or use image",
                            ));
                        }
                    }
                    PoolSource::Template(template.clone())
                }
                (Some(_), Some(_)) => {
                    issues.push(Issue::at(
                        at("image"),
                        "give image or instance_template, not both",
                    ));
                    continue;
                }
                (None, None) => {
                    issues.push(Issue::at(
                        at("image"),
                        "give the boot image (or instance_template)",
                    ));
                    continue;
                }
            };
            for (key, value) in &p.labels {
                if let Err(e) = names::check_label_key(key).and(names::check_label_value(value)) {
                    issues.push(Issue::at(at(&format!("labels.{key}")), e));
                }
                if key.starts_with("ebbtide-") {
                    issues.push(Issue::at(
                        at(&format!("labels.{key}")),
                        "labels starting with ebbtide- are Ebbtide's own (ownership and bookkeeping)",
                    ));
                }
            }
            for tag in &p.network_tags {
                if names::check_label_key(tag).is_err() || tag.contains('_') || tag.ends_with('-') {
                    issues.push(Issue::at(
                        at("network_tags"),
                        format!("{tag:?} is not a network tag: a lowercase letter, then lowercase letters, digits and '-', at most 63 characters, not ending in '-'"),
                    ));
                }
            }
            for t in &p.machine_types {
                let listed = prices::list_price(t, &g.region);
                match overrides_od.get(t).copied().or(listed.map(|l| l.on_demand)) {
                    Some(price) => {
                        on_demand.insert(t.clone(), price);
                    }
                    None => issues.push(Issue::at(
                        at("machine_types"),
                        format!(
                            "{t} has no price in {} (list prices of the week of {}): give it in [providers.gce.prices] on_demand",
                            g.region,
                            prices::table_week()
                        ),
                    )),
                }
                if let Some(price) = overrides_spot
                    .get(t)
                    .copied()
                    .or(listed.and_then(|l| l.spot))
                {
                    spot.insert(t.clone(), price);
                }
            }
            pools.insert(
                name,
                GcePool {
                    zones,
                    machine_types: p.machine_types,
                    source,
                    network: g.network.clone(),
                    subnetwork: g.subnetwork.clone(),
                    external_ip: p.external_ip,
                    service_account: g.service_account.clone(),
                    scopes: g.scopes.clone(),
                    network_tags: p.network_tags,
                    labels: p.labels,
                    agent_install: p.agent_install,
                },
            );
        }
        for (index, pool) in section.pools() {
            match pools.get(&pool.name) {
                None => issues.push(Issue::at(
                    format!("pools[{index}].provider"),
                    format!(
                        "pool {:?} uses gce but has no [providers.gce.pools.{}] launch settings",
                        pool.name, pool.name
                    ),
                )),
                Some(launch) if pool.market.spot_percent > 0 => {
                    for t in launch
                        .machine_types
                        .iter()
                        .filter(|t| !spot.contains_key(*t))
                    {
                        issues.push(Issue::at(
                            format!("pools[{index}].market.spot_percent"),
                            format!(
                                "pool {:?} buys spot but {t} has no spot price in {}: give it in [providers.gce.prices] spot",
                                pool.name, g.region
                            ),
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        if let Some(path) = &g.identity_keys
            && let Err(e) = read_keys(path)
        {
            issues.push(Issue::at(section.key("identity_keys"), e));
        }
        (issues.len() == before).then(|| {
            ProviderSettings::new(GceSettings {
                project: g.project,
                region: g.region.clone(),
                endpoint: g.endpoint,
                on_demand_prices: on_demand,
                spot_prices: spot,
                zone_block: g.zone_block,
                operation_deadline: g.operation_deadline,
                identity_keys: g.identity_keys,
                pools,
            })
            .with_region(g.region)
        })
    }
}

/// The signing keys in the JWKS file at `path`.
fn read_keys(path: &std::path::Path) -> Result<crate::identity::GoogleKeys, String> {
    let shown = path.display().to_string();
    let json = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    crate::identity::GoogleKeys::from_jwks(&json, &shown).map_err(|e| e.to_string())
}

/// Every zone must be in the region (`us-central1-a` in `us-central1`).
fn check_zones(
    section: &ProviderSection<'_>,
    key: &str,
    zones: &[String],
    region: &str,
    issues: &mut Vec<Issue>,
) {
    for zone in zones {
        let in_region = zone
            .strip_prefix(region)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|suffix| {
                !suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_lowercase())
            });
        if !in_region {
            issues.push(Issue::at(
                section.key(key),
                format!("{zone:?} is not a zone of region {region} (zones are {region}-a, {region}-b, …)"),
            ));
        }
    }
}

impl GceSettings {
    /// The provider's runtime configuration for `cluster`.
    pub fn config(&self, cluster: &str) -> GceConfig {
        GceConfig {
            cluster: cluster.to_string(),
            project: self.project.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            pools: self.pools.clone().into_iter().collect(),
            on_demand_prices: self.on_demand_prices.clone().into_iter().collect(),
            spot_prices: self.spot_prices.clone().into_iter().collect(),
            zone_block: self.zone_block,
            operation_deadline: self.operation_deadline,
            list_page_size: 500,
            #[cfg(feature = "testkit")]
            anonymous: false,
        }
    }
}

#[async_trait::async_trait]
impl ProviderPlugin for GcePlugin {
    async fn build(
        &self,
        settings: &ProviderSettings,
        context: &BuildContext,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        let g: &GceSettings = settings_of(self, settings)?;
        let config = g.config(&context.cluster);
        let clients = Clients::new(&config).await.map_err(|e| BuildError::Setup {
            provider: "gce",
            message: e.to_string(),
        })?;
        let keys = match &g.identity_keys {
            Some(path) => Some(read_keys(path).map_err(|message| BuildError::Setup {
                provider: "gce",
                message: format!("providers.gce.identity_keys: {message}"),
            })?),
            None => {
                tracing::warn!(
                    "providers.gce.identity_keys is not set: a GCE worker registers with its batch token alone, which every instance of its bulk insert can read"
                );
                None
            }
        };
        Ok(Arc::new(
            GceProvider::new(config, clients).with_identity_check(keys),
        ))
    }
}
