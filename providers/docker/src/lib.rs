//! # ebbtide-provider-docker
//!
//! Workers as containers on a Docker engine. Each container runs
//! `ebbtide agent` from an image the provider imports locally from this
//! machine's own files (the agent binary, a shell and a few tools, with the
//! shared libraries they need), so no registry is ever contacted. An
//! operator with a real CI image names it in `[providers.docker] image`
//! instead.
//!
//! Containers carry the ownership labels of [`ebbtide_provider::labels`];
//! `list` finds this cluster's containers by label, also ones left from
//! before a scheduler crash, and nothing without the label is ever listed
//! or touched. Docker has no spot market: everything is on-demand, at the
//! price configured per shape.

mod errors;
mod image;
mod plugin;

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use ebbtide_core::{InstanceId, Market, PricePerHour, WorkerId};
use ebbtide_provider::{
    InstanceInfo, LaunchRequest, LaunchedInstance, Offering, Provider, ProviderError, labels,
};

pub use errors::classify;
pub use image::ImageSource;
pub use plugin::{DockerPlugin, DockerSettings};

/// Settings of the Docker provider.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Cluster id, put on every container as a label.
    pub cluster: String,
    /// Docker engine address (`unix:///var/run/docker.sock` by default).
    pub socket: Option<String>,
    /// Network mode of worker containers. `host` lets agents reach a
    /// scheduler listening on loopback; a bridge network needs the
    /// scheduler's `public_grpc_url` to be reachable from it.
    pub network: String,
    /// Where the image comes from.
    pub image: ImageSource,
    /// Price of an instance-hour per shape name (Docker has no market).
    pub prices: HashMap<String, PricePerHour>,
    /// Seconds a stopping agent gets before it is killed.
    pub stop_grace_secs: i32,
}

/// Workers as containers on one Docker engine, all from one image
/// (resolved or imported once, at connect), so a launch is only a create
/// and a start.
pub struct DockerProvider {
    docker: Docker,
    config: DockerConfig,
    image: String,
}

/// The provider could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The engine could not be reached.
    #[error("cannot reach the Docker engine at {address}: {source}")]
    Connect {
        /// The address tried.
        address: String,
        /// Why.
        source: bollard::errors::Error,
    },
    /// The worker image could not be found or built.
    #[error("worker image: {0}")]
    Image(String),
}

impl DockerProvider {
    /// Connects to the engine and makes sure the worker image exists
    /// (importing it from local files if needed).
    pub async fn connect(config: DockerConfig) -> Result<DockerProvider, SetupError> {
        let address = config
            .socket
            .clone()
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let docker = match address.strip_prefix("unix://") {
            Some(path) => Docker::connect_with_socket(path, 30, bollard::API_DEFAULT_VERSION),
            None => Docker::connect_with_http(&address, 30, bollard::API_DEFAULT_VERSION),
        }
        .map_err(|source| SetupError::Connect {
            address: address.clone(),
            source,
        })?;
        docker
            .ping()
            .await
            .map_err(|source| SetupError::Connect { address, source })?;
        let image = image::ensure(&docker, &config.image)
            .await
            .map_err(SetupError::Image)?;
        Ok(DockerProvider {
            docker,
            config,
            image,
        })
    }

    /// The image worker containers run.
    pub fn image(&self) -> &str {
        &self.image
    }

    fn container_name(&self, worker: WorkerId) -> String {
        format!("ebbtide-{}-w{}", self.config.cluster, worker.0)
    }

