//! The bare-metal provider: workers are agent processes on owned hosts,
//! started, listed and stopped over SSH.
//!
//! A host has a number of slots (workers it runs at once). A launch fills
//! free slots, least-loaded host first, one SSH connection per host per
//! launch; a host that cannot be reached is skipped and the batch goes to
//! the others (what does not fit is left unlaunched: the engine sees it as
//! failed and plans again). The provider's instance id is `HOST/wID`.
//! `list` asks every host; a host that does not answer contributes
//! nothing, so the reconciler declares its workers lost and their jobs
//! requeue, and when it answers again its leftover agents are unknown
//! instances the reconciler stops. If no host answers, `list` fails
//! rather than declare the whole fleet lost on a blip of the scheduler's
//! own network.
//!
//! Health is judged on every `list` (each reconcile pass) and every
//! launch: a host that does not answer, whose work root has less free disk
//! than `min_free_disk_mib`, or on which an agent did not start is
//! quarantined — it gets no new workers — and is re-admitted by the first
//! `list` it passes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use ebbtide_core::{InstanceId, Market, PricePerHour, WorkerId};
use ebbtide_provider::{
    HostReport, HostState, InstanceInfo, LaunchRequest, LaunchedInstance, Provider, ProviderError,
};
use tokio::sync::Mutex;

use crate::remote::{self, Start};
use crate::ssh::{SshSession, SshTarget};

/// One owned host.
#[derive(Debug, Clone)]
pub struct Host {
    /// How to reach it (its name is the inventory name).
    pub target: SshTarget,
    /// Where workers' directories go on it.
    pub work_root: String,
    /// Workers it runs at once.
    pub slots: u32,
    /// What it has, for matching pools' shapes.
    pub cpu_millis: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Labels (a pool's hosts are chosen by name in its launch settings).
    pub labels: Vec<String>,
    /// Its amortized price per hour: owned capacity is not free.
    pub price: PricePerHour,
}

/// Settings of the bare-metal provider.
#[derive(Debug, Clone)]
pub struct BaremetalConfig {
    /// Cluster id (in every worker's directory name).
    pub cluster: String,
    /// The inventory.
    pub hosts: Vec<Host>,
    /// The hosts each pool may use, by name.
    pub pools: HashMap<String, Vec<String>>,
    /// The agent binary on the hosts.
    pub agent_path: String,
    /// Connecting to a host, handshake and authentication included.
    pub connect_timeout: Duration,
    /// One command on a host.
    pub command_timeout: Duration,
    /// Free disk under a host's work root below which it is quarantined.
    pub min_free_disk_mib: u64,
}

/// Workers on owned hosts.
pub struct BaremetalProvider {
    config: BaremetalConfig,
    /// Which workers hold a slot on which host, as this process last knew
    /// (launches, stops and every `list` update it).
    occupied: Mutex<HashMap<String, BTreeSet<WorkerId>>>,
    /// Hosts taking no new workers, and why.
    quarantined: Mutex<HashMap<String, String>>,
}

/// `HOST/wID`.
pub fn instance_id(host: &str, worker: WorkerId) -> InstanceId {
    InstanceId(format!("{host}/w{}", worker.0))
}

/// The host and worker of an instance id.
pub fn split_instance_id(id: &InstanceId) -> Option<(&str, WorkerId)> {
    let (host, w) = id.0.rsplit_once("/w")?;
    Some((host, WorkerId(w.parse().ok()?)))
}

fn transient(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Transient(e.to_string())
}

impl BaremetalProvider {
    /// A provider over `config`'s inventory.
    pub fn new(config: BaremetalConfig) -> BaremetalProvider {
        BaremetalProvider {
            config,
            occupied: Mutex::new(HashMap::new()),
            quarantined: Mutex::new(HashMap::new()),
        }
    }

    /// The hosts in quarantine and why, for status and metrics.
    pub async fn quarantined(&self) -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = self
            .quarantined
            .lock()
            .await
            .iter()
            .map(|(h, why)| (h.clone(), why.clone()))
            .collect();
        q.sort();
        q
    }

    async fn quarantine(&self, host: &str, why: String) {
        let mut q = self.quarantined.lock().await;
        if q.get(host) != Some(&why) {
            tracing::warn!(host, reason = %why, "host quarantined: it gets no new workers until it passes a check");
        }
        q.insert(host.to_string(), why);
    }

    async fn readmit(&self, host: &str) {
        if let Some(why) = self.quarantined.lock().await.remove(host) {
            tracing::info!(host, was = %why, "host passed its check; re-admitted");
        }
    }

