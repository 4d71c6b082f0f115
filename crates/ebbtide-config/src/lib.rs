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
mod providers;
mod reports;
mod schema;
mod service;

pub use providers::{
    ApiLimits, ProviderConfig, ProviderSchema, ProviderSection, ProviderSettings, ProvidersConfig,
    price_per_hour,
};
pub use reports::{CostReportsConfig, S3ReportSettings};
pub use schema::{LogFormat, OnStop};
pub use service::{heartbeat_interval, warnings};

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

/// An operator's API key: fleet-wide views and every tenant's jobs. Its
/// `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorKey {
    /// Who holds it, for the scheduler's log.
    pub operator: String,
    /// The key.
    pub key: String,
}

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OperatorKey {{ operator: {:?}, key: <redacted> }}",
            self.operator
        )
    }
}

/// A parsed and validated cluster configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The service's settings.
    pub server: ServerConfig,
    /// Tenants' API keys.
    pub api_keys: Vec<ApiKey>,
    /// Operators' API keys (`[[operators]]`).
    pub operator_keys: Vec<OperatorKey>,
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

impl Issue {
    /// A problem at a key path; `parse` finds its line.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            line: None,
            path: path.into(),
            message: message.into(),
        }
    }
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

/// Parses and validates configuration text. `providers` are the providers
/// this build has: each reads its own `[providers.NAME]` table, and a pool
/// may name only one of them.
pub fn parse(text: &str, providers: &[&dyn ProviderSchema]) -> Result<ClusterConfig, ConfigErrors> {
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
    let config = convert::to_cluster(file, text, providers, &mut issues);
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

/// Reads and validates a configuration file (see [`parse`]).
pub fn load(path: &Path, providers: &[&dyn ProviderSchema]) -> Result<ClusterConfig, LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: shown.clone(),
        source,
    })?;
    parse(&text, providers).map_err(|errors| LoadError::Invalid {
        path: shown,
        errors,
    })
}
