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
mod clock;
mod control;
mod costs;

pub use costs::publisher as cost_report_publisher;
mod http_api;
mod journal;
mod private;
mod reconcile;
mod session;
mod telemetry;
mod tokens;
mod worker_api;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ebbtide_config::ClusterConfig;
use ebbtide_core::Timestamp;
use ebbtide_cost_report::ReportSink;
use ebbtide_provider::{CallObserver, Provider};
use ebbtide_store::{SqliteStore, Store};
use tokio::sync::{mpsc, watch};

pub use control::{
    CostReport, DecisionReport, ExplainReport, HostStatus, LoopMsg, PoolChoiceReport, PoolReport,
    QueueReport, ReloadRefused, RunningJobReport, StatusReport, SubmitRefused, TenantStatus,
    WorkerRefused, WorkerReport,
};

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
    /// A pool's provider was not handed to [`start`].
    #[error("pool {pool:?} uses provider {provider:?}, which was not built")]
    MissingProvider {
        /// The pool.
        pool: String,
        /// The provider it names.
        provider: String,
    },
}

/// What the scheduler drives, built by the program that embeds it (the
/// `ebbtide` binary lists its provider plugins and report sinks; a test
/// brings a scripted provider).
pub struct Infrastructure {
    /// The providers the pools name, by name.
    pub providers: HashMap<String, Arc<dyn Provider>>,
    /// Where daily cost reports are uploaded besides the local spool.
    pub report_sink: Option<Arc<dyn ReportSink>>,
}

impl Infrastructure {
    /// Just these providers, reports kept in the local spool.
    pub fn providers(providers: HashMap<String, Arc<dyn Provider>>) -> Infrastructure {
        Infrastructure {
            providers,
            report_sink: None,
        }
    }
}

