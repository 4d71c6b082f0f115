//! # ebbtide-config
//!
//! One TOML file configures a cluster: engine settings, priority classes,
//! tenants and pools. This crate turns the text into a validated
//! [`ebbtide_core::EngineConfig`] and reports *every* problem at once, each
//! with its key path and line, because an operator fixing a config wants
//! the whole list, not one error per restart.
//!
//! It must never depend on the server, a provider SDK or any I/O beyond
//! reading the file it is given.

mod convert;
mod locate;
mod reports;
mod schema;
mod service;

pub use reports::{CostReportsConfig, S3ReportSettings};
pub use schema::{LogFormat, OnStop};
pub use service::{KNOWN_PROVIDERS, heartbeat_interval, warnings};

use std::path::Path;

use ebbtide_core::{EngineConfig, TenantConfig};

/// The scheduler service's own settings (`[server]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Cluster id, tagged on every instance Ebbtide launches.
    pub cluster: String,
    /// Job API address.
    pub http_listen: String,
    /// Worker API (gRPC) address.
    pub grpc_listen: String,
    /// Address agents dial (defaults to `http://{grpc_listen}`).
    pub public_grpc_url: String,
    /// Where the store and provider state live.
    pub data_dir: std::path::PathBuf,
    /// Engine tick interval.
    pub tick: std::time::Duration,
    /// How long a bootstrap token stays valid.
    pub bootstrap_token_ttl: std::time::Duration,
    /// Program the local provider runs as agent (`None`: this binary).
    pub agent_program: Option<std::path::PathBuf>,
    /// How often each provider's instances are compared with the engine's.
    pub reconcile_interval: std::time::Duration,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or
    /// `info,ebbtide_server=debug`); `RUST_LOG` overrides it.
    pub log_level: String,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// How long an instance nobody knows (an orphan of a crash) may live
    /// before the reconciler terminates it; covers launches in flight.
    pub orphan_grace: std::time::Duration,
    /// Most output stored per job (all attempts together); what follows
    /// is dropped and a marker in the log says so.
    pub max_job_output: u64,
    /// How long an agent that reaches no scheduler keeps its jobs before
    /// it stops them and exits.
    pub agent_orphan_timeout: std::time::Duration,
    /// On SIGTERM: how long running jobs get to finish before the
    /// scheduler stops.
    pub stop_grace: std::time::Duration,
    /// On SIGTERM: leave the workers for the next scheduler, or terminate.
    pub on_stop: OnStop,
}

/// Settings of the providers the pools use.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProvidersConfig {
    /// `[providers.docker]`, if given.
    pub docker: Option<DockerSettings>,
    /// `[providers.aws]`, if given.
    pub aws: Option<AwsSettings>,
    /// API limits per provider name (defaults for any not listed).
    pub api: std::collections::BTreeMap<String, ApiLimits>,
}

/// `[providers.aws]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSettings {
    /// Region.
    pub region: String,
    /// Endpoint override, for an emulator in tests only.
    pub endpoint: Option<String>,
    /// On-demand price per instance type.
    pub on_demand_prices: std::collections::BTreeMap<String, ebbtide_core::PricePerHour>,
    /// How long spot prices are reused.
    pub spot_price_ttl: std::time::Duration,
    /// AWS's public certificate for the region (PEM), to verify instance
    /// identity documents at registration; `None` accepts a batch token
    /// alone (decision 0010).
    pub identity_certificate: Option<std::path::PathBuf>,
    /// Launch settings per pool name.
    pub pools: std::collections::BTreeMap<String, AwsPoolSettings>,
}

/// `[providers.aws.pools.NAME]`: how one pool launches.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsPoolSettings {
    /// AMI id.
    pub ami: String,
    /// Instance types, in order of preference.
    pub instance_types: Vec<String>,
    /// (subnet id, zone), in order of preference.
    pub subnets: Vec<(String, String)>,
    /// Security group ids.
    pub security_groups: Vec<String>,
    /// IAM instance profile name.
    pub iam_instance_profile: Option<String>,
    /// Highest spot price, $/h as EC2 writes it.
    pub max_spot_price: Option<String>,
    /// Extra tags.
    pub tags: std::collections::BTreeMap<String, String>,
    /// User-data lines that install the agent at /usr/local/bin/ebbtide.
    pub agent_install: String,
}