    fn host(&self, name: &str) -> Option<&Host> {
        self.config.hosts.iter().find(|h| h.target.name == name)
    }

    async fn session(&self, host: &Host) -> Result<SshSession, ProviderError> {
        SshSession::connect(&host.target, self.config.connect_timeout)
            .await
            .map_err(transient)
    }

    /// Where each of `workers` goes: free slots, least-loaded host first.
    async fn place(&self, hosts: &[&Host], workers: &[WorkerId]) -> Vec<(String, Vec<WorkerId>)> {
        let occupied = self.occupied.lock().await;
        let mut load: Vec<(String, u32, u32)> = hosts
            .iter()
            .map(|h| {
                let used = occupied
                    .get(&h.target.name)
                    .map_or(0, |s| u32::try_from(s.len()).unwrap_or(u32::MAX));
                (h.target.name.clone(), used, h.slots)
            })
            .collect();
        let mut plan: HashMap<String, Vec<WorkerId>> = HashMap::new();
        for w in workers {
            load.sort_by_key(|(name, used, slots)| (*used * 1000 / (*slots).max(1), name.clone()));
            let Some(slot) = load.iter_mut().find(|(_, used, slots)| used < slots) else {
                break;
            };
            slot.1 += 1;
            plan.entry(slot.0.clone()).or_default().push(*w);
        }
        let mut plan: Vec<(String, Vec<WorkerId>)> = plan.into_iter().collect();
        plan.sort();
        plan
    }

    async fn start_on(
        &self,
        host: &Host,
        request: &LaunchRequest,
        workers: &[WorkerId],
    ) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let session = self.session(host).await?;
        let mut launched = Vec::new();
        for w in workers {
            let Some(launch) = request.workers.iter().find(|l| l.worker == *w) else {
                continue;
            };
            let script = Start {
                work_root: &host.work_root,
                cluster: &self.config.cluster,
                pool: &request.pool,
                worker: *w,
                agent: &self.config.agent_path,
                scheduler: &request.scheduler_url,
            }
            .script();
            let out = session
                .exec(
                    &script,
                    Some(launch.bootstrap_token.expose().as_bytes()),
                    self.config.command_timeout,
                )
                .await
                .map_err(transient)?;
            if !out.success() {
                let why = format!(
                    "the agent did not start (exit {:?}): {}",
                    out.exit_status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                self.quarantine(&host.target.name, why).await;
                break;
            }
            self.occupied
                .lock()
                .await
                .entry(host.target.name.clone())
                .or_default()
                .insert(*w);
            launched.push(LaunchedInstance {
                worker: *w,
                instance: instance_id(&host.target.name, *w),
                zone: None,
            });
        }
        session.close().await;
        Ok(launched)
    }
}