/// Counts every provider API call into the scheduler's metrics
/// (`ebbtide_provider_calls_total` and its latency): hand it to
/// `ebbtide_provider::build_providers`.
pub fn provider_call_metrics() -> Arc<dyn CallObserver> {
    Arc::new(telemetry::ProviderCalls)
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
    stopping: Arc<std::sync::atomic::AtomicBool>,
    stop_grace: Duration,
    on_stop: ebbtide_config::OnStop,
    /// Launch calls out with a provider (see `Control::launches_in_flight`).
    launches_in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl ServerHandle {
    /// Replaces pools, tenants, classes, policies and API keys without
    /// dropping jobs or workers. A configuration the engine refuses (an
    /// entry removed or reordered, a broken rule) leaves everything as it
    /// was. `[server]` settings (addresses, data directory) need a restart.
    pub async fn reload(&self, config: ClusterConfig) -> Result<(), ReloadRefused> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(LoopMsg::Reload {
                engine: Box::new(config.engine.clone()),
                reply,
            })
            .await
            .map_err(|_| ReloadRefused::LoopGone)?;
        answer.await.map_err(|_| ReloadRefused::LoopGone)??;
        self.auth.replace(&config.api_keys, &config.operator_keys);
        if let Ok(mut c) = self.classes.write() {
            *c = config.engine.classes.clone();
        }
        Ok(())
    }

    /// Completes if the control loop stops on its own (a panic, a lost
    /// store writer): the process must then exit, not serve on without a
    /// scheduler.
    pub async fn loop_stopped(&self) {
        self.tx.closed().await;
    }

    /// Stops as a decision (SIGTERM): refuses new submissions, starts no
    /// more jobs, gives running ones `server.stop_grace` to finish, then —
    /// per `server.on_stop` — leaves the workers for the next scheduler to
    /// adopt or terminates them, and shuts down with everything durable.
    pub async fn stop(self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self
            .tx
            .send(LoopMsg::Event(ebbtide_core::Event::StopDispatch))
            .await;
        let deadline = tokio::time::Instant::now() + self.stop_grace;
        let mut running = self.jobs_on_workers().await;
        tracing::info!(
            running,
            grace_s = self.stop_grace.as_secs(),
            "stopping: no new submissions or starts; running jobs get the grace to finish"
        );
        while running > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            running = self.jobs_on_workers().await;
        }
        match self.on_stop {
            ebbtide_config::OnStop::Leave => tracing::info!(
                running,
                "stopping: workers left running for the next scheduler to adopt (server.on_stop = \"leave\"); their jobs continue"
            ),
            ebbtide_config::OnStop::Terminate => {
                self.settle_launches().await;
                let (reply, done) = tokio::sync::oneshot::channel();
                if self.tx.send(LoopMsg::TerminateAll { reply }).await.is_ok() {
                    let terminated = done.await.unwrap_or(0);
                    tracing::warn!(
                        terminated,
                        running,
                        "stopping: every worker terminated (server.on_stop = \"terminate\"); jobs that were still running run again under the next scheduler"
                    );
                }
            }
        }
        self.shutdown().await;
    }

    /// Waits (at most `LAUNCH_SETTLE`) for launch calls still out with a
    /// provider, so the terminate pass sees the instances they create.
    /// The engine launches nothing once stopping, so none starts after.
    async fn settle_launches(&self) {
        let deadline = tokio::time::Instant::now() + LAUNCH_SETTLE;
        loop {
            let out = self
                .launches_in_flight
                .load(std::sync::atomic::Ordering::SeqCst);
            if out == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::error!(
                    launches = out,
                    waited_s = LAUNCH_SETTLE.as_secs(),
                    "stopping: launch calls still out with their providers; the instances they create are left for the next scheduler's orphan sweep"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Jobs assigned to or running on a worker now.
    async fn jobs_on_workers(&self) -> usize {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.tx.send(LoopMsg::Status { reply }).await.is_err() {
            return 0;
        }
        answer.await.map_or(0, |s| s.on_workers)
    }

    /// Stops accepting requests and waits for the listeners to close.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// How long a terminating stop waits for launch calls still out.
const LAUNCH_SETTLE: Duration = Duration::from_secs(30);

/// Now, as the engine's timestamp: the service is the one place that
/// reads the clock (see [`clock::Clock`]).
pub(crate) fn now() -> Timestamp {
    clock::process().now()
}

/// Starts the store, the control loop and both APIs over the providers
/// and report sink the caller built.
pub async fn start(
    config: ClusterConfig,
    infrastructure: Infrastructure,
) -> Result<ServerHandle, ServerError> {
    let Infrastructure {
        providers,
        report_sink,
    } = infrastructure;
    let data = config.server.data_dir.clone();
    private::lock_down(&data).map_err(|source| ServerError::DataDir {
        path: data.display().to_string(),
        source,
    })?;
    for pool in &config.engine.pools {
        if !providers.contains_key(&pool.provider) {
            return Err(ServerError::MissingProvider {
                pool: pool.name.clone(),
                provider: pool.provider.clone(),
            });
        }
    }
    // Before anything can count: the control loop's first tick launches
    // warm pools, and a metric recorded before the recorder exists is lost.
    let metrics = match telemetry::install() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "metrics recorder unavailable; /metrics will answer 503");
            None
        }
    };
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
    let control = control::Control::new(&config, store.clone(), providers.clone(), tx.clone())
        .await
        .map_err(ServerError::Config)?;
    let sessions =
        session::SessionKey::load_or_create(&data.join("session.key")).map_err(|source| {
            ServerError::DataDir {
                path: data.join("session.key").display().to_string(),
                source,
            }
        })?;
    let launches_in_flight = control.launches_in_flight();
    let mut tasks = vec![tokio::spawn(control.run(rx, shutdown_rx.clone()))];
    let publisher = costs::publisher(&config, store.clone(), None, report_sink);
    tracing::info!(to = %publisher.location(), spool = %config.cost_reports.spool_dir.display(), "daily cost reports");
    tasks.push(tokio::spawn(costs::publish_loop(
        publisher,
        store.clone(),
        config.cost_reports.publish_interval,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(worker_api::serve(
        grpc,
        tx.clone(),
        store.clone(),
        sessions,
        config.engine.heartbeat_timeout,
        providers,
        shutdown_rx.clone(),
    )));
    let auth = auth::ApiKeys::new(&config.api_keys, &config.operator_keys);
    let classes = Arc::new(std::sync::RwLock::new(config.engine.classes.clone()));
    if let Some(h) = metrics.clone() {
        let mut stop = shutdown_rx.clone();
        // Histograms are drained into their buckets by the upkeep.
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = every.tick() => h.run_upkeep(),
                }
            }
        }));
    }
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tasks.push(tokio::spawn(http_api::serve(
        http,
        http_api::AppState {
            tx: tx.clone(),
            store,
            auth: auth.clone(),
            classes: classes.clone(),
            stopping: stopping.clone(),
        },
        metrics,
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
        stopping,
        stop_grace: config.server.stop_grace,
        on_stop: config.server.on_stop,
        launches_in_flight,
    })
}

/// How long a session token lasts (agents re-register after it expires).
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