/// `[providers.docker]`.
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
    pub tools: Option<Vec<std::path::PathBuf>>,
    /// Price of an instance-hour per shape.
    pub prices: std::collections::BTreeMap<String, ebbtide_core::PricePerHour>,
    /// Seconds a stopping container gets before it is killed.
    pub stop_grace_secs: u32,
}

/// A provider's API call budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Sustained calls per second (at least 1).
    pub calls_per_second: u32,
    /// Calls allowed at once above it (at least 1).
    pub burst: u32,
    /// Retries of throttled or transient failures.
    pub max_retries: u32,
}

/// A tenant's API key. Its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The tenant it authenticates.
    pub tenant: String,
    /// The key.
    pub key: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey {{ tenant: {:?}, key: <redacted> }}", self.tenant)
    }
}

/// A parsed and validated cluster configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The service's settings.
    pub server: ServerConfig,
    /// Tenants' API keys.
    pub api_keys: Vec<ApiKey>,
    /// What the engine needs.
    pub engine: EngineConfig,
    /// Settings for tenants not listed by name (e.g. projects of a replayed
    /// trace), if the file gives `[tenant_defaults]`.
    pub tenant_defaults: Option<TenantConfig>,
    /// `[providers.*]`.
    pub providers: ProvidersConfig,
    /// `[cost_reports]`.
    pub cost_reports: CostReportsConfig,
}

impl ClusterConfig {
    /// A tenant named `name` with the `[tenant_defaults]` settings (weight 1
    /// and no limits when the file has none).
    pub fn tenant_from_defaults(&self, name: &str) -> TenantConfig {
        let mut t = self.tenant_defaults.clone().unwrap_or(TenantConfig {
            name: String::new(),
            weight: 1,
            quota: Default::default(),
            burst: None,
        });
        t.name = name.to_string();
        t
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// 1-based line, when the problem can be pinned to one.
    pub line: Option<usize>,
    /// Key path such as `pools[1].max` (empty for syntax errors).
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n{}", self.issues.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    /// The problems, in file order where known.
    pub issues: Vec<Issue>,
}

/// Reading a configuration file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path}: {errors}")]
    Invalid {
        /// The file.
        path: String,
        /// Its problems.
        errors: ConfigErrors,
    },
}

/// Parses and validates configuration text for this build's providers
/// ([`KNOWN_PROVIDERS`]).
pub fn parse(text: &str) -> Result<ClusterConfig, ConfigErrors> {
    parse_with(text, KNOWN_PROVIDERS)
}

/// [`parse`] for a program that runs other providers (an embedding
/// program, a test's scripted provider): a pool may name any of them.
pub fn parse_with(text: &str, providers: &[&str]) -> Result<ClusterConfig, ConfigErrors> {
    let file: schema::File = toml::from_str(text).map_err(|e| ConfigErrors {
        issues: vec![Issue {
            line: e.span().map(|s| locate::line_at(text, s.start)),
            path: e
                .span()
                .and_then(|s| locate::path_at(text, s.start))
                .unwrap_or_default(),
            message: e.message().trim().to_string(),
        }],
    })?;
    let mut issues = Vec::new();
    let config = convert::to_cluster(file, providers, &mut issues);
    if let Err(errors) = config.engine.validate() {
        issues.extend(errors.into_iter().map(|e| Issue {
            line: None,
            path: e.path,
            message: e.rule,
        }));
    }
    if issues.is_empty() {
        return Ok(config);
    }
    locate::fill_lines(text, &mut issues);
    issues.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
    Err(ConfigErrors { issues })
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<ClusterConfig, LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|errors| LoadError::Invalid {
        path: shown,
        errors,
    })
}