    /// Whether the container exists and carries our cluster label; `None`
    /// if it does not exist.
    async fn ours(&self, id: &str) -> Result<Option<bool>, ProviderError> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(
                c.config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(labels::CLUSTER).cloned())
                    .is_some_and(|v| v == self.config.cluster),
            )),
            Err(e) if errors::status(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(&e)),
        }
    }

    async fn launch_one(
        &self,
        request: &LaunchRequest,
        worker: &ebbtide_provider::WorkerLaunch,
    ) -> Result<InstanceId, ProviderError> {
        let name = self.container_name(worker.worker);
        let mut tags = HashMap::new();
        tags.insert(labels::CLUSTER.to_string(), self.config.cluster.clone());
        tags.insert(labels::POOL.to_string(), request.pool.clone());
        tags.insert(labels::WORKER.to_string(), worker.worker.0.to_string());
        tags.insert(
            labels::MARKET.to_string(),
            Market::OnDemand.name().to_string(),
        );
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(vec![
                image::AGENT_PATH.to_string(),
                "agent".into(),
                "--scheduler".into(),
                request.scheduler_url.clone(),
                "--worker-id".into(),
                worker.worker.0.to_string(),
            ]),
            env: Some(vec![
                format!(
                    "EBBTIDE_BOOTSTRAP_TOKEN={}",
                    worker.bootstrap_token.expose()
                ),
                format!("EBBTIDE_CLUSTER={}", self.config.cluster),
                format!("EBBTIDE_POOL={}", request.pool),
                "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            ]),
            labels: Some(tags),
            host_config: Some(HostConfig {
                nano_cpus: Some(i64::from(request.cpu_millis) * 1_000_000),
                memory: Some(i64::from(request.memory_mib) * 1024 * 1024),
                network_mode: Some(self.config.network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await;
        let id = match created {
            Ok(c) => c.id,
            // Same name: an earlier attempt of this very launch created it
            // (the answer was lost); take it rather than launch twice.
            Err(e) if errors::status(&e) == Some(409) => match self.ours(&name).await? {
                Some(true) => name.clone(),
                _ => {
                    return Err(ProviderError::Permanent(format!(
                        "container name {name} is taken by something that is not ours"
                    )));
                }
            },
            Err(e) => return Err(classify(&e)),
        };
        if let Err(e) = self
            .docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            // Do not leave a created-but-dead container behind.
            let _ = self.remove(&id).await;
            return Err(classify(&e));
        }
        Ok(InstanceId(id))
    }

    async fn remove(&self, id: &str) -> Result<(), ProviderError> {
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(self.config.stop_grace_secs),
                    signal: None,
                }),
            )
            .await
        {
            Ok(()) => {}
            // 304: already stopped; 404: already gone.
            Err(e) if matches!(errors::status(&e), Some(304 | 404)) => {}
            Err(e) => return Err(classify(&e)),
        }
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            // 404: gone; 409: removal already in progress.
            Err(e) if matches!(errors::status(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }
}

#[async_trait::async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &str {
        "docker"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let mut launched = Vec::with_capacity(request.workers.len());
        for w in &request.workers {
            match self.launch_one(&request, w).await {
                Ok(instance) => launched.push(LaunchedInstance {
                    worker: w.worker,
                    instance,
                    zone: None,
                }),
                // Some launched: report those; the engine sees the rest
                // missing and plans again.
                Err(e) if !launched.is_empty() => {
                    tracing::warn!(worker = w.worker.0, error = %e, "container launch failed after others succeeded");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(launched)
    }

    async fn terminate(&self, instances: &[InstanceId]) -> Result<(), ProviderError> {
        for instance in instances {
            match self.ours(&instance.0).await? {
                Some(true) => self.remove(&instance.0).await?,
                Some(false) => {
                    tracing::warn!(container = %instance.0, "refusing to terminate a container that is not ours");
                }
                None => {}
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![format!("{}={}", labels::CLUSTER, self.config.cluster)],
        );
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| classify(&e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let tags = c.labels.unwrap_or_default();
                // Belt and braces: the filter already asked for our label.
                if tags.get(labels::CLUSTER) != Some(&self.config.cluster) {
                    return None;
                }
                let worker = tags.get(labels::WORKER)?.parse().ok()?;
                Some(InstanceInfo {
                    instance: InstanceId(c.id?),
                    worker: WorkerId(worker),
                    pool: tags.get(labels::POOL)?.clone(),
                    market: labels::parse_market(tags.get(labels::MARKET).map(String::as_str)),
                    zone: None,
                    running: matches!(
                        c.state,
                        Some(
                            ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::CREATED
                        )
                    ),
                })
            })
            .collect())
    }

    async fn offerings(&self) -> Result<Vec<Offering>, ProviderError> {
        Ok(self
            .config
            .prices
            .iter()
            .map(|(shape, price)| Offering {
                shape: shape.clone(),
                zone: None,
                market: Market::OnDemand,
                price: *price,
                available: true,
            })
            .collect())
    }
}

/// Where the agent binary is by default: this program.
pub fn default_agent_binary() -> std::io::Result<PathBuf> {
    std::env::current_exe()
}