#[async_trait::async_trait]
impl Provider for BaremetalProvider {
    fn name(&self) -> &str {
        "baremetal"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Vec<LaunchedInstance>, ProviderError> {
        let names = self.config.pools.get(&request.pool).ok_or_else(|| {
            ProviderError::Permanent(format!(
                "pool {:?} has no [providers.baremetal.pools.{}] launch settings",
                request.pool, request.pool
            ))
        })?;
        let all: Vec<&Host> = names.iter().filter_map(|n| self.host(n)).collect();
        let quarantined = self.quarantined.lock().await.clone();
        let hosts: Vec<&Host> = all
            .iter()
            .copied()
            .filter(|h| !quarantined.contains_key(&h.target.name))
            .collect();
        let workers: Vec<WorkerId> = request.workers.iter().map(|w| w.worker).collect();
        let mut launched = Vec::new();
        let mut last_error = None;
        let mut skip: Vec<String> = Vec::new();
        // A host that fails is left out and its share placed again on the others.
        for _ in 0..=hosts.len() {
            let remaining: Vec<WorkerId> = workers
                .iter()
                .copied()
                .filter(|w| !launched.iter().any(|l: &LaunchedInstance| l.worker == *w))
                .collect();
            // A host quarantined during this launch (an agent that did not
            // start) gets none of the rest.
            let resting = self.quarantined.lock().await.clone();
            let usable: Vec<&Host> = hosts
                .iter()
                .copied()
                .filter(|h| !skip.contains(&h.target.name) && !resting.contains_key(&h.target.name))
                .collect();
            if remaining.is_empty() || usable.is_empty() {
                break;
            }
            let plan = self.place(&usable, &remaining).await;
            if plan.is_empty() {
                break;
            }
            for (name, ws) in plan {
                let Some(host) = self.host(&name) else {
                    continue;
                };
                match self.start_on(host, &request, &ws).await {
                    Ok(more) => launched.extend(more),
                    Err(e) => {
                        tracing::warn!(host = %name, error = %e, "cannot start workers on this host; trying the others");
                        skip.push(name);
                        last_error = Some(e);
                    }
                }
            }
        }
        if launched.is_empty() {
            return Err(last_error.unwrap_or_else(|| {
                let slots: u32 = hosts.iter().map(|h| h.slots).sum();
                let resting = all.len() - hosts.len();
                ProviderError::Capacity(format!(
                    "every slot of pool {}'s {} healthy host(s) is taken ({slots} slots){}",
                    request.pool,
                    hosts.len(),
                    if resting > 0 {
                        format!("; {resting} host(s) quarantined")
                    } else {
                        String::new()
                    }
                ))
            }));
        }
        Ok(launched)
    }

    async fn terminate(&self, instances: &[InstanceId]) -> Result<(), ProviderError> {
        let mut by_host: HashMap<&str, Vec<WorkerId>> = HashMap::new();
        for id in instances {
            if let Some((host, w)) = split_instance_id(id)
                && self.host(host).is_some()
            {
                by_host.entry(host).or_default().push(w);
            }
        }
        for (name, workers) in by_host {
            let Some(host) = self.host(name) else {
                continue;
            };
            let session = self.session(host).await?;
            for w in &workers {
                let out = session
                    .exec(
                        &remote::stop_script(&host.work_root, &self.config.cluster, *w),
                        None,
                        self.config.command_timeout,
                    )
                    .await
                    .map_err(transient)?;
                if !out.success() {
                    return Err(transient(format!(
                        "host {name}: stopping worker {} failed: {}",
                        w.0,
                        String::from_utf8_lossy(&out.stderr)
                    )));
                }
                if let Some(set) = self.occupied.lock().await.get_mut(name) {
                    set.remove(w);
                }
            }
            session.close().await;
        }
        Ok(())
    }

    async fn hosts(&self) -> Vec<HostReport> {
        let quarantined = self.quarantined.lock().await.clone();
        let occupied = self.occupied.lock().await;
        self.config
            .hosts
            .iter()
            .map(|h| {
                let name = &h.target.name;
                let reason = quarantined.get(name).cloned();
                HostReport {
                    name: name.clone(),
                    state: if reason.is_some() {
                        HostState::Quarantined
                    } else {
                        HostState::Ready
                    },
                    reason,
                    workers: occupied
                        .get(name)
                        .map_or(0, |s| u32::try_from(s.len()).unwrap_or(u32::MAX)),
                    slots: h.slots,
                    last_boot: None,
                }
            })
            .collect()
    }

    async fn list(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        let mut out = Vec::new();
        let mut answered = 0;
        let mut last_error = None;
        for host in &self.config.hosts {
            let listed = async {
                let session = self.session(host).await?;
                let o = session
                    .exec(
                        &remote::list_script(&host.work_root, &self.config.cluster),
                        None,
                        self.config.command_timeout,
                    )
                    .await
                    .map_err(transient)?;
                session.close().await;
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                Ok::<_, ProviderError>((remote::parse_list(&text), remote::parse_free_kib(&text)))
            }
            .await;
            match listed {
                Ok((workers, free_kib)) => {
                    answered += 1;
                    let free_mib = free_kib.map(|k| k / 1024);
                    match free_mib {
                        Some(free) if free >= self.config.min_free_disk_mib => {
                            self.readmit(&host.target.name).await
                        }
                        Some(free) => {
                            self.quarantine(
                                &host.target.name,
                                format!(
                                    "disk: {free} MiB free under {}, below {} MiB",
                                    host.work_root, self.config.min_free_disk_mib
                                ),
                            )
                            .await
                        }
                        None => {
                            self.quarantine(
                                &host.target.name,
                                format!(
                                    "disk: cannot read the free space under {}",
                                    host.work_root
                                ),
                            )
                            .await
                        }
                    }
                    self.occupied.lock().await.insert(
                        host.target.name.clone(),
                        workers.iter().map(|l| l.worker).collect(),
                    );
                    out.extend(workers.into_iter().map(|l| InstanceInfo {
                        instance: instance_id(&host.target.name, l.worker),
                        worker: l.worker,
                        pool: l.pool,
                        market: Market::OnDemand,
                        zone: None,
                        running: l.running,
                    }));
                }
                Err(e) => {
                    tracing::warn!(host = %host.target.name, error = %e, "host did not answer; its workers are not listed");
                    self.quarantine(&host.target.name, format!("unreachable: {e}"))
                        .await;
                    last_error = Some(e);
                }
            }
        }
        match last_error {
            Some(e) if answered == 0 && !self.config.hosts.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}
