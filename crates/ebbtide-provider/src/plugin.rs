//! A provider as a plugin: its configuration schema plus a constructor.
//!
//! The binary is the one place that lists the plugins it has
//! ([`Plugins`]); the config crate hands each `[providers.NAME]` table to
//! the plugin's schema, and [`build_providers`] turns the validated
//! settings into running providers, each behind its API budget. The
//! scheduler itself names no provider.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ebbtide_config::{ClusterConfig, ProviderSchema, ProviderSettings};

use crate::{CallObserver, Governed, GovernorConfig, Provider};

/// What every provider may need from the scheduler's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContext {
    /// Cluster id, tagged on every instance.
    pub cluster: String,
    /// The scheduler's data directory (providers keep their state under it).
    pub data_dir: PathBuf,
    /// The program that is the agent (`server.agent_program`, else this
    /// binary): what local workers run and Docker images carry.
    pub agent_program: PathBuf,
    /// How long an agent that reaches no scheduler keeps its jobs.
    pub agent_orphan_timeout: Duration,
}

impl BuildContext {
    /// The context `config` describes.
    pub fn of(config: &ClusterConfig) -> Result<BuildContext, BuildError> {
        let agent_program = match &config.server.agent_program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|source| BuildError::Io {
                path: "the current executable (the default server.agent_program)".into(),
                source,
            })?,
        };
        Ok(BuildContext {
            cluster: config.server.cluster.clone(),
            data_dir: config.server.data_dir.clone(),
            agent_program,
            agent_orphan_timeout: config.server.agent_orphan_timeout,
        })
    }
}

/// A provider could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file or directory it needs could not be used.
    #[error("{path}: {source}")]
    Io {
        /// What.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its infrastructure refused to be set up (engine unreachable, image
    /// missing, certificate unreadable); the message names the setting.
    #[error("provider {provider}: {message}")]
    Setup {
        /// The provider.
        provider: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A pool names a provider this build does not have.
    #[error("pool {pool:?} uses provider {provider:?}, which this build does not have ({known})")]
    Unknown {
        /// The pool.
        pool: String,
        /// The provider it names.
        provider: String,
        /// What the build has.
        known: String,
    },
    /// The configuration was not validated by this plugin's schema.
    #[error("provider {0}: its settings were not read by its own schema")]
    Unvalidated(&'static str),
}

/// A provider crate's entry point: the schema of its table and the
/// constructor that takes what the schema returned.
#[async_trait::async_trait]
pub trait ProviderPlugin: ProviderSchema {
    /// Builds the provider from the settings its [`ProviderSchema::check`]
    /// returned (fetch them with [`settings_of`]).
    async fn build(
        &self,
        settings: &ProviderSettings,
        context: &BuildContext,
    ) -> Result<Arc<dyn Provider>, BuildError>;
}

/// The settings a plugin's schema stored, as its own type.
pub fn settings_of<'a, T: std::any::Any>(
    plugin: &dyn ProviderPlugin,
    settings: &'a ProviderSettings,
) -> Result<&'a T, BuildError> {
    settings
        .get::<T>()
        .ok_or(BuildError::Unvalidated(plugin.name()))
}

/// The providers a build has: the composition root's list.
#[derive(Clone, Copy)]
pub struct Plugins(pub &'static [&'static dyn ProviderPlugin]);

impl Plugins {
    /// Their schemas, for `ebbtide_config::parse`.
    pub fn schemas(&self) -> Vec<&'static dyn ProviderSchema> {
        self.0.iter().map(|p| *p as &dyn ProviderSchema).collect()
    }

    /// Their names, for messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|p| p.name()).collect()
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&'static dyn ProviderPlugin> {
        self.0.iter().copied().find(|p| p.name() == name)
    }
}

/// The providers the pools of `config` name, built from their settings,
/// each behind its API rate limit and retry policy
/// (`[providers.NAME.api]`); `observer` sees every call.
pub async fn build_providers(
    config: &ClusterConfig,
    plugins: Plugins,
    observer: Option<Arc<dyn CallObserver>>,
) -> Result<HashMap<String, Arc<dyn Provider>>, BuildError> {
    let context = BuildContext::of(config)?;
    let mut out: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    for pool in &config.engine.pools {
        if out.contains_key(&pool.provider) {
            continue;
        }
        let unknown = || BuildError::Unknown {
            pool: pool.name.clone(),
            provider: pool.provider.clone(),
            known: plugins.names().join(", "),
        };
        let plugin = plugins.get(&pool.provider).ok_or_else(unknown)?;
        let configured = config
            .providers
            .get(&pool.provider)
            .ok_or(BuildError::Unvalidated(plugin.name()))?;
        let raw = plugin.build(&configured.settings, &context).await?;
        let limits = configured.api;
        let mut governed = Governed::new(
            raw,
            GovernorConfig {
                calls_per_second: NonZeroU32::new(limits.calls_per_second)
                    .unwrap_or(NonZeroU32::MIN),
                burst: NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN),
                max_retries: limits.max_retries as usize,
                ..GovernorConfig::default()
            },
        );
        if let Some(observer) = &observer {
            governed = governed.with_observer(observer.clone());
        }
        out.insert(pool.provider.clone(), Arc::new(governed));
    }
    Ok(out)
}
