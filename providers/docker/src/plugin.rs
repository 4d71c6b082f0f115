//! `[providers.docker]` and the constructor the binary lists.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ebbtide_config::{Issue, ProviderSchema, ProviderSection, ProviderSettings};
use ebbtide_core::PricePerHour;
use ebbtide_provider::{BuildContext, BuildError, Provider, ProviderPlugin, settings_of};
use serde::Deserialize;

use crate::{DockerConfig, DockerProvider, ImageSource};

/// `[providers.docker]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DockerSection {
    socket: Option<String>,
    #[serde(default = "default_network")]
    network: String,
    image: Option<String>,
    tools: Option<Vec<PathBuf>>,
    #[serde(default)]
    prices: BTreeMap<String, f64>,
    #[serde(default = "default_stop_grace")]
    stop_grace_secs: u32,
}

fn default_network() -> String {
    "host".into()
}

fn default_stop_grace() -> u32 {
    5
}

/// `[providers.docker]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerSettings {
    /// Engine address (`unix:///var/run/docker.sock` when absent).
    pub socket: Option<String>,
    /// Network mode of worker containers (`host` by default).
    pub network: String,
    /// An existing image with the agent at `/ebbtide`; absent: one is
    /// imported from local files.
    pub image: Option<String>,
    /// Programs to put in an imported image (absent: a shell and a few
    /// coreutils).
    pub tools: Option<Vec<PathBuf>>,
    /// Price of an instance-hour per shape (Docker has no price list).
    pub prices: BTreeMap<String, PricePerHour>,
    /// Seconds a stopping container gets before it is killed.
    pub stop_grace_secs: u32,
}

/// The Docker provider's plugin.
pub struct DockerPlugin;

impl ProviderSchema for DockerPlugin {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn check(
        &self,
        section: &ProviderSection<'_>,
        issues: &mut Vec<Issue>,
    ) -> Option<ProviderSettings> {
        let d: DockerSection = section
            .deserialize_required("a price per shape in [providers.docker.prices]", issues)?;
        let before = issues.len();
        let prices = section.prices("prices", &d.prices, issues);
        for (index, pool) in section.pools() {
            if !prices.contains_key(&pool.shape.name) {
                issues.push(Issue::at(
                    format!("pools[{index}].shape.name"),
                    format!(
                        "shape {:?} has no price in [providers.docker.prices] (Docker has no price list; give one per shape, 0.0 if free)",
                        pool.shape.name
                    ),
                ));
            }
        }
        if i32::try_from(d.stop_grace_secs).is_err() {
            issues.push(Issue::at(
                section.key("stop_grace_secs"),
                format!("must be at most {}", i32::MAX),
            ));
        }
        (issues.len() == before).then(|| {
            ProviderSettings::new(DockerSettings {
                socket: d.socket,
                network: d.network,
                image: d.image,
                tools: d.tools,
                prices,
                stop_grace_secs: d.stop_grace_secs,
            })
        })
    }
}

#[async_trait::async_trait]
impl ProviderPlugin for DockerPlugin {
    async fn build(
        &self,
        settings: &ProviderSettings,
        context: &BuildContext,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        let d: &DockerSettings = settings_of(self, settings)?;
        let image = match (&d.image, &d.tools) {
            (Some(name), _) => ImageSource::Named(name.clone()),
            (None, Some(tools)) => ImageSource::Import {
                agent: context.agent_program.clone(),
                tools: tools.clone(),
            },
            (None, None) => ImageSource::import_default(context.agent_program.clone()),
        };
        let provider = DockerProvider::connect(DockerConfig {
            cluster: context.cluster.clone(),
            socket: d.socket.clone(),
            network: d.network.clone(),
            image,
            prices: d.prices.clone().into_iter().collect(),
            stop_grace_secs: i32::try_from(d.stop_grace_secs).unwrap_or(i32::MAX),
        })
        .await
        .map_err(|e| BuildError::Setup {
            provider: "docker",
            message: e.to_string(),
        })?;
        Ok(Arc::new(provider))
    }
}
