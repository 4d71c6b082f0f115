//! `[providers.aws]` and the constructor the binary lists.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ebbtide_config::{Issue, ProviderSchema, ProviderSection, ProviderSettings};
use ebbtide_core::PricePerHour;
use ebbtide_provider::{BuildContext, BuildError, Provider, ProviderPlugin, settings_of};
use serde::Deserialize;

use crate::identity::IdentityVerifier;
use crate::{AwsConfig, AwsProvider, PoolLaunch, SubnetConfig};

/// `[providers.aws]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsSection {
    region: String,
    /// For an emulator in tests only.
    endpoint: Option<String>,
    /// On-demand $/h per instance type.
    #[serde(default)]
    on_demand_prices: BTreeMap<String, f64>,
    #[serde(with = "humantime_serde", default = "default_spot_ttl")]
    spot_price_ttl: Duration,
    /// PEM certificate (or public key) AWS signs identity documents with.
    identity_certificate: Option<PathBuf>,
    #[serde(default)]
    pools: BTreeMap<String, AwsPoolSection>,
}

fn default_spot_ttl() -> Duration {
    Duration::from_secs(300)
}

/// `[providers.aws.pools.NAME]`: how one pool launches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsPoolSection {
    ami: String,
    instance_types: Vec<String>,
    subnets: Vec<AwsSubnetSection>,
    #[serde(default)]
    security_groups: Vec<String>,
    iam_instance_profile: Option<String>,
    max_spot_price: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    agent_install: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsSubnetSection {
    id: String,
    zone: String,
}

/// `[providers.aws]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSettings {
    /// Region.
    pub region: String,
    /// Endpoint override, for an emulator in tests only.
    pub endpoint: Option<String>,
    /// On-demand price per instance type.
    pub on_demand_prices: BTreeMap<String, PricePerHour>,
    /// How long spot prices are reused.
    pub spot_price_ttl: Duration,
    /// AWS's public certificate for the region (PEM), to verify instance
    /// identity documents at registration; `None` accepts a batch token
    /// alone (decision 0010).
    pub identity_certificate: Option<PathBuf>,
    /// Launch settings per pool name.
    pub pools: BTreeMap<String, PoolLaunch>,
}

/// The EC2 provider's plugin.
pub struct AwsPlugin;

impl ProviderSchema for AwsPlugin {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn check(
        &self,
        section: &ProviderSection<'_>,
        issues: &mut Vec<Issue>,
    ) -> Option<ProviderSettings> {
        let a: AwsSection = section.deserialize_required(
            "its region, prices and [providers.aws.pools.NAME] launch settings",
            issues,
        )?;
        let before = issues.len();
        let prices = section.prices("on_demand_prices", &a.on_demand_prices, issues);
        let mut pools = BTreeMap::new();
        for (name, p) in a.pools {
            let at = |k: &str| section.key(&format!("pools.{name}.{k}"));
            if p.instance_types.is_empty() {
                issues.push(Issue::at(
                    at("instance_types"),
                    "list at least one instance type",
                ));
            }
            if p.subnets.is_empty() {
                issues.push(Issue::at(
                    at("subnets"),
                    "list at least one subnet (one per zone)",
                ));
            }
            for t in &p.instance_types {
                if !prices.contains_key(t) {
                    issues.push(Issue::at(
                        at("instance_types"),
                        format!("{t} has no price in [providers.aws.on_demand_prices]"),
                    ));
                }
            }
            pools.insert(
                name,
                PoolLaunch {
                    ami: p.ami,
                    instance_types: p.instance_types,
                    subnets: p
                        .subnets
                        .into_iter()
                        .map(|s| SubnetConfig {
                            id: s.id,
                            zone: s.zone,
                        })
                        .collect(),
                    security_groups: p.security_groups,
                    iam_instance_profile: p.iam_instance_profile,
                    max_spot_price: p.max_spot_price,
                    tags: p.tags.into_iter().collect(),
                    agent_install: p.agent_install,
                },
            );
        }
        for (index, pool) in section.pools() {
            if !pools.contains_key(&pool.name) {
                issues.push(Issue::at(
                    format!("pools[{index}].provider"),
                    format!(
                        "pool {:?} uses aws but has no [providers.aws.pools.{}] launch settings",
                        pool.name, pool.name
                    ),
                ));
            }
        }
        if let Some(path) = &a.identity_certificate
            && let Err(e) = read_verifier(path)
        {
            issues.push(Issue::at(section.key("identity_certificate"), e));
        }
        (issues.len() == before).then(|| {
            ProviderSettings::new(AwsSettings {
                region: a.region.clone(),
                endpoint: a.endpoint,
                on_demand_prices: prices,
                spot_price_ttl: a.spot_price_ttl,
                identity_certificate: a.identity_certificate,
                pools,
            })
            .with_region(a.region)
        })
    }
}

/// The verifier in the certificate file at `path`.
fn read_verifier(path: &std::path::Path) -> Result<IdentityVerifier, String> {
    let shown = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    IdentityVerifier::from_pem(&pem, &shown).map_err(|e| e.to_string())
}

#[async_trait::async_trait]
impl ProviderPlugin for AwsPlugin {
    async fn build(
        &self,
        settings: &ProviderSettings,
        context: &BuildContext,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        let a: &AwsSettings = settings_of(self, settings)?;
        let identity = match &a.identity_certificate {
            Some(path) => Some(read_verifier(path).map_err(|message| BuildError::Setup {
                provider: "aws",
                message: format!("providers.aws.identity_certificate: {message}"),
            })?),
            None => {
                tracing::warn!(
                    "providers.aws.identity_certificate is not set: an EC2 worker registers with its batch token alone, which every instance of its launch batch can read"
                );
                None
            }
        };
        let provider = AwsProvider::new(AwsConfig {
            cluster: context.cluster.clone(),
            region: a.region.clone(),
            endpoint: a.endpoint.clone(),
            pools: a.pools.clone().into_iter().collect(),
            on_demand_prices: a.on_demand_prices.clone().into_iter().collect(),
            spot_price_ttl: a.spot_price_ttl,
            #[cfg(feature = "testkit")]
            test_credentials: None,
        })
        .await
        .with_identity_check(identity);
        Ok(Arc::new(provider))
    }
}
