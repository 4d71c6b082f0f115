//! # ebbtide-server
//!
//! The scheduler service: the job API (HTTP, axum), the worker API (gRPC,
//! tonic) and the control loop that feeds the engine events and carries out
//! its commands. The loop owns the engine alone; everything else talks to
//! it through a channel, so no lock is ever held across the engine, and
//! provider calls run as tasks that report back as events — a slow cloud
//! API never blocks scheduling.
//!
//! It must never contain a scaling decision: those are the engine's.

mod auth;
mod control;
mod http_api;
mod session;
mod tokens;
mod worker_api;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ebbtide_config::ClusterConfig;
use ebbtide_core::Timestamp;
use ebbtide_provider::Provider;
use ebbtide_provider_local::{LocalConfig, LocalProvider};
use ebbtide_store::{SqliteStore, Store};
use tokio::sync::{mpsc, watch};

pub use control::LoopMsg;

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] ebbtide_store::StoreError),
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The engine refused the configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// A pool names a provider this build does not have.
    #[error("pool {pool:?} uses provider {provider:?}, which is not available (known: local)")]
    UnknownProvider {
        /// The pool.
        pool: String,
        /// The provider it names.
        provider: String,
    },
}

/// A running server.
pub struct ServerHandle {
    /// Where the job API listens.
    pub http_addr: SocketAddr,
    /// Where the worker API listens.
    pub grpc_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tx: mpsc::Sender<LoopMsg>,
    auth: auth::ApiKeys,
    classes: Arc<std::sync::RwLock<Vec<ebbtide_core::ClassConfig>>>,
}

impl ServerHandle {
    /// Replaces pools, tenants, classes, policies and API keys without
    /// dropping jobs or workers. A configuration the engine refuses (an
    /// entry removed or reordered, a broken rule) leaves everything as it
    /// was. `[server]` settings (addresses, data directory) need a restart.
    pub async fn reload(&self, config: ClusterConfig) -> Result<(), String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(LoopMsg::Reload {
                engine: Box::new(config.engine.clone()),
                reply,
            })
            .await
            .map_err(|_| "scheduler loop not running".to_string())?;
        answer
            .await
            .map_err(|_| "scheduler loop not running".to_string())??;
        self.auth.replace(&config.api_keys);
        if let Ok(mut c) = self.classes.write() {
            *c = config.engine.classes.clone();
        }
        Ok(())
    }

    /// Stops accepting requests and waits for the listeners to close.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Wall-clock now, as the engine's timestamp: the service is the one place
/// that reads the clock.
pub(crate) fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Timestamp::from_millis(ms)
}

/// Starts the store, the control loop and both APIs, with the providers
/// this build has (see [`build_providers`]).
pub async fn start(config: ClusterConfig) -> Result<ServerHandle, ServerError> {
    let providers = build_providers(&config)?;
    start_with_providers(config, providers).await
}

/// Starts the server with providers the caller built: how tests and
/// benchmarks plug in an instrumented provider, and how an embedding
/// program adds its own.
pub async fn start_with_providers(
    config: ClusterConfig,
    providers: HashMap<String, Arc<dyn Provider>>,
) -> Result<ServerHandle, ServerError> {
    let data = config.server.data_dir.clone();
    std::fs::create_dir_all(&data).map_err(|source| ServerError::DataDir {
        path: data.display().to_string(),
        source,
    })?;
    for pool in &config.engine.pools {
        if !providers.contains_key(&pool.provider) {
            return Err(ServerError::UnknownProvider {
                pool: pool.name.clone(),
                provider: pool.provider.clone(),
            });
        }
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data.join("ebbtide.db")).await?);

    let http = tokio::net::TcpListener::bind(&config.server.http_listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.server.http_listen.clone(),
            source,
        })?;
    let grpc = tokio::net::TcpListener::bind(&config.server.grpc_listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.server.grpc_listen.clone(),
            source,
        })?;
    let http_addr = http.local_addr().map_err(|source| ServerError::Bind {
        addr: config.server.http_listen.clone(),
        source,
    })?;
    let grpc_addr = grpc.local_addr().map_err(|source| ServerError::Bind {
        addr: config.server.grpc_listen.clone(),
        source,
    })?;
    let mut config = config;
    if config.server.public_grpc_url.ends_with(":0") || config.server.grpc_listen.ends_with(":0") {
        config.server.public_grpc_url = format!("http://{grpc_addr}");
    }

    let (tx, rx) = mpsc::channel(8192);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let control = control::Control::new(&config, store.clone(), providers, tx.clone())
        .await
        .map_err(ServerError::Config)?;
    let sessions =
        session::SessionKey::load_or_create(&data.join("session.key")).map_err(|source| {
            ServerError::DataDir {
                path: data.join("session.key").display().to_string(),
                source,
            }
        })?;
    let mut tasks = vec![tokio::spawn(control.run(rx, shutdown_rx.clone()))];
    tasks.push(tokio::spawn(worker_api::serve(
        grpc,
        tx.clone(),
        store.clone(),
        sessions,
        config.server.clone(),
        shutdown_rx.clone(),
    )));
    let auth = auth::ApiKeys::new(&config.api_keys);
    let classes = Arc::new(std::sync::RwLock::new(config.engine.classes.clone()));
    tasks.push(tokio::spawn(http_api::serve(
        http,
        tx.clone(),
        store,
        auth.clone(),
        classes.clone(),
        shutdown_rx,
    )));
    tracing::info!(%http_addr, %grpc_addr, cluster = %config.server.cluster, "ebbtide serving");
    Ok(ServerHandle {
        http_addr,
        grpc_addr,
        shutdown,
        tasks,
        tx,
        auth,
        classes,
    })
}

/// The providers the pools of `config` name, built from its settings.
pub fn build_providers(
    config: &ClusterConfig,
) -> Result<HashMap<String, Arc<dyn Provider>>, ServerError> {
    let mut out: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    for pool in &config.engine.pools {
        if out.contains_key(&pool.provider) {
            continue;
        }
        match pool.provider.as_str() {
            "local" => {
                let program = match &config.server.agent_program {
                    Some(p) => p.clone(),
                    None => std::env::current_exe().map_err(|source| ServerError::DataDir {
                        path: "current executable".into(),
                        source,
                    })?,
                };
                let state_dir = config.server.data_dir.join("local-instances");
                let local = LocalProvider::new(LocalConfig {
                    cluster: config.server.cluster.clone(),
                    program,
                    args: vec!["agent".into()],
                    state_dir,
                })
                .map_err(|source| ServerError::DataDir {
                    path: config.server.data_dir.display().to_string(),
                    source,
                })?;
                out.insert("local".into(), Arc::new(local));
            }
            other => {
                return Err(ServerError::UnknownProvider {
                    pool: pool.name.clone(),
                    provider: other.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// How long a session token lasts (agents re-register after it expires).
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
